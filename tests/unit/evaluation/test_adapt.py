"""Tests for clap_helpers.evaluation.adapt on small hand-made embeddings whose right answers are known."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clap_helpers.data import registry
from clap_helpers.evaluation import adapt, results, scoring


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _shifted_domain(n_folds: int = 5, per_class: int = 8, seed: int = 0):
    """Two classes whose audio lives in a shifted domain: zero-shot gets class 0 wrong.

    Text: t0 = e0, t1 = e1. Class-0 audio ~ (0.4, 0.5, 1, 0): closer to t1 than to t0.
    Class-1 audio ~ (0.2, 0.6, 0, 1). Within each text column the right class still ranks first.
    """
    rng = np.random.default_rng(seed)
    centres = np.array([[0.4, 0.5, 1.0, 0.0], [0.2, 0.6, 0.0, 1.0]], dtype=np.float32)
    labels = np.tile(np.repeat([0, 1], per_class), n_folds)
    folds = np.repeat(np.arange(1, n_folds + 1), 2 * per_class)
    audio = _unit(centres[labels] + rng.normal(0, 0.03, (labels.size, 4)))
    text = np.eye(2, 4, dtype=np.float32)
    return audio, labels, folds, text


# ----------------------------------------------------------------------------- building blocks


def test_zs_prototypes_are_text_and_scores_are_dot_products():
    audio, _, _, text = _shifted_domain()
    P = adapt.prototypes("zs", None, None, text)
    np.testing.assert_array_equal(P, text)
    s = scoring.scores(audio, P, cosine=False)
    assert s.shape == (audio.shape[0], 2) and s.dtype == np.float32
    np.testing.assert_allclose(s, audio @ text.T, rtol=1e-6)


def test_tgap_and_sv_fix_a_shifted_domain_that_zero_shot_gets_wrong():
    audio, labels, folds, text = _shifted_domain()
    zs = adapt.crossval(audio, labels, folds, text, "zs")
    # zero-shot calls every class-0 clip class 1
    assert zs["mean"] == pytest.approx(0.5)
    assert (zs["predictions"][labels == 0] == 1).all()
    tgap = adapt.crossval(audio, labels, folds, text, "tgap", top_n=20)
    sv = adapt.crossval(audio, labels, folds, text, "sv")
    assert tgap["mean"] == 1.0 and sv["mean"] == 1.0
    assert set(tgap["per_fold"]) == {1, 2, 3, 4, 5}
    assert tgap["std"] == 0.0 and tgap["n_failed"] == 0 and tgap["mode"] == "tgap"


def test_tgap_uses_no_training_labels_but_sv_does():
    audio, labels, folds, text = _shifted_domain()
    shuffled = np.random.default_rng(1).permutation(labels)
    p1 = adapt.prototypes("tgap", audio, labels, text, top_n=20)
    p2 = adapt.prototypes("tgap", audio, shuffled, text, top_n=20)
    p3 = adapt.prototypes("tgap", audio, None, text, top_n=20)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, p3)
    assert not np.allclose(
        adapt.prototypes("sv", audio, labels, text), adapt.prototypes("sv", audio, shuffled, text)
    )
    # the same at the crossval level: tgap predictions ignore labels, sv predictions do not
    r1 = adapt.crossval(audio, labels, folds, text, "tgap")
    r2 = adapt.crossval(audio, shuffled, folds, text, "tgap")
    np.testing.assert_array_equal(r1["predictions"], r2["predictions"])
    s1 = adapt.crossval(audio, labels, folds, text, "sv")
    s2 = adapt.crossval(audio, shuffled, folds, text, "sv")
    assert not np.array_equal(s1["predictions"], s2["predictions"])


def test_tgap_top_n_is_clipped_to_the_training_set():
    rng = np.random.default_rng(0)
    train = _unit(rng.normal(size=(3, 6)))
    text = _unit(rng.normal(size=(4, 6)))
    P = adapt.prototypes("tgap", train, None, text, top_n=35)
    assert P.shape == (4, 6)
    np.testing.assert_allclose(P, np.tile(train.mean(axis=0), (4, 1)), rtol=1e-6)
    # prototypes are means of the top clips, not re-normalised
    assert (np.linalg.norm(P, axis=1) < 1).all()


def test_tgap_picks_the_top_n_clips_of_each_text_column():
    text = np.eye(2, 3, dtype=np.float32)
    train = _unit([[1, 0, 0.1], [0.9, 0.1, 0.5], [0, 1, 0.1], [0.1, 0.9, 0.5], [0.5, 0.5, 1]])
    P = adapt.prototypes("tgap", train, None, text, top_n=2)
    np.testing.assert_allclose(P[0], train[[0, 1]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(P[1], train[[2, 3]].mean(axis=0), rtol=1e-6)


def test_sv_falls_back_to_text_for_a_class_absent_from_training():
    text = np.eye(3, 4, dtype=np.float32)
    train = _unit([[1, 0, 0, 1], [1, 0, 0, 0.5], [0, 1, 0, 1]])
    y = np.array([0, 0, 1])
    with pytest.warns(UserWarning, match=r"classes \[2\]"):
        P = adapt.prototypes("sv", train, y, text)
    np.testing.assert_allclose(P[0], train[:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(P[1], train[2], rtol=1e-6)
    np.testing.assert_array_equal(P[2], text[2])


def test_linear_probe_separates_separable_classes_on_held_out_folds():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 3
    labels = np.tile(np.arange(3), 40)
    folds = np.repeat(np.arange(1, 5), 30)
    audio = _unit(centres[labels] + rng.normal(0, 0.3, (labels.size, 8)))
    res = adapt.crossval(audio, labels, folds, None, "linear", C=1.0, max_iter=500)
    assert res["per_fold"] == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert res["scores"].shape == (120, 3)
    np.testing.assert_allclose(res["scores"].sum(axis=1), 1.0, rtol=1e-5)
    again = adapt.crossval(audio, labels, folds, None, "linear", C=1.0, max_iter=500)
    np.testing.assert_array_equal(res["scores"], again["scores"])


# ----------------------------------------------------------------------------- fold protocol


@pytest.mark.parametrize("mode", ["tgap", "sv"])
def test_each_fold_is_trained_on_the_other_folds_only(monkeypatch, mode):
    audio, labels, folds, text = _shifted_domain(n_folds=3, per_class=4)
    seen = []
    real = adapt.prototypes

    def spy(mode, train_emb, train_labels, text_emb, top_n=35):
        seen.append(train_emb.copy())
        return real(mode, train_emb, train_labels, text_emb, top_n=top_n)

    monkeypatch.setattr(adapt, "prototypes", spy)
    adapt.crossval(audio, labels, folds, text, mode)
    assert len(seen) == 3
    for fold, train in zip([1, 2, 3], seen, strict=True):
        np.testing.assert_array_equal(train, audio[folds != fold])


def test_a_class_seen_only_in_the_test_fold_is_not_learned_from_it():
    # Class 2 exists only in fold "c": when "c" is tested, sv must fall back to t_2 (which
    # points away from the clips), so those clips are misclassified; with leakage they'd be right.
    text = np.eye(3, 4, dtype=np.float32)
    base = _unit([[1, 0, 0, 0.2], [0, 1, 0, 0.2]])
    odd = _unit([0, 0, 0.1, 1])  # class-2 audio: far from t_2 = e2, closest to nothing in text
    audio = np.vstack([base, base, base, np.tile(odd, (2, 1))]).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    folds = np.array(["a", "a", "b", "b", "c", "c", "c", "c"])
    with pytest.warns(UserWarning, match="no training clip"):
        res = adapt.crossval(audio, labels, folds, text, "sv")
    assert list(res["per_fold"]) == ["a", "b", "c"]
    assert res["per_fold"]["a"] == 1.0 and res["per_fold"]["b"] == 1.0
    assert res["per_fold"]["c"] == pytest.approx(0.5)
    assert (res["predictions"][6:] != 2).all()


def test_nan_rows_are_excluded_and_counted():
    audio, labels, folds, text = _shifted_domain()
    clean = adapt.crossval(audio, labels, folds, text, "sv")
    bad = audio.copy()
    bad[[0, 17, 40]] = np.nan
    res = adapt.crossval(bad, labels, folds, text, "sv")
    assert res["n_failed"] == 3
    assert res["n_test"] == {1: 15, 2: 15, 3: 15, 4: 16, 5: 16}
    assert (res["predictions"][[0, 17, 40]] == -1).all()
    assert np.isnan(res["scores"][[0, 17, 40]]).all()
    assert np.isfinite(np.delete(res["scores"], [0, 17, 40], axis=0)).all()
    assert res["mean"] == clean["mean"] == 1.0
    # identical to dropping those rows up front
    keep = np.ones(labels.size, bool)
    keep[[0, 17, 40]] = False
    dropped = adapt.crossval(audio[keep], labels[keep], folds[keep], text, "tgap")
    with_nan = adapt.crossval(bad, labels, folds, text, "tgap")
    np.testing.assert_array_equal(dropped["predictions"], with_nan["predictions"][keep])
    assert dropped["per_fold"] == with_nan["per_fold"]


def test_crossval_rejects_bad_input():
    audio, labels, folds, text = _shifted_domain()
    with pytest.raises(ValueError, match="mode"):
        adapt.crossval(audio, labels, folds, text, "knn")
    with pytest.raises(ValueError, match="labels"):
        adapt.crossval(audio, labels + 5, folds, text, "zs")
    with pytest.raises(ValueError, match="linear"):
        adapt.crossval(audio, labels, folds, text, "linear", adapt=("text", text))


# ----------------------------------------------------------------------------- domain adaptation


def _background_bias():
    """p0 = e0; p1 leans on the background direction e2; class-0 clips are heard over e2."""
    P = _unit([[1, 0, 0, 0], [0, 0.2, 0.98, 0]])
    clips = _unit([[1, 0, 1.5, 0], [0, 1, 1.5, 0]])  # class 0 and class 1, both over e2
    background = _unit([[0.05, 0, 1, 0.1], [0, 0.05, 1, -0.1], [0.02, 0.02, 1, 0]])
    return P, clips, background


def test_text_background_prompts():
    assert adapt.text_background_prompts("street traffic") == [
        "This is a sound of street traffic",
        "Street traffic sounds in the background",
        "This is a sound of street traffic in the background",
    ]
    assert adapt.text_background_prompts("park")[1] == "Park sounds in the background"


@pytest.mark.parametrize("fn", [adapt.text_domain_adapt, adapt.audio_domain_adapt])
def test_domain_adaptation_removes_a_background_bias(fn):
    P, clips, background = _background_bias()
    s = scoring.scores(clips, P, cosine=False)
    assert scoring.predict_scores(s).tolist() == [1, 1]  # the background drags class 0 into class 1
    adapted = fn(s, P, background, tau=0.5)
    assert scoring.predict_scores(adapted).tolist() == [0, 1]
    beta = adapt.background_offsets(P, background)
    np.testing.assert_allclose(adapted, s - 0.5 * beta, rtol=1e-6)
    # the offset is per class: identical for every clip
    np.testing.assert_allclose(s - adapted, np.tile(0.5 * beta, (2, 1)), rtol=1e-6)
    np.testing.assert_array_equal(fn(s, P, background, tau=0.0), s)


def test_audio_adaptation_ignores_failed_background_rows():
    P, clips, background = _background_bias()
    s = scoring.scores(clips, P, cosine=False)
    with_nan = np.vstack([background, np.full((1, 4), np.nan, np.float32)])
    np.testing.assert_allclose(
        adapt.audio_domain_adapt(s, P, with_nan), adapt.audio_domain_adapt(s, P, background)
    )


def test_crossval_applies_adaptation_per_fold():
    P, clips, background = _background_bias()
    labels = np.array([0, 1, 0, 1])
    folds = np.array([1, 1, 2, 2])
    audio = np.vstack([clips, clips])
    plain = adapt.crossval(audio, labels, folds, P, "zs")
    adapted = adapt.crossval(audio, labels, folds, P, "zs", adapt=("text", background))
    audio_ad = adapt.crossval(audio, labels, folds, P, "zs", adapt=("audio", background), tau=0.5)
    assert plain["mean"] == 0.5 and adapted["mean"] == 1.0 and audio_ad["mean"] == 1.0
    assert adapted["adapt"] == "text" and adapted["tau"] == 0.5
    same = adapt.crossval(audio, labels, folds, P, "zs", adapt=("text", background), tau=0.0)
    np.testing.assert_array_equal(same["scores"], plain["scores"])


# ----------------------------------------------------------------------------- tables


def test_published_table():
    t = results.published_table()
    assert list(t.columns) == [
        "model",
        "esc50_zs",
        "us8k_zs",
        "esc50_linear",
        "us8k_linear",
        "note",
    ]
    assert len(t) == 8  # 7 models + laion/larger_clap_general (MTEB/MAEB)
    laion = t.iloc[0]
    assert (laion.esc50_zs, laion.us8k_zs, laion.esc50_linear, laion.us8k_linear) == (
        91.0,
        77.0,
        97.3,
        86.9,
    )
    assert np.isnan(t.set_index("model").loc["Wav2CLIP", "esc50_linear"])


def test_compare_table_puts_ours_next_to_published():
    ours = {
        "zs": {"mean": 0.9012, "std": 0.0123},
        "tgap": {"mean": 0.95, "std": 0.01},
        "linear": 0.97,
    }
    t = results.compare_table(ours, "ESC-50", model="clap-htsat-unfused")
    assert list(t.columns) == ["source", "model", "method", "accuracy", "std", "uses", "text"]
    pub = t[t.source == "published"]
    # every published ESC-50 number of the registry, each once (8 zero-shot, 4 linear probes and
    # 2 training-free when this was written)
    listed = registry.RECORDS["esc50"].published
    assert len(pub) == len(listed) and len(listed) >= 14
    assert sorted(pub.accuracy) == sorted(p.top1 for p in listed)
    assert 96.35 in pub.accuracy.tolist()
    mine = t[t.source == "ours"].reset_index(drop=True)
    assert mine.method.tolist() == ["zero-shot", "tgap", "linear probe"]
    assert mine.uses.tolist() == ["nothing", "unlabelled audio", "labels"]
    assert set(pub.uses) == {
        "nothing",
        "labels",
        "labels (other folds pick description vs label per class)",
        "unlabelled audio (transductive)",
    }
    assert mine.accuracy[0] == pytest.approx(90.12) and mine["std"][0] == pytest.approx(1.23)
    assert mine.text[0] == "90.1 ± 1.2" and mine.text[2] == "97.0"
    us = results.compare_table(ours, "urbansound8k")
    assert 77.0 in us.accuracy.tolist() and 91.0 not in us.accuracy.tolist()
    assert 96.35 not in us.accuracy.tolist()  # the training-free numbers are ESC-50 only
    lf = results.compare_table(
        {"label_free (transductive)": 0.9, "label_free (inductive)": 0.8}, "esc50"
    )
    assert lf[lf.source == "ours"].uses.tolist() == [
        "unlabelled audio (transductive)",
        "unlabelled audio",
    ]
    with pytest.raises(ValueError):
        results.compare_table(ours, "gtzan")


def test_compare_table_accepts_crossval_results():
    audio, labels, folds, text = _shifted_domain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = {m: adapt.crossval(audio, labels, folds, text, m) for m in ("zs", "sv")}
    t = results.compare_table(res, "esc50")
    assert isinstance(t, pd.DataFrame)
    assert t[t.source == "ours"].accuracy.tolist() == [50.0, 100.0]
