"""Model / window / dataset comparisons: hand-made embeddings with known answers, then the tiny CLAP."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from clap_helpers import plots
from clap_helpers.data.loaders import DatasetNotFoundError, load
from clap_helpers.embedding.encoder import EmbeddingWarning
from clap_helpers.embedding.loading import load_clap
from clap_helpers.evaluation import compare
from clap_helpers.evaluation import zeroshot as zs


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def toy():
    """4 orthonormal class vectors in 8-D, 6 noisy clips per class, 3 splits."""
    rng = np.random.default_rng(1)
    text = np.linalg.qr(rng.normal(size=(8, 4)))[0].T.astype(np.float32)
    labels = np.repeat(np.arange(4), 6)
    audio = _unit(text[labels] + 0.2 * rng.normal(size=(len(labels), 8)))
    splits = np.array(["training", "validation", "test"] * 8)
    return audio, labels, text, splits


def _run(name: str, audio: np.ndarray, text: np.ndarray) -> compare.ModelRun:
    spread = {"template": compare.text_spread(text, warn=False)}
    return compare.ModelRun(name, "m", "average", audio, {"template": text}, spread)


# --------------------------------------------------------------------------------- text spread
def test_text_spread_of_orthogonal_prompts_is_not_collinear(toy):
    _, _, text, _ = toy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare.text_spread(text, ["a", "b", "c", "d"])
    assert abs(out["max_cosine"]) < 1e-5 and abs(out["mean_cosine"]) < 1e-5
    assert out["collinear"] is False


def test_text_spread_warns_and_names_the_closest_pair():
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    text = np.stack([base + 0.001 * rng.normal(size=16) for _ in range(3)])
    text[2] = rng.normal(size=16)  # one prompt well apart
    text[1] = base + 0.0001 * rng.normal(size=16)
    with pytest.warns(compare.CollinearTextWarning, match="music model.*'rock'.*'pop'"):
        out = compare.text_spread(text, ["rock", "pop", "folk"], label="music model")
    assert out["collinear"] is True and out["max_cosine"] > 0.99
    assert out["closest_pair"] == ("rock", "pop")
    sims = _unit(text) @ _unit(text).T
    assert out["min_cosine"] == pytest.approx(sims[np.triu_indices(3, 1)].min(), abs=1e-6)
    # a cosine never exceeds 1, so that threshold is never crossed
    assert compare.text_spread(text, threshold=1.0, warn=False)["collinear"] is False


def test_text_spread_single_class_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare.text_spread(np.ones((1, 4)))
    assert np.isnan(out["max_cosine"]) and out["collinear"] is False
    with pytest.raises(ValueError, match="names"):
        compare.text_spread(np.eye(3), ["a", "b"])


# --------------------------------------------------------------------------- model comparison
def test_evaluate_runs_table_and_per_split_match_zeroshot(toy):
    audio, labels, text, splits = toy
    noisy = audio.copy()
    noisy[:6] = _unit(np.roll(noisy[:6], 1, axis=1))  # class 0 clips scrambled in run b
    noisy[3] = np.nan  # one failed clip
    runs = {"a": _run("a", audio, text), "b": _run("b", noisy, text)}
    evals = compare.evaluate_runs(runs, labels, ks=(1, 3))
    assert set(evals) == {"a", "b"} and set(evals["a"]) == {"template"}
    expected = zs.evaluate(noisy, labels, text, ks=(1, 3))
    assert evals["b"]["template"]["top1"] == expected["top1"]

    table = compare.runs_table(runs, evals)
    assert list(table.index) == ["a / template", "b / template"]
    assert table.loc["a / template", "top1"] == 1.0
    assert table.loc["b / template", "top1"] == pytest.approx(expected["top1"])
    assert table.loc["b / template", "n_failed"] == 1 and table.loc["b / template", "n"] == 23
    assert runs["b"].n_failed == 1 and runs["a"].n_failed == 0
    assert {"top1", "top3", "text_max_cosine", "window", "model"} <= set(table.columns)

    split = compare.per_split(runs, labels, splits, "template", k=1)
    assert list(split.index) == ["test", "training", "validation", "all"]
    assert list(split["clips"]) == [8, 8, 8, 24]
    assert (split["a"] == 1.0).all()
    scores = zs.scores(noisy, text)
    m = splits == "training"
    assert split.loc["training", "b"] == pytest.approx(zs.topk_accuracy(scores[m], labels[m], 1))
    assert split.loc["all", "b"] == pytest.approx(expected["top1"])
    with pytest.raises(ValueError, match="splits"):
        compare.per_split(runs, labels, splits[:3], "template")


def test_agreement_counts_add_up(toy):
    audio, labels, text, _ = toy
    worse = audio.copy()
    worse[:6] = _unit(text[[1, 1, 1, 2, 2, 2]])  # class 0 clips now predicted as 1 or 2
    worse[7] = np.nan
    a = zs.evaluate(audio, labels, text)
    b = zs.evaluate(worse, labels, text)
    out = compare.agreement(a, b)
    assert out["n"] == 23
    assert out["only_a"] == 6 and out["only_b"] == 0 and out["neither"] == 0
    assert out["both_correct"] == 17
    assert out["same_prediction"] == pytest.approx(17 / 23)
    assert compare.agreement(a, a)["same_prediction"] == 1.0

    evals = {"x": {"t": a}, "y": {"t": b}}
    table = compare.agreement_table(evals, [("x", "y"), ("y", "y")], "t")
    assert list(table.index) == ["x vs y", "y vs y"]
    assert table.loc["x vs y", "only_a"] == 6 and table["n"].dtype.kind == "i"
    assert table.loc["y vs y", "same_prediction"] == 1.0


def test_confusion_grid_has_one_panel_per_result(toy):
    audio, labels, text, _ = toy
    res = zs.evaluate(audio, labels, text)
    fig = plots.confusion_grid({"first": res, "second": res}, ["w", "x", "y", "z"], title="t")
    try:
        panels = [ax for ax in fig.axes if ax.get_xlabel() == "predicted class"]
        assert len(panels) == 2
        assert panels[0].get_title().startswith("first") and "100.0%" in panels[0].get_title()
        assert fig.get_suptitle() == "t"
    finally:
        plt.close(fig)
    with pytest.raises(ValueError):
        plots.confusion_grid({}, ["a"])


# ---------------------------------------------------------------------------- modality gap
def test_modality_gap_known_geometry():
    audio = np.tile([1.0, 0.0, 0.0], (5, 1))
    audio[2] = np.nan
    text = np.tile([0.0, 1.0, 0.0], (3, 1))
    gap = compare.modality_gap(audio, text)
    assert gap["audio_audio"] == pytest.approx(1.0)
    assert gap["text_text"] == pytest.approx(1.0)
    assert gap["audio_text"] == pytest.approx(0.0)
    assert gap["centroid_distance"] == pytest.approx(np.sqrt(2))


def test_modality_gap_mean_cosines_match_brute_force():
    rng = np.random.default_rng(3)
    a, t = _unit(rng.normal(size=(7, 5))), _unit(rng.normal(size=(4, 5)))
    gap = compare.modality_gap(a, t)
    sa = (a @ a.T)[~np.eye(7, dtype=bool)].mean()
    st = (t @ t.T)[~np.eye(4, dtype=bool)].mean()
    assert gap["audio_audio"] == pytest.approx(sa, abs=1e-6)
    assert gap["text_text"] == pytest.approx(st, abs=1e-6)
    assert gap["audio_text"] == pytest.approx((a @ t.T).mean(), abs=1e-6)


def test_embedding_summary_columns(toy):
    audio, labels, text, _ = toy
    audio = audio.copy()
    audio[0] = np.nan
    clips = pd.DataFrame({"target": labels})
    d = compare.DatasetEmbeddings("toy", clips, list("abcd"), audio, {"label": text})
    assert d.n == 23 and (d.labels == labels).all()
    table = compare.embedding_summary({"toy": d})
    row = table.loc["toy"]
    assert (row["clips"], row["points"], row["failed"], row["classes"]) == (24, 23, 1, 4)
    assert row["gap_label"] == pytest.approx(compare.modality_gap(audio, text)["centroid_distance"])


# --------------------------------------------------------------------------- with the tiny CLAP
def test_embed_runs_on_the_tiny_model(tiny_clap, data_root, tmp_path):
    clips, classes = load("esc50", data_root, n_samples=5)
    paths = [*clips["path"], str(tmp_path / "missing.wav")]
    prompts = {
        "template": [f"This is a sound of {c}." for c in classes],
        "ensemble": [[f"This is a sound of {c}.", f"A {c}."] for c in classes],
    }
    specs = {"avg": (tiny_clap, "average"), "first": (tiny_clap, "first")}
    with pytest.warns(EmbeddingWarning):
        runs = compare.embed_runs(
            specs,
            paths,
            prompts,
            batch_size=4,
            device="cpu",
            precision="fp32",
            cache_dir=tmp_path / "cache",
            load_kwargs={"num_workers": 0},
        )
    assert list(runs) == ["avg", "first"]
    avg, first = runs["avg"], runs["first"]
    assert avg.audio_emb.shape == (6, 64) and avg.text_embs["ensemble"].shape == (5, 64)
    assert avg.n_failed == 1 and np.isnan(avg.audio_emb[5]).all()
    assert [p for p, _ in avg.failures] == [paths[5]]
    assert (first.window, avg.window) == ("first", "average")
    # 5 s clips fit in one window: both modes embed them identically
    np.testing.assert_allclose(first.audio_emb[:5], avg.audio_emb[:5], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(avg.text_embs["ensemble"], axis=1), 1.0, atol=1e-5)
    assert avg.spread["template"]["collinear"] is False
    assert avg.spread["template"]["max_cosine"] < compare.COLLINEAR_COSINE
    spread = compare.spread_table(runs)
    assert list(spread.index) == [
        "avg / template",
        "avg / ensemble",
        "first / template",
        "first / ensemble",
    ]
    assert spread.loc["avg / template", "max_cosine"] == avg.spread["template"]["max_cosine"]
    assert set(spread["model"]) == {Path(avg.model).name}  # the short name, no machine path
    assert not spread["collinear"].any()


def test_window_breakdown_matches_the_engine(tiny_clap, data_root, tmp_path):
    clips, classes = load("fma_small", data_root)
    path = clips["path"].iloc[0]  # an 11 s track: a 10 s window and a 1 s tail
    enc = load_clap(tiny_clap, device="cpu", precision="fp32", num_workers=0)
    text = enc.embed_text([f"This is a {c} song." for c in classes], cache_dir=False)
    table = compare.window_breakdown(enc, path, text, classes)
    assert list(table.index) == ["0-10 s", "10-11 s", "average"]
    assert table.loc["10-11 s", "end_s"] == pytest.approx(11.0, abs=0.01)
    averaged = enc.embed_audio([path], cache_dir=False, progress=False)
    np.testing.assert_allclose(
        table.loc["average", classes].to_numpy(float), (averaged @ text.T)[0], atol=1e-5
    )
    enc_first = load_clap(tiny_clap, device="cpu", precision="fp32", window="first", num_workers=0)
    firsts = enc_first.embed_audio([path], cache_dir=False, progress=False)
    np.testing.assert_allclose(
        table.iloc[0][classes].to_numpy(float), (firsts @ text.T)[0], atol=1e-5
    )
    scores = table[classes].to_numpy(float)
    assert list(table["predicted"]) == [classes[i] for i in scores.argmax(axis=1)]
    assert table.loc["average", "cos_to_average"] == pytest.approx(1.0, abs=1e-6)

    fig = plots.window_accuracy(path, table, title="track")
    try:
        dashed = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--"]
        assert sorted(ln.get_xdata()[0] for ln in dashed) == [0.0, 10.0]
        assert [t.get_text() for t in fig.axes[0].texts] == list(table["predicted"][:2])
    finally:
        plt.close(fig)


def test_collect_embeddings_skips_missing_datasets(tiny_clap, data_root, tmp_path):
    root = tmp_path / "partial"
    root.mkdir()
    (root / "ESC-50-master").symlink_to(data_root / "ESC-50-master")
    enc = load_clap(
        tiny_clap, device="cpu", precision="fp32", cache_dir=tmp_path / "c", num_workers=0
    )
    notes: list[str] = []
    data = compare.collect_embeddings(
        ["fma_small", "esc50"], root, enc, n_samples=6, batch_size=4, log=notes.append
    )
    assert list(data) == ["esc50"]
    assert any("skipping fma_small" in n and "bash dataset.sh fma_small" in n for n in notes)
    d = data["esc50"]
    assert len(d.clips) == 6 and d.n == 6 and d.audio_emb.shape == (6, enc.dim)
    assert set(d.text_embs) == {"label", "sentence"}
    assert d.text_embs["label"].shape == d.text_embs["sentence"].shape == (len(d.classes), 64)
    # label and sentence prompts are different texts, hence different embeddings
    assert not np.allclose(d.text_embs["label"], d.text_embs["sentence"])

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="dataset.sh esc50.*dataset.sh audioset"):
        compare.collect_embeddings(["esc50", "audioset"], empty, enc, log=notes.append)
    with pytest.raises(ValueError, match="unknown dataset"):
        compare.collect_embeddings(["nope"], root, enc, log=notes.append)
