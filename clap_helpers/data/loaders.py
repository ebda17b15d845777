"""Load ESC-50, UrbanSound8K, FMA-small and the AudioSet subset from their on-disk layouts.

Every loader returns ``(clips, classes)``: ``clips`` is a pandas DataFrame with one row per clip and at
least these columns

=========  =====================================================================================
path       absolute path of the audio file (str)
label      class name as the dataset spells it (``chirping_birds``, ``dog_bark``, ``Hip-Hop``,
           ``Baby cry, infant cry``); for AudioSet the clip's first label from the class list
target     index of ``label`` in ``classes`` (int)
fold       ESC-50 1-5 and UrbanSound8K 1-10 (int); FMA ``training``/``validation``/``test`` and
           AudioSet ``balanced_train``/``eval`` (str)
dataset    the loader's name (``esc50`` ...)
labels     AudioSet only: list of all the clip's classes (multi-label)
=========  =====================================================================================

and ``classes`` is the sorted list of class names. The same code reads the real downloads
(``bash dataset.sh NAME``) and the synthetic fixtures of :mod:`clap_helpers.devtools.fixtures`.

Used by: every notebook (01_download to 10_sound_search) and ``make demo``.
"""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..diagnostics import ClapWarning, bars_off
from ..paths import resolve
from . import registry

__all__ = [
    "audio_folders",
    "check_n_samples",
    "class_counts",
    "DatasetNotFoundError",
    "download_command",
    "durations",
    "label_matrix",
    "load",
    "load_available",
    "MetadataError",
    "NAMES",
    "stratified_subset",
]

NAMES = registry.NAMES  # canonical dataset names, in the registry's order


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not (fully) on disk; the message names the command that downloads it."""


class MetadataError(DatasetNotFoundError):
    """A dataset's metadata CSV is damaged (empty, not UTF-8, a column or value missing); the
    message names the file and the command that downloads it again. A subclass of
    :class:`DatasetNotFoundError`, so :func:`load_available` and the app skip such a dataset
    with its message."""


def load(
    name: str,
    root: str | os.PathLike = "downloads",
    n_samples: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Load dataset ``name`` from ``root`` (the ``--dest`` of ``dataset.sh``).

    Args:
        name: one of ``esc50``, ``urbansound8k``, ``fma_small``, ``audioset``.
        root: folder holding the dataset's top folder (e.g. ``downloads/ESC-50-master``); a
            relative path is looked up from the current folder upwards
            (:func:`clap_helpers.paths.resolve`), so ``"downloads"`` works from the repository
            root (papermill) and from ``notebooks/`` (JupyterLab).
        n_samples: keep a deterministic class-stratified subset of this many clips, a positive
            int (see :func:`stratified_subset`); ``None`` keeps all.
        seed: seed of the subset choice.

    Returns:
        (clips, classes): the DataFrame described in the module docstring, rows in the
        dataset's own order, and the sorted class names.

    Rows whose audio file lies outside the dataset's audio folders (:func:`audio_folders`; a
    ``..`` in the metadata, or a clip that is a link to a file elsewhere) are left out with one
    warning that counts and names them.

    Raises:
        DatasetNotFoundError: the metadata file is missing; the message says how to download.
        MetadataError: the metadata file is damaged; the message names it and how to download.
        ValueError: unknown ``name``, or ``n_samples`` not a positive int or None.
    """
    _check_name(name)
    n_samples = check_n_samples(n_samples)
    root = resolve(root).resolve()
    meta = root / registry.RECORDS[name].metadata_file
    if not meta.is_file():
        raise DatasetNotFoundError(
            f"{name} not found: {meta} does not exist. Download it with "
            f"`{download_command(name, root)}` (or pass the folder that holds it as root)."
        )
    clips = _LOADERS[name](root, meta)
    clips = _drop_outside(name, clips, audio_folders(name, root))
    # every class a clip carries, not only primary labels (an AudioSet class may only ever be a
    # clip's second label)
    every = clips["labels"].explode() if "labels" in clips else clips["label"]
    classes = sorted(every.dropna().unique())
    clips["target"] = clips["label"].map({c: i for i, c in enumerate(classes)}).astype(int)
    clips.insert(0, "dataset", name)
    clips = clips.reset_index(drop=True)
    _warn_missing_files(name, clips)
    if n_samples is not None:
        clips = stratified_subset(clips, n_samples, seed=seed)
    first = ["path", "label", "target", "fold", "dataset"]
    return clips[first + [c for c in clips.columns if c not in first]], classes


def download_command(name: str, dest: str | os.PathLike = "downloads") -> str:
    """The shell command that downloads dataset ``name`` into ``dest``, e.g.
    ``bash dataset.sh esc50 --dest downloads`` (run from the repository root)."""
    _check_name(name)
    return f"bash dataset.sh {name} --dest {shlex.quote(str(dest))}"


def audio_folders(name: str, root: str | os.PathLike = "downloads") -> list[Path]:
    """The folders that hold dataset ``name``'s audio under the data ``root``, resolved (links
    followed), e.g. ``[.../downloads/ESC-50-master/audio]``. Every clip :func:`load` returns lies
    inside one of them; the search app serves files from these folders only."""
    _check_name(name)
    base = resolve(root).resolve()
    return [(base / folder).resolve() for folder in registry.RECORDS[name].audio_folders]


def _check_name(name: str) -> None:
    if name not in registry.RECORDS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")


def check_n_samples(n_samples) -> int | None:
    """``n_samples`` as an int if it is a positive whole number, None if None; else ValueError."""
    if n_samples is None:
        return None
    ok = isinstance(n_samples, (int, np.integer)) and not isinstance(n_samples, (bool, np.bool_))
    if not ok or n_samples < 1:
        raise ValueError(
            f"n_samples must be a positive whole number of clips (e.g. 200), or None for all "
            f"clips; got {n_samples!r}"
        )
    return int(n_samples)


def load_available(
    names: Iterable[str],
    root: str | os.PathLike = "downloads",
    n_samples: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, tuple[pd.DataFrame, list[str]]], dict[str, str]]:
    """Load every dataset of ``names`` that is on disk under ``root``.

    Returns ``(loaded, missing)``: ``loaded[name] = (clips, classes)`` as :func:`load` gives
    them (same ``n_samples``/``seed`` subset), in the order of ``names``; ``missing[name]`` is the
    loader's message, which names the ``bash dataset.sh`` command. Unknown names raise
    ``ValueError``. Used by: notebooks 01, 07 and 10 and the web app.
    """
    loaded, missing = {}, {}
    for name in dict.fromkeys(names):
        try:
            loaded[name] = load(name, root, n_samples, seed)
        except DatasetNotFoundError as exc:
            missing[name] = str(exc)
    return loaded, missing


def _load_esc50(root: Path, meta: Path) -> pd.DataFrame:
    df = _read_metadata(
        "esc50",
        root,
        meta,
        ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
        ints=["fold", "target"],
    )
    audio = root / registry.RECORDS["esc50"].audio_folders[0]
    return pd.DataFrame(
        {
            "path": [str(audio / f) for f in df["filename"]],
            "label": df["category"].astype(str),
            "fold": df["fold"].astype(int),
            "filename": df["filename"],
            "class_id": df["target"].astype(int),
            "esc10": df["esc10"].astype(bool),
            "src_file": df["src_file"],
            "take": df["take"],
        }
    )


def _load_urbansound8k(root: Path, meta: Path) -> pd.DataFrame:
    df = _read_metadata(
        "urbansound8k",
        root,
        meta,
        ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
        ints=["fold", "classID", "salience"],
        floats=["start", "end"],
    )
    audio = root / registry.RECORDS["urbansound8k"].audio_folders[0]
    return pd.DataFrame(
        {
            "path": [
                str(audio / f"fold{fold}" / f)
                for fold, f in zip(df["fold"], df["slice_file_name"], strict=True)
            ],
            "label": df["class"].astype(str),
            "fold": df["fold"].astype(int),
            "filename": df["slice_file_name"],
            "class_id": df["classID"].astype(int),
            "fsID": df["fsID"],
            "start": df["start"].astype(float),
            "end": df["end"].astype(float),
            "salience": df["salience"].astype(int),
        }
    )


def _load_fma_small(root: Path, meta: Path) -> pd.DataFrame:
    tracks = _read_metadata(
        "fma_small",
        root,
        meta,
        [("set", "subset"), ("set", "split"), ("track", "genre_top")],
        index_col=0,
        header=[0, 1],
    )
    small = tracks[tracks[("set", "subset")] == "small"]
    audio = root / registry.RECORDS["fma_small"].audio_folders[0]
    track_ids = pd.Series(tracks.index, name="track_id")
    _check_numbers("fma_small", root, meta, track_ids, integer=True, header_lines=3)
    ids = small.index.astype(int)
    return pd.DataFrame(
        {
            "path": [str(audio / f"{tid:06d}"[:3] / f"{tid:06d}.mp3") for tid in ids],
            "label": small[("track", "genre_top")].astype(str).to_numpy(),
            "fold": small[("set", "split")].astype(str).to_numpy(),
            "track_id": ids.to_numpy(),
        }
    )


def _load_audioset(root: Path, meta: Path) -> pd.DataFrame:
    df = _read_metadata(
        "audioset",
        root,
        meta,
        ["path", "YTID", "start_seconds", "labels", "split"],
        floats=["start_seconds"],
        dtype={"YTID": str, "labels": str},
    )
    if df["path"].isna().any():
        raise _metadata_error(
            "audioset", root, meta, f"column 'path' is empty on line {_line(df['path'].isna())}"
        )
    labels = [
        [x for x in str(s).split(registry.RECORDS["audioset"].audioset.label_sep) if x]
        if isinstance(s, str)
        else []
        for s in df["labels"]
    ]
    keep = np.array([len(x) > 0 for x in labels])
    if not keep.all():
        warnings.warn(
            f"audioset: {int((~keep).sum())} manifest rows in {meta} have no label from the class "
            "list and are left out",
            ClapWarning,
            stacklevel=3,
        )
    df = df[keep]
    labels = [x for x, k in zip(labels, keep, strict=True) if k]
    return pd.DataFrame(
        {
            "path": [str(meta.parent / p) for p in df["path"]],
            "label": [x[0] for x in labels],
            "fold": df["split"].astype(str).to_numpy(),
            "labels": labels,
            "ytid": df["YTID"].to_numpy(),
            "start_seconds": df["start_seconds"].astype(float).to_numpy(),
        }
    )


def _read_metadata(
    name: str,
    root: Path,
    meta: Path,
    columns: list,
    ints: Iterable[str] = (),
    floats: Iterable[str] = (),
    **read_kw,
) -> pd.DataFrame:
    """``pd.read_csv(meta)`` checked: readable UTF-8, not empty, has ``columns``, no empty or
    non-numeric value in ``ints`` (whole numbers) and ``floats``; else :class:`MetadataError`."""
    try:
        df = pd.read_csv(meta, encoding="utf-8", **read_kw)
    except pd.errors.EmptyDataError:
        raise _metadata_error(name, root, meta, "the file is empty") from None
    except UnicodeDecodeError as exc:
        raise _metadata_error(name, root, meta, f"not UTF-8 text ({exc.reason})") from None
    except (pd.errors.ParserError, ValueError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise _metadata_error(name, root, meta, f"not a valid CSV ({detail})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing)
        raise _metadata_error(name, root, meta, f"column(s) {shown} missing")
    if df.empty:
        raise _metadata_error(name, root, meta, "it has a header but no rows")
    for col in ints:
        _check_numbers(name, root, meta, df[col], integer=True)
    for col in floats:
        _check_numbers(name, root, meta, df[col], integer=False)
    return df


def _check_numbers(
    name: str, root: Path, meta: Path, column: pd.Series, integer: bool, header_lines: int = 1
) -> None:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.astype(float))
    if integer:
        bad |= values.fillna(0) % 1 != 0
    if bad.any():
        first = column[bad.to_numpy()].iloc[0]
        shown = "empty" if pd.isna(first) else repr(str(first))
        kind = "whole numbers" if integer else "numbers"
        raise _metadata_error(
            name,
            root,
            meta,
            f"column {column.name!r} has {int(bad.sum())} value(s) that are empty or not {kind} "
            f"(first on line {_line(bad, header_lines)}: {shown})",
        )


def _line(mask: pd.Series, header_lines: int = 1) -> int:
    """The CSV line (the first line is 1) of the first True row of ``mask``."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + header_lines + 1


def _metadata_error(name: str, root: Path, meta: Path, detail: str) -> MetadataError:
    folder = registry.RECORDS[name].metadata_folder
    fix = f"download it again with `{download_command(name, root)}`"
    if folder is not None:
        fix = f"delete {root / folder} and " + fix
    return MetadataError(
        f"{name}: the metadata file {meta} is damaged: {detail}. To fix it, {fix}."
    )


def _drop_outside(name: str, clips: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """``clips`` without the rows whose path, resolved, is outside every folder of ``folders``;
    one warning counts and names them."""
    inside = np.array(
        [any(Path(os.path.realpath(p)).is_relative_to(f) for f in folders) for p in clips["path"]],
        dtype=bool,
    )
    if inside.all():
        return clips
    bad = clips["path"][~inside].tolist()
    shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
    warnings.warn(
        f"{name}: {len(bad)} of {len(clips)} clips lie outside {', '.join(map(str, folders))} "
        f"(a '..' in the metadata, or a link to a file elsewhere) and are left out: {shown}",
        ClapWarning,
        stacklevel=3,
    )
    return clips[inside]


_LOADERS: dict[str, Callable[[Path, Path], pd.DataFrame]] = {
    "esc50": _load_esc50,
    "urbansound8k": _load_urbansound8k,
    "fma_small": _load_fma_small,
    "audioset": _load_audioset,
}


def _warn_missing_files(name: str, clips: pd.DataFrame) -> None:
    """Warn (naming a few) when metadata rows point at files that are not on disk.

    The rows stay: embedding turns them into NaN rows that the metrics count as failures, so a
    missing file is reported and counted rather than silently dropped.
    """
    missing = [p for p in clips["path"] if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        warnings.warn(
            f"{name}: {len(missing)} of {len(clips)} audio files listed in the metadata are "
            f"missing ({shown}); they will be counted as failed clips. Re-run "
            f"`bash dataset.sh {name}` if the download was interrupted.",
            ClapWarning,
            stacklevel=3,
        )


def stratified_subset(
    clips: pd.DataFrame, n_samples: int, seed: int = 0, by: str = "label"
) -> pd.DataFrame:
    """A deterministic subset of ``n_samples`` rows with class proportions kept.

    Each class's rows are shuffled with ``seed``; a row's priority is its rank within its class
    divided by the class size, and the ``n_samples`` rows of lowest priority are kept. So every
    class gets one clip before any class gets a second, each class then gets its share (a
    balanced dataset stays balanced), the same seed gives the same rows, and a smaller subset is
    contained in a larger one. Rows keep their original order.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    if n_samples >= len(clips):
        return clips.copy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    shuffled = clips.iloc[order]
    rank = shuffled.groupby(by, sort=False).cumcount().to_numpy()
    size = shuffled.groupby(by, sort=False)[by].transform("size").to_numpy()
    priority = rank / size
    chosen = order[np.argsort(priority, kind="stable")[:n_samples]]
    return clips.iloc[np.sort(chosen)].copy()


def class_counts(clips: pd.DataFrame) -> pd.DataFrame:
    """Clips per class (rows) and fold (columns), with a ``total`` column. For notebook 01."""
    table = pd.crosstab(clips["label"], clips["fold"])
    table["total"] = table.sum(axis=1)
    return table


def durations(clips: pd.DataFrame, progress: bool = True) -> pd.Series:
    """Duration in seconds of each clip, read from file headers (NaN for unreadable files)."""
    from tqdm.auto import tqdm

    from .audio import AudioError, audio_info

    out = []
    for p in tqdm(clips["path"], desc="reading headers", disable=bars_off(progress), unit="file"):
        try:
            out.append(audio_info(p)["duration"])
        except AudioError:
            out.append(float("nan"))
    return pd.Series(out, index=clips.index, name="duration_s")


def label_matrix(clips: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Multi-hot matrix (N, C) bool of each clip's ``labels`` (AudioSet) or its single ``label``."""
    index = {c: i for i, c in enumerate(classes)}
    column = clips["labels"] if "labels" in clips else clips["label"].map(lambda x: [x])
    out = np.zeros((len(clips), len(classes)), dtype=bool)
    for row, labels in enumerate(column):
        for label in labels:
            out[row, index[label]] = True
    return out
