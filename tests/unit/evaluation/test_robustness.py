"""Tests for clap_helpers.evaluation.robustness (notebook 08_adaptation): backgrounds, soundscape sets,
per-condition evaluation with domain adaptation, tables and figures."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clap_helpers import plots
from clap_helpers.data import loaders as datasets
from clap_helpers.data import soundscapes
from clap_helpers.evaluation import adapt, results, robustness

SR = 48000


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def esc50(data_root):
    return datasets.load("esc50", data_root)


# ------------------------------------------------------------------------------ part 1 tables


def _crossval_results():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1, 2], 6)
    folds = np.repeat([1, 2, 3], 6)
    audio = _unit(np.eye(3, 5)[labels] + rng.normal(0, 0.05, (18, 5)))
    text = _unit(np.eye(3, 5) + 0.1)
    return {m: adapt.crossval(audio, labels, folds, text, m) for m in adapt.MODES}


def test_summarize_modes_and_fold_table():
    results = _crossval_results()
    modes = adapt.summarize_modes(results)
    assert list(modes) == ["zs", "tgap", "sv", "linear"]
    for mode, summary in modes.items():
        assert set(summary) == {"mean", "std", "per_fold"}
        assert summary["mean"] == pytest.approx(results[mode]["mean"])
        assert summary["per_fold"] == results[mode]["per_fold"]
        assert all(isinstance(v, float) for v in summary["per_fold"].values())
    table = adapt.fold_table(results)
    assert list(table.columns) == ["zs", "tgap", "sv", "linear"]
    assert list(table.index) == [1, 2, 3, "mean", "std"]
    assert table.loc["mean", "sv"] == pytest.approx(results["sv"]["mean"])
    assert table.loc[2, "linear"] == pytest.approx(results["linear"]["per_fold"][2])
    # the mean row is the mean of the fold rows
    np.testing.assert_allclose(
        table.loc[[1, 2, 3]].astype(float).mean().to_numpy(), table.loc["mean"].to_numpy()
    )


def test_compare_bars_draws_ours_and_published():
    runs = _crossval_results()
    table = results.compare_table(runs, "esc50", model="tiny")
    fig = plots.compare_bars(table, title="t")
    ax = fig.axes[0]
    assert len(ax.patches) == len(table)  # one bar per row
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "ours (tiny) · zero-shot"
    assert any(label.startswith("MS-CLAP 2023 · zero-shot") for label in labels)
    # our zero-shot bar has the length of our mean in %
    assert ax.patches[0].get_width() == pytest.approx(100 * runs["zs"]["mean"])
    plt.close(fig)
    fig2, ax2 = plt.subplots()
    assert plots.compare_bars(table, ax=ax2) is fig2
    plt.close(fig2)


# ------------------------------------------------------------------------------ backgrounds


def test_background_table_from_dataset_classes_splits_by_source_recording(esc50):
    clips, _ = esc50
    table = robustness.background_table(clips, ["rain"], adapt_fraction=0.5, seed=0)
    rain = clips[clips["label"] == "rain"]
    assert set(table["path"]) == set(rain["path"])
    assert set(table["background"]) == {"rain"}
    assert (table["active"] >= 0.9).all()
    # whole source recordings go to one role; both roles are used
    assert table.groupby("group")["role"].nunique().max() == 1
    n_groups = table.groupby("role")["group"].nunique()
    assert n_groups["adapt"] == round(0.5 * rain["src_file"].nunique())
    assert n_groups["mix"] >= 1
    again = robustness.background_table(clips, ["rain"], adapt_fraction=0.5, seed=0)
    pd.testing.assert_frame_equal(table, again)
    chosen = {
        frozenset(t.loc[t.role == "adapt", "group"])
        for t in (robustness.background_table(clips, ["rain"], seed=s) for s in range(4))
    }
    assert len(chosen) > 1  # the seed chooses the split


def test_background_table_rejects_unknown_classes(esc50):
    clips, _ = esc50
    with pytest.raises(ValueError, match="not in the dataset"):
        robustness.background_table(clips, ["rain", "thunderstorm"])
    with pytest.raises(ValueError, match="background_dir"):
        robustness.background_table(clips, None)


def test_background_table_from_a_folder_drops_silent_files(tmp_path):
    folder = tmp_path / "park"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(folder / f"n{i}.wav", 0.1 * rng.standard_normal(SR), SR)
    half_silent = np.concatenate([0.1 * rng.standard_normal(SR // 2), np.zeros(SR)])
    sf.write(folder / "gap.wav", half_silent, SR)
    (folder / "broken.wav").write_bytes(b"RIFF garbage")
    with pytest.warns(UserWarning, match="dropping 2 of 5"):
        table = robustness.background_table(background_dir=folder, adapt_fraction=0.3)
    assert sorted(p.split("/")[-1] for p in table["path"]) == ["n0.wav", "n1.wav", "n2.wav"]
    assert set(table["background"]) == {"park"}
    assert (table["role"] == "adapt").sum() == 1 and (table["role"] == "mix").sum() == 2
    with pytest.warns(UserWarning, match="dropping"):
        named = robustness.background_table(background_dir=folder, background_name="city park")
    assert set(named["background"]) == {"city park"}


def test_background_table_needs_two_source_recordings(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    sf.write(folder / "only.wav", 0.1 * np.random.default_rng(0).standard_normal(SR), SR)
    with pytest.raises(ValueError, match="at least 2"):
        robustness.background_table(background_dir=folder)


# ------------------------------------------------------------------------------ foregrounds


def test_foreground_subset_excludes_backgrounds_and_balances_folds(esc50):
    clips, _ = esc50
    fg = soundscapes.foreground_subset(clips, 20, exclude_classes=["rain"], seed=0)
    assert len(fg) == 20 and "rain" not in set(fg["label"])
    assert fg["label"].value_counts().tolist() == [5, 5, 5, 5]
    assert fg["fold"].value_counts().tolist() == [4, 4, 4, 4, 4]
    assert fg.index.isin(clips.index).all()
    pd.testing.assert_frame_equal(fg, soundscapes.foreground_subset(clips, 20, ["rain"], seed=0))
    smaller = soundscapes.foreground_subset(clips, 12, ["rain"], seed=0)
    assert set(smaller.index) <= set(fg.index)
    assert smaller["label"].value_counts().tolist() == [3, 3, 3, 3]
    assert smaller["fold"].value_counts().max() - smaller["fold"].value_counts().min() <= 1
    four = soundscapes.foreground_subset(clips, 4, ["rain"], seed=5)
    assert four["label"].nunique() == 4 and four["fold"].nunique() == 4
    assert list(four.index) == sorted(four.index)  # dataset order kept
    # fewer classes than folds (like UrbanSound8K minus its backgrounds): still even
    cells = [(f"c{c}", fold, i) for c in range(3) for fold in range(1, 11) for i in range(20)]
    table = pd.DataFrame(cells, columns=["label", "fold", "i"])
    for n in (7, 12, 45):
        sub = soundscapes.foreground_subset(table, n, seed=n)
        for column in ("label", "fold"):
            counts = sub[column].value_counts().reindex(table[column].unique(), fill_value=0)
            assert counts.max() - counts.min() <= 1, (n, column, counts.tolist())
    everything = soundscapes.foreground_subset(clips, None, ["rain"])
    assert len(everything) == (clips["label"] != "rain").sum()
    with pytest.raises(ValueError, match="no foreground"):
        soundscapes.foreground_subset(clips[clips.label == "rain"], 4, ["rain"])


# ------------------------------------------------------------------------------ soundscapes


def test_build_soundscapes_pairs_conditions_and_reuses_files(esc50, tmp_path):
    clips, _ = esc50
    bgs = robustness.background_table(clips, ["rain"], seed=0)
    fg = soundscapes.foreground_subset(clips, 4, ["rain"], seed=0)
    items = soundscapes.build_soundscapes(fg, bgs, [10, 0], tmp_path, seed=1, duration_s=2.0)
    assert list(items["condition"]) == ["clean"] * 4 + ["10 dB"] * 4 + ["0 dB"] * 4
    assert items.attrs["n_failed"] == 0
    clean = items[items["condition"] == "clean"]
    assert list(clean["path"]) == list(fg["path"])
    assert list(clean["target"]) == list(fg["target"]) and list(clean["fold"]) == list(fg["fold"])
    # backgrounds: only "mix" recordings, and the same one for a foreground at every SNR
    mix_paths = set(bgs.loc[bgs.role == "mix", "path"])
    assert set(items["background_path"]) <= mix_paths
    assert (items.groupby("foreground")["background_path"].nunique() == 1).all()
    assert set(items["background"]) == {"rain"}
    mixed = items[np.isfinite(items["snr_db"])]
    for path in mixed["path"]:
        x, sr = sf.read(path)
        assert sr == SR and x.shape == (2 * SR,)
    # a second call reads the manifest back: same table, files untouched
    mtimes = [Path(p).stat().st_mtime_ns for p in mixed["path"]]
    again = soundscapes.build_soundscapes(fg, bgs, [10, 0], tmp_path, seed=1, duration_s=2.0)
    pd.testing.assert_frame_equal(items, again)
    assert mtimes == [Path(p).stat().st_mtime_ns for p in again["path"][4:]]
    # another seed is another set, in another folder
    other = soundscapes.build_soundscapes(fg, bgs, [10], tmp_path, seed=2, duration_s=2.0)
    assert other.attrs["folder"] != items.attrs["folder"]


def test_build_soundscapes_drops_a_broken_foreground_everywhere(esc50, tmp_path):
    clips, _ = esc50
    bgs = robustness.background_table(clips, ["rain"], seed=0)
    fg = soundscapes.foreground_subset(clips, 3, ["rain"], seed=0).copy()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    fg.iloc[1, fg.columns.get_loc("path")] = str(broken)
    with pytest.warns(UserWarning, match="2 files were skipped"):
        items = soundscapes.build_soundscapes(
            fg, bgs, [6, 0], tmp_path / "s", seed=0, duration_s=1.0
        )
    assert str(broken) not in set(items["foreground"])
    assert items["condition"].value_counts().to_dict() == {"clean": 2, "6 dB": 2, "0 dB": 2}
    assert items.attrs["n_failed"] == 2 and items.attrs["failures"][0][1] == str(broken)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = soundscapes.build_soundscapes(
            fg, bgs, [6, 0], tmp_path / "s", seed=0, duration_s=1.0
        )
    assert again.attrs["n_failed"] == 2  # failures are remembered by the manifest
    pd.testing.assert_frame_equal(items, again)


def test_background_embeddings_groups_by_name():
    bgs = pd.DataFrame(
        {
            "path": ["a", "b", "c", "d", "e"],
            "background": ["sea_waves", "rain", "sea_waves", "rain", "sea_waves"],
            "role": ["adapt", "adapt", "mix", "adapt", "adapt"],
        }
    )
    seen = []

    def fake_embed(texts):
        seen.extend(texts)
        return np.arange(len(texts) * 2, dtype=np.float32).reshape(len(texts), 2)

    audio = np.arange(8, dtype=np.float32).reshape(4, 2)  # rows of a, b, d, e
    text, by_name = robustness.background_embeddings(bgs, fake_embed, audio)
    assert seen == adapt.text_background_prompts("rain") + adapt.text_background_prompts(
        "sea waves"
    )
    assert text["rain"].shape == (3, 2) and text["sea_waves"].shape == (3, 2)
    np.testing.assert_array_equal(text["sea_waves"], np.arange(6, 12).reshape(3, 2))
    np.testing.assert_array_equal(by_name["rain"], audio[[1, 2]])
    np.testing.assert_array_equal(by_name["sea_waves"], audio[[0, 3]])
    with pytest.raises(ValueError, match="4 'adapt' files"):
        robustness.background_embeddings(bgs, fake_embed, audio[:3])
    assert robustness.background_embeddings(bgs, fake_embed)[1] == {}


# ------------------------------------------------------------------------------ evaluation


def _noisy_world(n_folds: int = 3, per_class: int = 4):
    """Classes 0, 1 (events) and 2 (rain, the background); t_c = e_c, rain audio ~ e2 + e4.

    A soundscape is unit(event + w * rain): w = 0 (clean), 0.5 ("10 dB"), 2 ("0 dB"). At w = 2
    the rain score (0.63) beats the event's (0.45), so zero-shot says "rain"; subtracting
    tau * beta_rain (beta = 0.71 for the rain recordings, 1 for the rain prompts) fixes it.
    """
    rng = np.random.default_rng(0)
    rain = _unit([0, 0, 1, 0, 1, 0])
    text = np.eye(3, 6, dtype=np.float32)
    train_labels = np.tile(np.repeat([0, 1, 2], per_class), n_folds)
    train_folds = np.repeat(np.arange(1, n_folds + 1), 3 * per_class)
    centres = np.vstack([np.eye(2, 6), rain[None]])
    train = _unit(centres[train_labels] + rng.normal(0, 0.02, (train_labels.size, 6)))
    rows, emb = [], []
    for fold in range(1, n_folds + 1):
        for c in (0, 1):
            for _ in range(2):
                event = np.eye(6)[c] + rng.normal(0, 0.02, 6)
                for snr, w in ((np.inf, 0.0), (10.0, 0.5), (0.0, 2.0)):
                    rows.append((c, fold, "rain", snr, soundscapes.condition_label(snr)))
                    emb.append(_unit(event + w * rain))
    items = pd.DataFrame(rows, columns=["target", "fold", "background", "snr_db", "condition"])
    text_bg = {"rain": np.tile(text[2], (3, 1))}
    audio_bg = {"rain": _unit(rain + rng.normal(0, 0.02, (4, 6)))}
    return items, np.array(emb), text, train, train_labels, train_folds, text_bg, audio_bg


def test_evaluate_conditions_adaptation_removes_the_background_bias():
    items, emb, text, train, y, f, text_bg, audio_bg = _noisy_world()
    long = robustness.evaluate_conditions(
        items,
        emb,
        text,
        train,
        y,
        f,
        text_backgrounds=text_bg,
        audio_backgrounds=audio_bg,
        taus=(0.2, 0.5),
        top_n=4,
    )
    assert list(long.columns) == [
        "condition",
        "snr_db",
        "mode",
        "adapt",
        "tau",
        "fold",
        "accuracy",
        "n",
    ]
    # 3 folds x 2 modes x (none + 2 kinds x 2 taus) x 3 conditions
    assert len(long) == 3 * 2 * 5 * 3
    assert (long["n"] == 4).all()
    table = robustness.snr_table(long, tau=0.5)
    assert list(table.columns) == ["clean", "10 dB", "0 dB"]
    assert list(table.index) == [
        "zs",
        "zs + text DA",
        "zs + audio DA",
        "tgap",
        "tgap + text DA",
        "tgap + audio DA",
    ]
    assert table.loc["zs", "clean"] == 1.0 and table.loc["zs", "10 dB"] == 1.0
    assert table.loc["zs", "0 dB"] == 0.0  # everything called rain
    assert table.loc["zs + text DA", "0 dB"] == 1.0
    assert table.loc["zs + audio DA", "0 dB"] == 1.0
    assert table.loc["zs + audio DA", "clean"] == 1.0  # no harm without background
    # tau 0.2 is too weak for the audio offset: 0.63 - 0.2 * 0.71 > 0.45
    weak = long[(long["mode"] == "zs") & (long["adapt"] == "audio") & (long["tau"] == 0.2)]
    assert weak.loc[weak["condition"] == "0 dB", "accuracy"].max() == 0.0
    std = robustness.snr_table(long, tau=0.5, stat="std")
    assert std.loc["zs + text DA", "0 dB"] == 0.0


def test_evaluate_conditions_trains_on_other_folds_only(monkeypatch):
    items, emb, text, train, y, f, _, _ = _noisy_world()
    seen = []
    real = adapt.prototypes

    def spy(mode, train_emb, train_labels, text_emb, top_n=35):
        seen.append((mode, train_emb.copy()))
        return real(mode, train_emb, train_labels, text_emb, top_n=top_n)

    monkeypatch.setattr(robustness.adapt, "prototypes", spy)
    robustness.evaluate_conditions(items, emb, text, train, y, f, modes=("tgap",), top_n=4)
    assert [m for m, _ in seen] == ["tgap"] * 3
    for fold, (_, pool) in zip([1, 2, 3], seen, strict=True):
        np.testing.assert_array_equal(pool, train[f != fold])


def test_evaluate_conditions_label_free_fits_on_other_folds_without_adaptation(monkeypatch):
    items, emb, text, train, y, f, text_bg, audio_bg = _noisy_world()
    seen = []
    real = robustness.label_free.fit

    def spy(pool_audio, text_emb, **kw):
        seen.append(np.array(pool_audio, copy=True))
        return real(pool_audio, text_emb, **kw)

    monkeypatch.setattr(robustness.label_free, "fit", spy)
    long = robustness.evaluate_conditions(
        items,
        emb,
        text,
        train,
        y,
        f,
        modes=("zs", "label_free"),
        text_backgrounds=text_bg,
        audio_backgrounds=audio_bg,
        taus=(0.5,),
    )
    assert len(seen) == 3
    for fold, pool in zip([1, 2, 3], seen, strict=True):
        np.testing.assert_array_equal(pool, train[f != fold])
    lf = long[long["mode"] == "label_free"]
    assert set(lf["adapt"]) == {"none"} and len(lf) == 3 * 3  # folds x conditions
    table = robustness.snr_table(long, tau=0.5)
    assert "label_free" in table.index
    assert "label_free" not in robustness.tau_table(long).index.get_level_values("method")


def test_evaluate_conditions_skips_nan_rows_and_checks_inputs():
    items, emb, text, train, y, f, text_bg, _ = _noisy_world()
    emb = emb.copy()
    emb[0] = np.nan  # a clean item of fold 1
    train = train.copy()
    train[0] = np.nan
    long = robustness.evaluate_conditions(items, emb, text, train, y, f, modes=("zs",))
    n = long.set_index(["fold", "condition"])["n"]
    assert n[(1, "clean")] == 3 and n[(1, "0 dB")] == 4 and n[(2, "clean")] == 4
    assert set(long["adapt"]) == {"none"}
    with pytest.raises(KeyError, match="no text background embeddings for \\['rain'\\]"):
        robustness.evaluate_conditions(
            items, emb, text, train, y, f, text_backgrounds={"park": text_bg["rain"]}
        )
    with pytest.raises(ValueError, match="item_emb"):
        robustness.evaluate_conditions(items, emb[:-1], text, train, y, f)


def test_tau_table_starts_from_the_unadapted_score():
    items, emb, text, train, y, f, text_bg, audio_bg = _noisy_world()
    long = robustness.evaluate_conditions(
        items,
        emb,
        text,
        train,
        y,
        f,
        modes=("zs",),
        text_backgrounds=text_bg,
        audio_backgrounds=audio_bg,
        taus=(0.2, 0.5, 0.8),
    )
    table = robustness.tau_table(long)
    assert list(table.columns) == ["0", "0.2", "0.5", "0.8"]
    assert list(table.index.get_level_values("method").unique()) == [
        "zs + text DA",
        "zs + audio DA",
    ]
    assert list(table.index.get_level_values("condition").unique()) == ["clean", "10 dB", "0 dB"]
    assert table.loc[("zs + text DA", "0 dB"), "0"] == 0.0
    assert table.loc[("zs + text DA", "0 dB"), "0.5"] == 1.0
    assert table.loc[("zs + audio DA", "clean"), "0"] == 1.0
    with pytest.raises(ValueError, match="no adapted rows"):
        robustness.tau_table(long[long["adapt"] == "none"])


def test_labels():
    assert soundscapes.condition_label(np.inf) == "clean"
    assert soundscapes.condition_label(6.0) == "6 dB"
    assert soundscapes.condition_label(-2.5) == "-2.5 dB"
    assert robustness.method_label("tgap", "none") == "tgap"
    assert robustness.method_label("zs", "audio") == "zs + audio DA"


def test_robustness_figures():
    items, emb, text, train, y, f, text_bg, audio_bg = _noisy_world()
    long = robustness.evaluate_conditions(
        items,
        emb,
        text,
        train,
        y,
        f,
        text_backgrounds=text_bg,
        audio_backgrounds=audio_bg,
        top_n=4,
    )
    fig = plots.accuracy_vs_snr(long, tau=0.5, chance=1 / 3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "10 dB", "0 dB"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "zs + audio DA" in legend and "chance" in legend and len(legend) == 7
    plt.close(fig)
    fig = plots.tau_sweep(long)
    assert len(fig.axes) == 3
    assert [a.get_title() for a in fig.axes] == ["clean", "10 dB", "0 dB"]
    assert len(fig.axes[0].get_lines()) == 4  # zs/tgap x text/audio
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="need 3 axes"):
        plots.tau_sweep(long, axes=axes)
    plt.close(fig)


# ------------------------------------------------------------------------------ with a model


def test_soundscapes_embed_and_evaluate_with_the_tiny_model(esc50, tiny_clap, tmp_path):
    from clap_helpers.embedding.loading import load_clap

    clips, classes = esc50
    enc = load_clap(tiny_clap, device="cpu", precision="fp32", cache_dir=tmp_path / "cache")
    bgs = robustness.background_table(clips, ["rain"], seed=0)
    fg = soundscapes.foreground_subset(clips, 4, ["rain"], seed=0)
    items = soundscapes.build_soundscapes(fg, bgs, [0], tmp_path / "scapes", duration_s=10.0)
    item_emb = enc.embed_audio(items["path"], batch_size=4, progress=False)
    assert item_emb.shape == (8, enc.dim) and np.isfinite(item_emb).all()
    np.testing.assert_allclose(np.linalg.norm(item_emb, axis=1), 1.0, rtol=1e-5)
    # a mixture is not its clean clip
    assert not np.allclose(item_emb[:4], item_emb[4:])
    adapt_rows = bgs[bgs["role"] == "adapt"]
    bg_emb = enc.embed_audio(adapt_rows["path"], batch_size=4, progress=False)
    text_bg, audio_bg = robustness.background_embeddings(bgs, enc.embed_text, bg_emb)
    assert text_bg["rain"].shape == (3, enc.dim)
    # the clean foregrounds (4 clips from 4 folds) are the training pool of the other folds
    clean = items.iloc[:4]
    text = enc.embed_text([f"This is a sound of {c}." for c in classes])
    long = robustness.evaluate_conditions(
        items,
        item_emb,
        text,
        item_emb[:4],
        clean["target"].to_numpy(),
        clean["fold"].to_numpy(),
        text_backgrounds=text_bg,
        audio_backgrounds=audio_bg,
        taus=(0.5,),
        top_n=1,
    )
    assert set(long["condition"]) == {"clean", "0 dB"}
    assert long["accuracy"].between(0, 1).all()
    assert long.groupby(["mode", "adapt", "condition"])["n"].sum().eq(4).all()
