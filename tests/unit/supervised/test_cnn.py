"""Tests for clap_helpers.supervised.protocol and clap_helpers.supervised.training (notebook 09_cnn_baseline).

Everything runs on small synthetic spectrograms (48 frames x 32 mels) and a few 1 s WAV files.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from clap_helpers import supervised
from clap_helpers.embedding.cache import CacheWarning
from clap_helpers.supervised import training

SHAPE = (1, 48, 32)  # (channels, frames, mels): small, but enough for 5 halvings


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared, busy machine two spinning OpenMP threads are ~8x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def _sklearn(y, p):
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="macro", zero_division=0)
    return {"accuracy": accuracy_score(y, p), "precision": prec, "recall": rec, "f1": f1}


def test_metrics_known_case_matches_sklearn_and_hand_values():
    # class 2 is never predicted; class 3 is predicted but never true
    y = [0, 0, 0, 1, 1, 2, 2, 2]
    p = [0, 0, 1, 1, 1, 0, 1, 3]
    got = training.classification_metrics(y, p)
    want = _sklearn(y, p)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # by hand: per class (0,1,2,3) precision 2/3, 2/4, 0, 0; recall 2/3, 1, 0, 0
    assert got["accuracy"] == pytest.approx(4 / 8)
    assert got["precision"] == pytest.approx((2 / 3 + 2 / 4) / 4)
    assert got["recall"] == pytest.approx((2 / 3 + 1.0) / 4)
    assert got["f1"] == pytest.approx((2 * 2 / 6 + 2 * 2 / 6) / 4)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_random_cases_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 40)
    p = np.where(rng.random(40) < 0.5, y, rng.integers(0, 7, 40))
    got, want = training.classification_metrics(y, p), _sklearn(y, p)
    assert got == pytest.approx(want, abs=1e-12)


def test_metrics_edge_cases():
    assert all(math.isnan(v) for v in training.classification_metrics([], []).values())
    assert training.classification_metrics([1, 1], [1, 1]) == pytest.approx(
        {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    )
    with pytest.raises(ValueError):
        training.classification_metrics([0, 1], [0])


# ----------------------------------------------------------------------------------------------
# SpecAugment
# ----------------------------------------------------------------------------------------------
def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def test_specaugment_masks_exactly_what_it_says():
    fill = -7.5
    x = torch.randn(16, 1, 60, 20) * 10
    aug = supervised.SpecAugment(
        crop_fraction=1.0,
        time_masks=2,
        max_time_width=10,
        freq_masks=1,
        max_freq_width=5,
        fill=fill,
    )
    out = aug(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)  # 16 clips: some band has width > 0
    any_time = any_freq = False
    for i in range(len(x)):
        eq = (out[i, 0] == fill).numpy()  # (frames, mels)
        rows, cols = eq.all(axis=1), eq.all(axis=0)
        assert np.array_equal(eq, rows[:, None] | cols[None, :])  # only whole bands are filled
        keep = ~eq
        assert torch.equal(out[i, 0][keep], x[i, 0][keep])  # the rest is untouched
        assert len(_runs(rows)) <= 2 and rows.sum() <= 2 * 10
        assert len(_runs(cols)) <= 1 and cols.sum() <= 5
        assert all(r <= 10 for r in _runs(rows)) or len(_runs(rows)) == 1  # merged bands
        any_time |= rows.any()
        any_freq |= cols.any()
    assert any_time and any_freq


def test_specaugment_is_seeded_and_a_no_op_in_eval():
    x = torch.randn(4, 1, 50, 24)
    a, b = supervised.SpecAugment(seed=1), supervised.SpecAugment(seed=1)
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, a(x))  # the stream moves on
    a.reseed(1)
    assert torch.equal(first, a(x))
    a.eval()
    assert a(x) is x


def test_specaugment_crop_keeps_consecutive_frames():
    x = torch.arange(50, dtype=torch.float32).repeat(6, 1, 8, 1).transpose(2, 3)  # (6,1,50,8)
    aug = supervised.SpecAugment(crop_fraction=0.5, time_masks=0, freq_masks=0, seed=0)
    out = aug(x)
    assert out.shape == (6, 1, 25, 8)
    starts = out[:, 0, 0, 0]
    expected = starts[:, None] + torch.arange(25)
    assert torch.equal(out[:, 0, :, 0], expected)
    assert (starts >= 0).all() and (starts <= 25).all()
    assert len(set(starts.tolist())) > 1  # offsets are drawn per clip


# ----------------------------------------------------------------------------------------------
# Models and checkpoints
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(supervised.MODELS))
def test_model_shapes_and_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    x = torch.randn(6, *SHAPE) * 10 - 40
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model = supervised.build_model(name, n_classes=3)
    assert model(x).shape == (6, 3)
    assert model(x[:, :, :37]).shape == (6, 3)  # any number of frames (crops)
    if name == "resnet18":  # same code, a quarter of the width: 10x faster to train here
        model = supervised.build_model(name, n_classes=3, width=16)
    model.set_input_stats(float(x.mean()), float(x.std()))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    model.train()
    for _ in range(15):  # loss falls to ~1 % of its start within 10-20 steps
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.25 * losses[0], losses


def test_build_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown model"):
        supervised.build_model("vgg", 3)
    assert supervised.model_names("all") == list(supervised.MODELS)
    assert supervised.model_names("cnn4") == ["cnn4"]
    with pytest.raises(ValueError):
        supervised.model_names(["cnn4", "nope"])


def test_checkpoint_reload_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    model = supervised.build_model("cnn8", 4, dropout=0.1)
    x = torch.randn(8, *SHAPE)
    model.set_input_stats(0.5, 2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # move weights and batch-norm statistics away from their init
        loss = torch.nn.functional.cross_entropy(model(x), torch.arange(8) % 4)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = supervised.save_model(tmp_path / "m.pt", model, "cnn8", model_kwargs={"dropout": 0.1})
    loaded, meta = supervised.load_model(path)
    assert meta["model_name"] == "cnn8" and meta["n_classes"] == 4
    assert float(loaded.input_mean) == 0.5 and float(loaded.input_std) == 2.0
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(ValueError):
        torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
        training.load_checkpoint(tmp_path / "foreign.pt")


def test_cosine_schedule_warms_up_and_decays():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = training.cosine_schedule(opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))


# ----------------------------------------------------------------------------------------------
# Feature cache
# ----------------------------------------------------------------------------------------------
def _wav_files(folder, n=3):
    paths = []
    for i in range(n):
        t = np.arange(16_000) / 16_000
        wave = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) + 0.01 * np.random.default_rng(
            i
        ).standard_normal(16_000)
        path = folder / f"clip{i}.wav"
        sf.write(path, wave.astype(np.float32), 16_000)
        paths.append(path)
    return paths


def test_feature_cache_hit_bad_file_and_corrupt_chunk(tmp_path):
    paths = _wav_files(tmp_path)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00 this is not audio")
    files = [paths[0], bad, paths[1], paths[2]]
    kw = {"name": "test", "cache_dir": tmp_path / "cache", "max_length_s": 1.0, "progress": False}
    with pytest.warns(supervised.FeatureWarning) as caught:
        first = supervised.logmel_features(files, **kw)
    messages = [str(w.message) for w in caught]
    assert any("broken.wav" in m for m in messages) and any("1 of 4" in m for m in messages)
    assert first.x.shape == (4, 1, 101, 64) and first.x.dtype == np.float32
    assert first.ok.tolist() == [True, False, True, True] and first.n_failed == 1
    assert first.failures[0][0] == str(bad) and first.n_computed == 3
    assert np.isnan(first.x[1]).all() and np.isfinite(first.x[first.ok]).all()

    with pytest.warns(supervised.FeatureWarning):  # the bad file is never cached: reported again
        second = supervised.logmel_features(files, **kw)
    assert second.n_cached == 3 and second.n_computed == 0
    np.testing.assert_array_equal(second.x[second.ok], first.x[first.ok])

    chunks = sorted((tmp_path / "cache" / "logmel").glob("*/chunk-*.npz"))
    assert chunks
    for chunk in chunks:  # truncate every chunk: unreadable
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    with pytest.warns(CacheWarning):
        third = supervised.logmel_features(paths, **kw)
    assert third.n_computed == 3 and third.n_cached == 0
    np.testing.assert_array_equal(third.x, first.x[first.ok])
    # another window length is another namespace: nothing cached yet
    assert supervised.logmel_features(paths, **{**kw, "max_length_s": 0.5}).n_computed == 3


# ----------------------------------------------------------------------------------------------
# Fold protocol, end to end
# ----------------------------------------------------------------------------------------------
def _toy_dataset(n_per_class=8, n_classes=3):
    """(N, 1, 48, 32) dB-like spectrograms; class c has a loud band at mels 8c..8c+6."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.normal(-50, 5, (len(y), *SHAPE)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, :, 8 * c : 8 * c + 6] += 30
    folds = np.tile([1, 2], len(y) // 2)
    return x, y, folds


def test_validation_split_is_stratified():
    y = np.repeat([0, 1, 2], [10, 4, 1])
    val = supervised.validation_split(y, 0.25, seed=0)
    assert val[y == 0].sum() == 2 and val[y == 1].sum() == 1 and val[y == 2].sum() == 0
    assert np.array_equal(val, supervised.validation_split(y, 0.25, seed=0))
    assert not supervised.validation_split(y, 0.0).any()


EXPECTED_COLUMNS = (
    ["model", "fold", "epoch", "lr"]
    + [f"{s}_{m}" for s in ("train", "val", "test") for m in training.METRICS]
    + ["best", "seconds"]
)


def test_train_folds_end_to_end(tmp_path):
    x, y, folds = _toy_dataset()
    kw = dict(model="cnn4", test_folds="all", epochs=2, batch_size=8, device="cpu", progress=False)
    run = supervised.train_folds(
        x, y, folds, run_dir=tmp_path / "runs", classes=["a", "b", "c"], **kw
    )
    assert run["folds"] == [1, 2] and run["device"] == "cpu" and run["precision"] == "fp32"
    assert list(run["per_fold"]["fold"]) == [1, 2]
    assert (run["per_fold"][["n_train", "n_val", "n_test"]].to_numpy() == [[9, 3, 12]] * 2).all()
    assert len(run["history"]) == 4 and run["confusion"].sum() == len(y)
    assert (run["predictions"] >= 0).all()
    assert 0.0 <= run["mean"] <= 1.0 and np.isfinite(run["std"])
    for fold in (1, 2):
        log = pd.read_csv(tmp_path / "runs" / "cnn4" / f"fold{fold}" / "metrics.csv")
        assert list(log.columns) == EXPECTED_COLUMNS
        assert log["epoch"].tolist() == [1, 2] and log["fold"].eq(fold).all()
        assert log[[c for c in EXPECTED_COLUMNS if "_" in c]].notna().all().all()
        # the kept checkpoint reproduces the reported test predictions
        model, meta = supervised.load_model(run["checkpoints"][fold])
        assert meta["classes"] == ["a", "b", "c"] and meta["fold"] == fold
        test = folds == fold
        pred = training.predict_logits(model, torch.from_numpy(x[test])).argmax(1).numpy()
        np.testing.assert_array_equal(pred, run["predictions"][test])

    again = supervised.train_folds(x, y, folds, **kw)  # same seed: bit-identical on the CPU
    cols = [c for c in EXPECTED_COLUMNS if c.endswith("_loss")]
    pd.testing.assert_frame_equal(again["history"][cols], run["history"][cols])

    table = supervised.summary_table({"cnn4": run})
    assert table.loc[0, "accuracy"] == pytest.approx(run["mean"])


def test_one_progress_bar_per_run_not_per_fold_or_epoch(monkeypatch):
    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, *args, **kwargs):
            self.total, self.n, self.closed = kwargs.get("total"), 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, *args, **kwargs):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    x, y, folds = _toy_dataset()
    supervised.train_folds(x, y, folds, model="cnn4", test_folds="all", epochs=2, batch_size=8)
    assert len(bars) == 1  # 2 folds x 2 epochs, one bar
    assert bars[0].closed and bars[0].n == bars[0].total == 2 * 2 * 2  # 9 clips: 2 batches


def test_train_folds_skips_failed_rows_and_checks_folds():
    x, y, folds = _toy_dataset()
    feats = supervised.LogMelSet(x=x.copy(), ok=np.ones(len(y), dtype=bool))
    feats.ok[0] = False
    feats.x[0] = np.nan
    run = supervised.train_folds(
        feats, y, folds, model="cnn4", epochs=1, batch_size=8, progress=False
    )
    assert run["n_failed"] == 1 and run["predictions"][0] == -1 and run["folds"] == [1]
    with pytest.raises(ValueError, match="fold"):
        supervised.train_folds(x, y, folds, test_folds=[7], epochs=1, progress=False)


def test_compare_table_reads_results_or_says_not_run(tmp_path):
    run = {"folds": [1], "mean": 0.5, "std": float("nan")}
    missing = supervised.versus_clap_table(
        {"cnn8": run}, tmp_path / "nope.json", tmp_path / "nope2.json"
    )
    assert list(missing["source"]) == ["this notebook", "not run", "not run"]
    assert missing.loc[0, "accuracy"] == pytest.approx(50.0)
    (tmp_path / "zs.json").write_text(json.dumps({"top1": 0.8}))
    modes = {"modes": {"linear": {"mean": 0.9, "std": 0.01}, "sv": 0.85}}
    (tmp_path / "ad.json").write_text(json.dumps(modes))
    table = supervised.versus_clap_table({"cnn8": run}, tmp_path / "zs.json", tmp_path / "ad.json")
    assert table["method"].tolist() == [
        "CNN cnn8 (with SpecAugment)",
        "CLAP zero-shot",
        "CLAP linear probe",
        "CLAP supervised prototypes",
    ]
    assert table["accuracy"].tolist()[1:] == pytest.approx([80.0, 90.0, 85.0])
    assert table.loc[2, "std"] == pytest.approx(1.0)


def test_metrics_logger_writes_csv_and_tensorboard_scalars(tmp_path):
    calls = []

    class FakeWriter:  # tensorboard is optional: check what would be sent to it
        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    logger = training.MetricsLogger(tmp_path, tensorboard=False)
    logger._writer = FakeWriter()
    row = {"fold": 1, "epoch": 3, "lr": 0.1, "train_loss": 1.0, "val_f1": 0.5, "best": True}
    logger.log(row)
    logger.close()
    assert calls == [("epoch/lr", 0.1, 3), ("train/loss", 1.0, 3), ("val/f1", 0.5, 3)]
    assert pd.read_csv(tmp_path / "metrics.csv").to_dict("records") == [row]
