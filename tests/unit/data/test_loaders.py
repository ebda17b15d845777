"""Loaders on every fixture dataset, stratified subsets, missing data, and the fixtures themselves."""

from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from clap_helpers.data import loaders as datasets
from clap_helpers.data.audio import AudioError, audio_info, load_audio
from clap_helpers.data.loaders import DatasetNotFoundError, load, stratified_subset
from clap_helpers.data.registry import RECORDS
from clap_helpers.devtools.fixtures import synthetic


def test_esc50(data_root):
    clips, classes = load("esc50", data_root)
    assert classes == sorted(synthetic.ESC50_CLASSES)
    assert len(clips) == len(classes) * 5 * synthetic.ESC50_CLIPS_PER_FOLD
    assert sorted(clips["fold"].unique()) == [1, 2, 3, 4, 5]
    assert (clips.groupby("label").size() == 5 * synthetic.ESC50_CLIPS_PER_FOLD).all()
    # ESC's own class index is kept, and our target indexes the sorted class list.
    for _, row in clips.iterrows():
        assert row["class_id"] == synthetic.ESC50_CLASSES[row["label"]][0]
        assert classes[row["target"]] == row["label"]
        assert row["filename"].endswith(f"-{row['class_id']}.wav")
        assert row["filename"].startswith(f"{row['fold']}-")
    # Clips of one source recording share a fold.
    assert (clips.groupby("src_file")["fold"].nunique() == 1).all()
    info = audio_info(clips["path"].iloc[0])
    assert (info["samplerate"], info["channels"], info["duration"]) == (44100, 1, 5.0)


def test_urbansound8k_is_heterogeneous(data_root):
    clips, classes = load("urbansound8k", data_root)
    assert classes == sorted(synthetic.US8K_CLASSES)
    assert sorted(clips["fold"].unique()) == list(range(1, 11))
    infos = [audio_info(p) for p in clips["path"]]
    assert len({i["samplerate"] for i in infos}) >= 6
    assert {i["channels"] for i in infos} == {1, 2}
    assert {"PCM_U8", "PCM_16", "PCM_24", "FLOAT"} <= {i["subtype"] for i in infos}
    assert max(i["duration"] for i in infos) <= 4.0 + 1e-6
    assert min(i["duration"] for i in infos) < 4.0
    assert all(f"/fold{f}/" in p for f, p in zip(clips["fold"], clips["path"], strict=True))
    for p in clips["path"]:  # every one of them decodes to 48 kHz mono
        assert load_audio(p).ndim == 1


def test_fma_small_reads_two_level_header(data_root):
    raw = pd.read_csv(data_root / "fma_metadata" / "tracks.csv", index_col=0, header=[0, 1])
    assert ("track", "genre_top") in raw.columns and raw.index.name == "track_id"
    clips, classes = load("fma_small", data_root)
    assert classes == sorted(synthetic.FMA_GENRES)
    # medium-only tracks are listed in tracks.csv but not part of fma_small
    assert len(clips) == (raw[("set", "subset")] == "small").sum() < len(raw)
    assert set(clips["fold"]) <= {"training", "validation", "test"}
    for tid, path in zip(clips["track_id"], clips["path"], strict=True):
        assert path.endswith(f"fma_small/{tid:06d}"[:-3] + f"/{tid:06d}.mp3")


def test_fma_fixture_has_a_truncated_track(data_root):
    clips, _ = load("fma_small", data_root)
    failures = []
    for p in clips["path"]:
        try:
            assert load_audio(p).size > 10 * 48000  # longer than one CLAP window
        except AudioError as exc:
            failures.append(exc.reason)
    assert len(failures) == 1 and failures[0].startswith("truncated")


def test_audioset_multilabel(data_root):
    clips, classes = load("audioset", data_root)
    assert classes == sorted(synthetic.AUDIOSET_CLASSES)
    assert set(clips["fold"]) == {"balanced_train", "eval"}
    assert all(row["label"] == row["labels"][0] for _, row in clips.iterrows())
    assert (clips["labels"].map(len) == 2).sum() == len(classes)
    matrix = datasets.label_matrix(clips, classes)
    assert matrix.shape == (len(clips), len(classes))
    assert matrix.sum() == clips["labels"].map(len).sum()
    assert matrix[np.arange(len(clips)), clips["target"]].all()
    assert audio_info(clips["path"].iloc[0])["duration"] == 10.0


def test_audioset_class_only_seen_as_second_label(tmp_path, data_root):
    shutil.copytree(data_root / "audioset", tmp_path / "audioset")
    manifest = tmp_path / "audioset" / "manifest.csv"
    table = pd.read_csv(manifest)
    table.loc[0, "labels"] = table.loc[0, "labels"] + ";Pigeon, dove"
    table.to_csv(manifest, index=False)
    clips, classes = load("audioset", tmp_path)
    assert "Pigeon, dove" in classes and "Pigeon, dove" not in set(clips["label"])
    matrix = datasets.label_matrix(clips, classes)
    assert matrix[:, classes.index("Pigeon, dove")].sum() == 1


def test_label_matrix_single_label(data_root):
    clips, classes = load("esc50", data_root)
    matrix = datasets.label_matrix(clips, classes)
    assert (matrix.sum(axis=1) == 1).all()
    assert (matrix.argmax(axis=1) == clips["target"]).all()


@pytest.mark.parametrize("name", datasets.NAMES)
def test_subset_is_stratified_deterministic_and_nested(data_root, name):
    clips, _ = load(name, data_root)
    n = len(clips) // 2
    a, _ = load(name, data_root, n_samples=n, seed=3)
    b, _ = load(name, data_root, n_samples=n, seed=3)
    assert len(a) == n
    pd.testing.assert_frame_equal(a, b)
    # class shares stay within one clip of the full set's proportions
    share = clips["label"].value_counts() * n / len(clips)
    got = a["label"].value_counts().reindex(share.index, fill_value=0)
    assert (np.abs(got - share) <= 1).all()
    smaller, _ = load(name, data_root, n_samples=n // 2, seed=3)
    assert set(smaller["path"]) <= set(a["path"])
    other, _ = load(name, data_root, n_samples=n, seed=4)
    assert set(other["path"]) != set(a["path"])
    assert list(a.index) == sorted(a.index)  # dataset order kept


def test_subset_edge_cases():
    df = pd.DataFrame({"label": list("aabbbc"), "x": range(6)})
    assert len(stratified_subset(df, 100)) == 6
    assert len(stratified_subset(df, 0)) == 0
    assert set(stratified_subset(df, 3)["label"]) == {"a", "b", "c"}
    with pytest.raises(ValueError):
        stratified_subset(df, -1)


@pytest.mark.parametrize("name", datasets.NAMES)
def test_missing_dataset_names_the_download_command(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match=f"bash dataset.sh {name} --dest"):
        load(name, tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="esc50"):
        load("gtzan", ".")


def test_missing_audio_files_are_named_and_kept(tmp_path, data_root):
    shutil.copytree(data_root / "ESC-50-master", tmp_path / "ESC-50-master")
    clips, _ = load("esc50", tmp_path)
    gone = clips["path"].iloc[7]
    (tmp_path / "ESC-50-master" / "audio" / gone.rsplit("/", 1)[1]).unlink()
    with pytest.warns(UserWarning, match=r"1 of 50 audio files .* missing \(.*" + gone[-15:]):
        again, _ = load("esc50", tmp_path)
    assert len(again) == len(clips)


def test_class_counts_and_durations(data_root):
    clips, _ = load("urbansound8k", data_root)
    table = datasets.class_counts(clips)
    assert table["total"].sum() == len(clips)
    assert list(table.columns[:-1]) == list(range(1, 11))
    dur = datasets.durations(clips, progress=False)
    assert dur.max() == pytest.approx(4.0) and dur.min() > 0.5


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_fixtures_are_deterministic(tmp_path):
    for seed, name in [(0, "a"), (0, "b"), (1, "c")]:
        (tmp_path / name).mkdir()
        synthetic._make_esc50(tmp_path / name, seed)
        synthetic._make_audioset(tmp_path / name, seed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_make_datasets_reuses_a_complete_build(data_root):
    stamp = data_root / ".fixtures.json"
    before = stamp.stat().st_mtime_ns
    synthetic.make_datasets(data_root)
    assert stamp.stat().st_mtime_ns == before


def _spectral_features(path: str) -> np.ndarray:
    """Mean log power in 20 bands from 0 to 3.75 kHz: a crude but fixed audio descriptor.

    Only the band that every file holds (UrbanSound8K has 8 kHz files) is used.
    """
    x = load_audio(path)
    frames = x[: x.size // 1024 * 1024].reshape(-1, 1024) * np.hanning(1024)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)[:80]
    return np.log(power.reshape(20, 4).mean(axis=1) + 1e-10)


@pytest.mark.parametrize("name", ["esc50", "urbansound8k"])
def test_fixture_classes_sound_different(data_root, name):
    """Leave-one-fold-out nearest class mean separates the classes; shuffled labels do not."""
    clips, _ = load(name, data_root)
    feats = np.stack([_spectral_features(p) for p in clips["path"]])
    labels = clips["target"].to_numpy()

    def accuracy(y):
        correct = 0
        for fold in clips["fold"].unique():
            test = (clips["fold"] == fold).to_numpy()
            means = np.stack([feats[~test & (y == c)].mean(axis=0) for c in np.unique(y)])
            dist = ((feats[test, None, :] - means[None]) ** 2).sum(axis=2)
            correct += (dist.argmin(axis=1) == y[test]).sum()
        return correct / len(y)

    assert accuracy(labels) >= 0.9
    assert accuracy(np.random.default_rng(0).permutation(labels)) < 0.6


@pytest.mark.parametrize("bad", [0, -3, 2.5, "abc", True, float("nan")])
def test_n_samples_must_be_a_positive_int(data_root, bad):
    with pytest.raises(ValueError, match=r"n_samples must be a positive whole number .* or None"):
        load("esc50", data_root, n_samples=bad)
    assert len(load("esc50", data_root, n_samples=np.int64(3))[0]) == 3


# the column to remove and the whole-number (or number) column to blank, per dataset
DAMAGE = {
    "esc50": ("category", "fold"),
    "urbansound8k": ("class", "classID"),
    "fma_small": ("set/split", ""),  # "" = the track_id index column
    "audioset": ("split", "start_seconds"),
}


def _column(rows: list[list[str]], name: str, header_rows: int) -> int:
    """Index of column ``name`` ("a/b" for a two-level header) in CSV ``rows``."""
    if name == "":
        return 0
    keys = ["/".join(r[j] for r in rows[:header_rows]) for j in range(len(rows[0]))]
    return keys.index(name)


@pytest.mark.parametrize("case", ["missing column", "empty", "not utf-8", "empty number"])
@pytest.mark.parametrize("name", datasets.NAMES)
def test_damaged_metadata_names_the_csv_and_the_fix(tmp_path, data_root, name, case):
    import csv

    meta = tmp_path / RECORDS[name].metadata_file
    meta.parent.mkdir(parents=True)
    shutil.copy(data_root / RECORDS[name].metadata_file, meta)
    header_rows = 2 if name == "fma_small" else 1
    first_data = 3 if name == "fma_small" else 1
    with open(meta, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    drop, blank = DAMAGE[name]
    if case == "missing column":
        j = _column(rows, drop, header_rows)
        rows = [r[:j] + r[j + 1 :] for r in rows]
        expected = "missing"
    elif case == "empty number":
        rows[first_data + 1][_column(rows, blank, header_rows)] = ""
        expected = f"empty or not .*numbers \\(first on line {first_data + 2}: empty\\)"
    if case in ("missing column", "empty number"):
        with open(meta, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
    elif case == "empty":
        meta.write_bytes(b"")
        expected = "the file is empty"
    else:
        text = meta.read_bytes()
        meta.write_bytes(text[:-20] + "é".encode("latin-1") + text[-20:])
        expected = "not UTF-8"
    with pytest.raises(datasets.MetadataError) as err:
        load(name, tmp_path)
    message = str(err.value)
    assert str(meta) in message and f"bash dataset.sh {name} --dest {tmp_path}" in message
    assert re.search(expected, message), message
    assert "\n" not in message and isinstance(err.value, DatasetNotFoundError)
    # the app and the notebooks skip it with that message, like a dataset not downloaded
    assert datasets.load_available([name], tmp_path)[1] == {name: message}
