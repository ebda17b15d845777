"""Dataset overviews and result summaries (clap_helpers.data.overview) on the fixtures and toy data."""

from __future__ import annotations

import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from clap_helpers import plots
from clap_helpers.data import (
    download,  # noqa: E402
    overview,
)
from clap_helpers.data import loaders as datasets  # noqa: E402
from clap_helpers.devtools.fixtures import synthetic  # noqa: E402
from clap_helpers.evaluation import (
    prompts,  # noqa: E402
    results,
)
from clap_helpers.evaluation import zeroshot as zs  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def loaded(data_root):
    found, missing = datasets.load_available(datasets.NAMES, data_root)
    assert missing == {}
    return found


@pytest.fixture
def partial_root(data_root, tmp_path):
    """A data root holding only ESC-50 (copied from the fixtures)."""
    shutil.copytree(data_root / "ESC-50-master", tmp_path / "ESC-50-master")
    return tmp_path


# ------------------------------------------------------------------------------ on disk
def test_download_command():
    assert datasets.download_command("esc50") == "bash dataset.sh esc50 --dest downloads"
    assert datasets.download_command("fma_small", "my data").endswith("--dest 'my data'")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.download_command("gtzan")


def test_download_plan_and_status_with_one_dataset(partial_root):
    plan = overview.download_plan(partial_root)
    assert list(plan.index) == list(datasets.NAMES)
    assert plan["on_disk"].tolist() == [True, False, False, False]
    assert plan.loc["urbansound8k", "command"] == (
        f"bash dataset.sh urbansound8k --dest {partial_root}"
    )
    assert "6 GB" in plan.loc["urbansound8k", "size"]
    assert "7.2 GB" in plan.loc["fma_small", "size"] and "342 MB" in plan.loc["fma_small", "size"]
    status = overview.fetch_missing(datasets.NAMES, partial_root, download=False)
    assert status["esc50"] == "on disk"
    assert status["audioset"] == f"missing: bash dataset.sh audioset --dest {partial_root}"


def test_fetch_missing_downloads_only_missing_and_reports_failures(partial_root, data_root):
    calls = []

    def fake_fetch(name, dest):
        calls.append((name, dest))
        if name == "urbansound8k":  # "download" it by copying the fixture
            shutil.copytree(data_root / "UrbanSound8K", dest / "UrbanSound8K")
        elif name == "fma_small":
            raise download.DownloadError("fma_small: HTTP 404 from the mirror")
        # audioset: returns without writing anything

    status = overview.fetch_missing(datasets.NAMES, partial_root, download=True, fetch=fake_fetch)
    assert [c[0] for c in calls] == ["urbansound8k", "fma_small", "audioset"]
    assert all(c[1] == partial_root for c in calls)
    assert status == {
        "esc50": "on disk",
        "urbansound8k": "downloaded",
        "fma_small": "download failed: fma_small: HTTP 404 from the mirror",
        "audioset": "download failed: metadata still missing",
    }


def test_load_available_reports_missing_with_command(partial_root):
    found, missing = datasets.load_available(datasets.NAMES, partial_root)
    assert list(found) == ["esc50"]
    assert set(missing) == {"urbansound8k", "fma_small", "audioset"}
    for name, message in missing.items():
        assert f"bash dataset.sh {name}" in message
    clips, classes = found["esc50"]
    assert len(clips) == 50 and classes == sorted(synthetic.ESC50_CLASSES)
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_available(["esc50", "gtzan"], partial_root)


# ------------------------------------------------------------------------------ summaries
def test_overview_table_on_fixtures(loaded):
    durs = overview.clip_durations(loaded, progress=False)
    table = overview.overview_table(loaded, durs)
    assert list(table.index) == list(datasets.NAMES)
    esc = table.loc["esc50"]
    assert esc["clips"] == 50 and esc["classes"] == 5 and esc["folds"] == 5
    assert esc["mean_s"] == pytest.approx(5.0) and esc["total_h"] == pytest.approx(250 / 3600)
    us8k = table.loc["urbansound8k"]
    assert us8k["folds"] == 10 and us8k["max_s"] == pytest.approx(4.0) and us8k["min_s"] < 4.0
    assert table.loc["fma_small", "mean_s"] == pytest.approx(synthetic.FMA_DURATION_S, abs=0.1)
    # every fixture AudioSet class has one clip that also carries the next class
    assert table.loc["audioset", "multi_label"] == len(synthetic.AUDIOSET_CLASSES)
    assert table.loc["esc50", "multi_label"] == 0
    assert (table["files_missing"] == 0).all() and (table["unreadable"] == 0).all()
    # without durations: only the metadata columns
    assert "mean_s" not in overview.overview_table(loaded).columns


def test_overview_table_estimates_total_from_subset(loaded):
    durs = overview.clip_durations(loaded, n_samples=10, seed=1, progress=False)
    assert {name: len(d) for name, d in durs.items()} == {
        "esc50": 10,
        "urbansound8k": 10,
        "fma_small": 9,  # fewer clips than asked: all of them
        "audioset": 10,
    }
    # the subset is class-stratified: two clips of each ESC-50 class
    assert loaded["esc50"][0].loc[durs["esc50"].index, "label"].value_counts().eq(2).all()
    row = overview.overview_table(loaded, durs).loc["esc50"]
    assert row["headers_read"] == 10 and row["total_h"] == pytest.approx(50 * 5.0 / 3600)


def test_overview_counts_missing_audio(loaded):
    clips, classes = loaded["esc50"]
    broken = clips.copy()
    broken.loc[broken.index[:3], "path"] = "/nonexistent/x.wav"
    durs = {"esc50": datasets.durations(broken, progress=False)}
    row = overview.overview_table({"esc50": (broken, classes)}, durs).loc["esc50"]
    assert row["files_missing"] == 3 and row["unreadable"] == 3 and row["headers_read"] == 47


def test_class_balance_single_and_multi_label(loaded):
    clips, classes = loaded["urbansound8k"]
    table = overview.class_balance(clips, classes)
    assert list(table.index) == classes
    assert (table["clips"] == 10).all() and (table["tagged"] == table["clips"]).all()
    assert table["share"].sum() == pytest.approx(1.0)
    clips, classes = loaded["audioset"]
    table = overview.class_balance(clips)
    per = synthetic.AUDIOSET_CLIPS_PER_CLASS
    assert (table["clips"] == per).all() and (table["tagged"] == per + 1).all()
    # an unbalanced subset shows up
    sub = clips[clips["label"] != "Dog"]
    balance = overview.class_balance(sub, classes)
    assert balance.loc["Dog", "clips"] == 0 and balance.loc["Dog", "tagged"] == 1
    summary = overview.balance_summary({"full": overview.class_balance(clips), "sub": balance})
    assert summary.loc["full", "imbalance"] == 1.0 and summary.loc["full", "classes"] == 4
    assert summary.loc["sub", "smallest"] == "Dog" and summary.loc["sub", "imbalance"] == np.inf
    uneven = overview.class_balance(clips[clips.index != clips.index[0]], classes)
    row = overview.balance_summary({"x": uneven}).loc["x"]
    assert (row["min_clips"], row["max_clips"]) == (per - 1, per)
    assert row["smallest"] == clips["label"].iloc[0]
    assert row["imbalance"] == pytest.approx(per / (per - 1))


def test_figures(loaded):
    balances = {n: overview.class_balance(c, cl) for n, (c, cl) in loaded.items()}
    fig = plots.class_balance(balances)
    assert len(fig.axes) == 4
    assert [len(ax.patches) for ax in fig.axes] == [5, 4, 4, 4]
    assert fig.axes[0].patches[0].get_width() == 10
    fig = plots.durations(overview.clip_durations(loaded, progress=False))
    assert len(fig.axes) == 4
    # the ESC-50 histogram holds all 50 clips
    assert sum(p.get_height() for p in fig.axes[0].patches) == 50
    empty = plots.class_balance({})
    assert "no dataset" in empty.axes[0].texts[0].get_text()
    assert "no dataset" in plots.durations({}).axes[0].texts[0].get_text()


# ------------------------------------------------------------------------------ example clip
def test_pick_example_is_deterministic_and_decodes(loaded):
    a = overview.pick_example(loaded, seed=3)
    b = overview.pick_example(loaded, seed=3)
    assert a["dataset"] == "esc50" and a["path"] == b["path"]
    assert a["sr"] == 48000 and a["waveform"].dtype == np.float32
    assert a["duration_s"] == pytest.approx(5.0)
    assert a["label"] in loaded["esc50"][1]
    us = overview.pick_example(loaded, dataset="urbansound8k", seed=0)
    assert us["dataset"] == "urbansound8k" and us["waveform"].ndim == 1
    assert overview.pick_example({}) is None


def test_pick_example_skips_undecodable(loaded, tmp_path):
    clips, classes = loaded["esc50"]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    broken = clips.copy()
    broken["path"] = [str(bad)] * (len(broken) - 1) + [broken["path"].iloc[-1]]
    ex = overview.pick_example({"esc50": (broken, classes)}, max_tries=len(broken))
    assert ex["path"] == clips["path"].iloc[-1]
    with pytest.raises(ValueError, match="decodes"):
        overview.pick_example({"esc50": (broken.iloc[:5], classes)})


def test_clap_logmel_shape_and_repeat_padding():
    t = np.arange(48000 * 5) / 48000
    wave = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = plots.compute_logmel(wave, 48000, model_window=True)
    assert mel.shape == (1001, 64) and mel.dtype == np.float32
    # a 5 s clip is repeated once to fill the 10 s window: both halves look alike
    np.testing.assert_allclose(mel[100:400], mel[600:900], atol=1e-3)
    # 1 kHz lands in a middle band, far above the top band
    assert mel[300].argmax() not in (0, 63) and mel[300].max() > mel[300, -1] + 40
    with pytest.raises(ValueError, match="48 kHz"):
        plots.compute_logmel(wave, sr=44100, model_window=True)


# ------------------------------------------------------------------------------ strategies
def _toy_text(classes, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return np.linalg.qr(rng.normal(size=(dim, len(classes))))[0].T.astype(np.float32)


def test_evaluate_strategies_single_label(loaded):
    clips, classes = loaded["esc50"]
    text = _toy_text(classes)
    audio = text[clips["target"].to_numpy()]  # perfect embeddings
    shuffled = text[np.roll(np.arange(len(classes)), 1)]  # every class mapped to the next one
    results = zs.evaluate_strategies(audio, clips, classes, {"good": text, "bad": shuffled})
    assert list(results) == ["good", "bad"]
    assert results["good"]["top1"] == 1.0 and results["bad"]["top1"] == 0.0
    assert "mAP" not in results["good"]
    table = zs.results_table(results)
    assert list(table.columns[:3]) == ["top1", "top3", "top5"]
    deltas = zs.class_deltas(results["good"], results["bad"], classes)
    summary = zs.gains_and_losses(deltas, n=2)
    assert summary["n_loss"] == len(classes) and summary["n_gain"] == 0
    assert len(summary["losses"]) == 2 and all(v == -1.0 for v in summary["losses"].values())


def test_evaluate_strategies_multi_label(loaded):
    clips, classes = loaded["audioset"]
    text = _toy_text(classes)
    Y = datasets.label_matrix(clips, classes)
    audio = Y.astype(np.float32) @ text  # each clip mixes its classes' vectors
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    results = zs.evaluate_strategies(audio, clips, classes, {"template": text})
    r = results["template"]
    assert r["mAP"] == pytest.approx(1.0) and r["top1_hit"] == 1.0
    assert r["n"] == len(clips) and len(r["per_class_ap"]) == len(classes)
    # top-1 is against the primary label; mixed clips tie between two classes
    assert 0.5 < r["top1"] <= 1.0 and r["top3"] == 1.0
    table = zs.results_table(results)
    assert {"top1", "top3", "top5", "top1_hit", "mAP"} <= set(table.columns)


def test_prompt_examples_from_prompt_sets(loaded):
    _, classes = loaded["esc50"]
    sets = prompts.prompt_sets(classes, "esc50")
    table = prompts.prompt_examples(sets, classes, n=2)
    assert list(table.index) == classes[:2]
    assert list(table.columns) == ["label", "template", "descriptive", "ensemble"]
    assert table.loc["chirping_birds", "label"] == "chirping birds"
    assert table.loc["chirping_birds", "template"] == "This is a sound of chirping birds."
    assert table.loc["chirping_birds", "ensemble"].count(" | ") >= 1
    assert len(prompts.prompt_examples(sets, classes, n=None)) == len(classes)


def test_gains_and_losses_counts():
    deltas = pd.DataFrame(
        {"delta": [0.3, 0.1, 0.0, -0.2, np.nan, -0.5]},
        index=pd.Index(list("abcdef"), name="class"),
    )
    s = zs.gains_and_losses(deltas, n=1)
    assert s["gains"] == {"a": 0.3} and s["losses"] == {"f": -0.5}
    assert (s["n_gain"], s["n_loss"], s["n_same"], s["n_undefined"]) == (2, 2, 1, 1)


# ------------------------------------------------------------------------------ UrbanSound8K
def test_audio_formats_shows_the_mix(loaded):
    clips, _ = loaded["urbansound8k"]
    table = overview.audio_formats(clips, progress=False)
    assert table["clips"].sum() == len(clips)
    assert set(table["samplerate"]) == {r for r, _, _ in synthetic.US8K_FORMATS}
    assert {"PCM_U8", "PCM_16", "PCM_24", "FLOAT"} <= set(table["subtype"])
    assert table["clips"].is_monotonic_decreasing
    broken = clips.iloc[:3].assign(path="/nonexistent/a.wav")
    row = overview.audio_formats(broken, progress=False).iloc[0]
    assert (row["subtype"], row["clips"]) == ("unreadable", 3)


def test_published_comparison():
    table = results.published_comparison("us8k", 0.75)
    assert list(table.index) == ["this run", *results.PUBLISHED_TOP1["urbansound8k"]]
    assert table["top1_percent"].iloc[1] == pytest.approx(77.0)
    assert table["difference_points"].iloc[1] == pytest.approx(-2.0)
    assert table["difference_points"].iloc[0] == 0.0
    assert results.published_comparison("esc50", 0.9)["top1_percent"].iloc[2] == pytest.approx(
        91.55
    )
    with pytest.raises(ValueError, match="no published"):
        results.published_comparison("fma_small", 0.5)


def test_top_confusions_and_per_class_topk():
    classes = ["a", "b", "c"]
    conf = np.array([[5, 3, 0], [1, 6, 1], [0, 4, 2]])
    table = zs.top_confusions(conf, classes, n=3)
    assert table[["true", "predicted", "clips"]].values.tolist() == [
        ["c", "b", 4],
        ["a", "b", 3],
        ["b", "a", 1],
    ]
    assert table["share"].iloc[0] == pytest.approx(4 / 6)
    assert len(zs.top_confusions(np.diag([1, 2, 3]), classes)) == 0
    rank = np.array([0, 1, 2, -1, 0, 4])
    labels = np.array([0, 0, 0, 0, 1, 1])
    per = zs.per_class_topk(rank, labels, classes, ks=(1, 3))
    assert per["clips"].tolist() == [3, 2, 0]
    assert per.loc["a", "top1"] == pytest.approx(1 / 3) and per.loc["a", "top3"] == 1.0
    assert per.loc["b", "top3"] == 0.5 and np.isnan(per.loc["c", "top1"])
