"""Zero-shot metrics on hand-made embeddings whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from clap_helpers.evaluation import results
from clap_helpers.evaluation import zeroshot as zs


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def toy():
    """8 orthonormal class vectors in 16-D; audio = noisy copies of its class vector."""
    rng = np.random.default_rng(0)
    n_classes, dim, per_class = 8, 16, 12
    text = np.linalg.qr(rng.normal(size=(dim, n_classes)))[0].T.astype(np.float32)
    labels = np.repeat(np.arange(n_classes), per_class)
    audio = _unit(text[labels] + 0.15 * rng.normal(size=(len(labels), dim)))
    return audio, labels, text


def test_scores_are_cosine_and_softmax(toy):
    audio, _, text = toy
    s = zs.scores(audio, text)
    assert s.shape == (len(audio), len(text))
    np.testing.assert_allclose(s, audio @ text.T, atol=1e-5)
    p = zs.scores(audio, text, logit_scale=100.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(axis=1), s.argmax(axis=1))


def test_clean_embeddings_score_perfectly(toy):
    audio, labels, text = toy
    r = zs.evaluate(audio, labels, text)
    assert r["top1"] == r["top3"] == r["top5"] == 1.0
    assert r["n"] == len(labels) and r["n_failed"] == 0
    np.testing.assert_array_equal(r["predictions"], labels)
    np.testing.assert_array_equal(r["confusion"], np.diag(np.bincount(labels)))
    np.testing.assert_array_equal(r["per_class"], 1.0)
    np.testing.assert_array_equal(zs.predict(audio, text), labels)


def test_permuted_labels_score_badly(toy):
    audio, labels, text = toy
    shuffled = np.roll(labels, len(labels) // 2 + 5)  # mostly another class
    r = zs.evaluate(audio, shuffled, text)
    assert r["top1"] < 0.2
    # permuting the text rows breaks every clip
    perm = np.roll(np.arange(len(text)), 1)
    assert zs.evaluate(audio, labels, text[perm])["top1"] == 0.0


def test_topk_monotone_and_confusion_rows(toy):
    audio, labels, text = toy
    rng = np.random.default_rng(1)
    noisy = _unit(audio + 0.4 * rng.normal(size=audio.shape))
    r = zs.evaluate(noisy, labels, text, ks=(1, 2, 3, 5, 8))
    values = [r[f"top{k}"] for k in (1, 2, 3, 5, 8)]
    assert values == sorted(values) and values[-1] == 1.0
    assert 0.0 < values[0] < 1.0
    np.testing.assert_array_equal(r["confusion"].sum(axis=1), np.bincount(labels))
    assert r["confusion"].trace() / r["n"] == pytest.approx(r["top1"])
    s = zs.scores(noisy, text)
    for k in (1, 2, 3):
        assert zs.topk_accuracy(s, labels, k) == pytest.approx(r[f"top{k}"])
    # true_rank gives top-k for any k
    assert np.mean(r["true_rank"] < 2) == pytest.approx(r["top2"])


def test_k_larger_than_classes_is_clipped(toy):
    audio, labels, text = toy
    r = zs.evaluate(audio, labels, text, ks=(1, 50))
    assert r["top50"] == 1.0
    assert zs.topk_indices(zs.scores(audio, text), 50).shape == (len(audio), len(text))


def test_nan_rows_excluded_and_counted(toy):
    audio, labels, text = toy
    audio = audio.copy()
    audio[[0, 5, 30]] = np.nan
    r = zs.evaluate(audio, labels, text)
    assert r["n"] == len(labels) - 3 and r["n_failed"] == 3
    assert r["top1"] == 1.0
    assert (r["predictions"][[0, 5, 30]] == -1).all()
    assert (r["true_rank"][[0, 5, 30]] == -1).all()
    assert r["confusion"].sum() == len(labels) - 3
    assert r["confusion"][0, 0] == np.sum(labels == 0) - 2


def test_class_without_clips_is_nan(toy):
    audio, labels, text = toy
    keep = labels != 3
    r = zs.evaluate(audio[keep], labels[keep], text)
    assert np.isnan(r["per_class"][3])
    assert np.isfinite(np.delete(r["per_class"], 3)).all()


def test_ties_go_to_lowest_index():
    text = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    audio = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32) / np.array(
        [[1], [1], [np.sqrt(2)]], dtype=np.float32
    )
    np.testing.assert_array_equal(zs.predict(audio, text), [0, 2, 0])
    np.testing.assert_array_equal(zs.predict(audio, text, k=2), [[0, 1], [2, 3], [0, 1]])
    r = zs.evaluate(audio, [1, 3, 2], text, ks=(1, 2, 3))
    # class 1 ties with 0 -> rank 1; class 3 ties with 2 -> rank 1; clip 3 ties all -> rank 2
    np.testing.assert_array_equal(r["true_rank"], [1, 1, 2])
    assert (r["top1"], r["top2"], r["top3"]) == (0.0, 2 / 3, 1.0)
    again = zs.evaluate(audio, [1, 3, 2], text, ks=(1, 2, 3))
    np.testing.assert_array_equal(again["predictions"], r["predictions"])


def test_labels_out_of_range_raise(toy):
    audio, labels, text = toy
    with pytest.raises(ValueError):
        zs.evaluate(audio, labels + 1, text)


def test_per_fold_mean_is_mean_of_folds(toy):
    audio, labels, text = toy
    rng = np.random.default_rng(2)
    noisy = _unit(audio + 0.4 * rng.normal(size=audio.shape))
    noisy[7] = np.nan
    folds = np.tile(np.arange(1, 5), len(labels) // 4)
    df = zs.per_fold(noisy, labels, folds, text)
    assert list(df.index) == [1, 2, 3, 4, "mean", "std"]
    assert list(df.columns) == ["top1", "top3", "top5", "n", "n_failed"]
    per = df.loc[[1, 2, 3, 4]]
    for col in ("top1", "top3", "top5"):
        assert df.loc["mean", col] == pytest.approx(per[col].mean())
        assert df.loc["std", col] == pytest.approx(per[col].std(ddof=1))
    m = folds == 2
    assert df.loc[2, "top1"] == pytest.approx(zs.evaluate(noisy[m], labels[m], text)["top1"])
    assert df.loc["mean", "n"] == len(labels) - 1 and df.loc["mean", "n_failed"] == 1


def test_multilabel_map_and_hits():
    # 3 classes, axis-aligned text; scores chosen by hand.
    text = np.eye(3, dtype=np.float32)
    audio = _unit(
        np.array(
            [[0.9, 0.3, 0.1], [0.2, 0.8, 0.5], [0.1, 0.4, 0.9], [0.7, 0.1, 0.6], [0.3, 0.9, 0.2]]
        )
    )
    Y = np.array([[1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=bool)
    r = zs.evaluate_multilabel(audio, Y, text, ks=(1, 2), primary=[0, 2, 2, 0, 1])
    s = audio @ text.T
    expected = [average_precision_score(Y[:, c], s[:, c]) for c in range(3)]
    np.testing.assert_allclose(r["per_class_ap"], expected)
    assert r["mAP"] == pytest.approx(np.mean(expected))
    # top-1: clip1 predicts 1 (true {2}) -> miss; others hit
    assert r["top1_hit"] == pytest.approx(4 / 5)
    assert r["top2_hit"] == 1.0
    assert r["top1_primary"] == pytest.approx(4 / 5)
    assert r["n"] == 5 and r["n_failed"] == 0


def test_multilabel_nan_rows_and_empty_class():
    text = np.eye(3, dtype=np.float32)
    audio = _unit(np.array([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0], [0.2, 0.9, 0.1], [1, 1, 1]]))
    audio[3] = np.nan
    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    r = zs.evaluate_multilabel(audio, Y, text, ks=(1,))
    assert r["n"] == 3 and r["n_failed"] == 1
    assert np.isnan(r["per_class_ap"][2])  # its only positive is the failed clip
    assert r["mAP"] == pytest.approx(np.nanmean(r["per_class_ap"][:2]))
    assert r["predictions"][3] == -1


def test_results_table_and_class_deltas(toy):
    audio, labels, text = toy
    rng = np.random.default_rng(3)
    good = zs.evaluate(audio, labels, text)
    noisy = zs.evaluate(_unit(audio + 0.5 * rng.normal(size=audio.shape)), labels, text)
    table = zs.results_table({"noisy": noisy, "clean": results.to_jsonable(good)})
    assert list(table.index) == ["noisy", "clean"]
    assert list(table.columns)[:3] == ["top1", "top3", "top5"]
    assert table.loc["clean", "top1"] == 1.0
    classes = [f"c{i}" for i in range(len(text))]
    d = zs.class_deltas(noisy, good, classes)
    assert list(d.columns)[:3] == ["a", "b", "delta"]
    assert (np.diff(d["delta"].to_numpy()) <= 1e-12).all()
    np.testing.assert_allclose(d.loc[classes, "delta"], good["per_class"] - noisy["per_class"])


def test_to_jsonable_round_trips(toy):
    audio, labels, text = toy
    r = zs.evaluate(audio, labels, text)
    r["per_class"][0] = np.nan
    out = json.loads(json.dumps(results.to_jsonable(r), allow_nan=False))
    assert out["top1"] == 1.0 and out["per_class"][0] is None
    assert out["confusion"][1][1] == 12
    df = zs.per_fold(audio, labels, labels % 2, text)
    assert json.dumps(results.to_jsonable(df), allow_nan=False)
    assert isinstance(results.to_jsonable({np.int64(3): np.float32(0.5)}), dict)
    assert pd.isna(zs.results_table({"x": {"top1": None}}).loc["x", "top1"])


def test_topk_confusion_matrix(toy):
    audio, labels, text = toy
    rng = np.random.default_rng(4)
    s = zs.scores(_unit(audio + 0.5 * rng.normal(size=audio.shape)), text)
    for k in (1, 3):
        m = zs.topk_confusion_matrix(s, labels, k)
        np.testing.assert_array_equal(m.sum(axis=1), np.bincount(labels))
        assert m.trace() / len(labels) == pytest.approx(zs.topk_accuracy(s, labels, k))
    top1 = zs.confusion_matrix(labels, s.argmax(axis=1), len(text))
    np.testing.assert_array_equal(zs.topk_confusion_matrix(s, labels, 1), top1)


def test_useful_ks_chance_and_the_summary_line():
    assert zs.useful_ks((1, 3, 5), 4) == (1, 3)
    assert zs.useful_ks((1, 3, 5), 50) == (1, 3, 5)
    assert zs.useful_ks((1, 3), 2) == (1,)
    assert zs.chance_levels((1, 3), 8) == {"top1": 0.125, "top3": 0.375}
    assert zs.chance_levels((1, 5), 4)["top5"] == 1.0
    line = zs.topk_line({"top3": 0.66, "top1": 0.16, "n": 50, "n_failed": 0, "per_class": []})
    assert line == "top-1 16.0 %  top-3 66.0 %  on 50 clips (0 failed)"
    hit = {"top1_hit": 0.5, "top1": 0.1, "n": 4, "n_failed": 1}
    assert zs.topk_line(hit, hit=True) == "top-1 hit 50.0 %  on 4 clips (1 failed)"
