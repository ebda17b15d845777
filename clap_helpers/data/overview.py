"""Dataset overviews and result summaries for the exploration notebooks.

What the other modules do not cover and notebooks 01, 03 and 04 need:

- 01_download: which of the four datasets are on disk and how to get the others
  (:func:`download_plan`, :func:`fetch_missing`; loading is
  :func:`clap_helpers.data.loaders.load_available`), a per-dataset summary of
  clips, classes, folds and durations (:func:`clip_durations`, :func:`overview_table`), class
  balance tables and figures (:func:`class_balance`, :func:`balance_summary`,
  :func:`class_balance_figure`, :func:`duration_figure`), and an example
  clip with the log-mel the CLAP front-end feeds the model (:func:`pick_example`,
  :func:`clap_logmel`).
- 03_augmented_labels: one evaluation per prompt strategy that also handles the multi-label
  AudioSet subset (:func:`evaluate_strategies`), the prompts side by side
  (:func:`prompt_examples`) and the classes that gain and lose most (:func:`gains_and_losses`).
- 04_urbansound8k_topk: the mix of file formats (:func:`audio_formats`), the published numbers to
  compare with (:func:`published_comparison`), the most frequent confusions
  (:func:`top_confusions`) and per-class top-k accuracy (:func:`per_class_topk`).

A missing dataset is never an error here: the loaders' :class:`DatasetNotFoundError` is caught
and reported together with its ``bash dataset.sh NAME`` command.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..diagnostics import bars_off
from ..paths import resolve
from . import loaders as datasets
from . import registry

__all__ = [
    "audio_formats",
    "class_balance",
    "balance_summary",
    "clip_durations",
    "download_plan",
    "fetch_missing",
    "on_disk",
    "overview_table",
    "pick_example",
]


# ---------------------------------------------------------------------------- what is on disk
def on_disk(name: str, data_root: str | os.PathLike = "downloads") -> bool:
    """True when dataset ``name``'s metadata file, the one the loader reads, exists under
    ``data_root`` (01_download). Audio files are not checked here (see :func:`overview_table`)."""
    root = resolve(data_root)
    return (root / registry.record(name).metadata_file).is_file()


def download_plan(
    data_root: str | os.PathLike = "downloads", names: Iterable[str] = datasets.NAMES
) -> pd.DataFrame:
    """One row per dataset (index "dataset"), for 01_download: ``on_disk`` (bool), ``contents``,
    ``size`` (of the download) and ``command`` (the ``bash dataset.sh`` line for ``data_root``)."""
    rows = {
        name: {
            "on_disk": on_disk(name, data_root),
            "contents": registry.RECORDS[name].contents,
            "size": registry.RECORDS[name].download_size,
            "command": datasets.download_command(name, data_root),
        }
        for name in names
    }
    columns = ["on_disk", "contents", "size", "command"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "dataset"
    return table


def fetch_missing(
    names: Iterable[str],
    data_root: str | os.PathLike = "downloads",
    download: bool = False,
    fetch: Callable[..., Any] | None = None,
) -> dict[str, str]:
    """Status of each dataset, downloading the missing ones when ``download`` (01_download).

    Returns ``{name: status}``: ``"on disk"``; ``"missing: <command>"`` (``download`` is False);
    ``"downloaded"``; or ``"download failed: <reason>"`` (a :class:`DownloadError` or
    ``OSError`` is reported, not raised, so the other datasets still get their turn).
    ``fetch(name, dest=...)`` defaults to :func:`clap_helpers.data.download.fetch`; the destination
    is ``data_root`` resolved like the loaders do (:func:`clap_helpers.paths.resolve`)."""
    from . import download as dl

    fetch = fetch or dl.fetch
    status = {}
    for name in names:
        if on_disk(name, data_root):
            status[name] = "on disk"
        elif not download:
            status[name] = f"missing: {datasets.download_command(name, data_root)}"
        else:
            try:
                fetch(name, dest=resolve(data_root))
            except (dl.DownloadError, OSError) as exc:
                status[name] = f"download failed: {exc}"
            else:
                ok = on_disk(name, data_root)
                status[name] = "downloaded" if ok else "download failed: metadata still missing"
    return status


# -------------------------------------------------------------------------------- summaries
def clip_durations(
    loaded: Mapping[str, tuple[pd.DataFrame, Sequence[str]]],
    n_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, pd.Series]:
    """Clip durations in seconds per dataset, read from the file headers (01_download).

    ``{name: Series}`` from :func:`clap_helpers.data.loaders.durations` (index = the clips' index,
    NaN for an unreadable header). With ``n_samples``, only a class-stratified subset of that
    many clips per dataset is read (:func:`clap_helpers.data.loaders.stratified_subset`, ``seed``):
    reading 8000 MP3 headers takes a while."""
    out = {}
    for name, (clips, _) in loaded.items():
        if n_samples is not None:
            clips = datasets.stratified_subset(clips, n_samples, seed=seed)
        out[name] = datasets.durations(clips, progress=progress)
    return out


def overview_table(
    loaded: Mapping[str, tuple[pd.DataFrame, Sequence[str]]],
    durations: Mapping[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """One row per loaded dataset (index "dataset"), for 01_download.

    Columns: ``clips``, ``classes``, ``folds`` (distinct fold/split values), ``files_missing``
    (rows whose audio file is not on disk), ``multi_label`` (clips with more than one label; 0
    for single-label datasets). With ``durations`` (from :func:`clip_durations`: seconds, NaN =
    unreadable header, possibly of a subset of the clips) also ``headers_read``, ``unreadable``, ``min_s``,
    ``median_s``, ``mean_s``, ``max_s`` and ``total_h`` = mean duration x clips / 3600 (exact
    when every header was read, an estimate from the subset otherwise)."""
    rows = {}
    for name, (clips, classes) in loaded.items():
        row: dict[str, float] = {
            "clips": len(clips),
            "classes": len(classes),
            "folds": int(clips["fold"].nunique()),
            "files_missing": int(sum(not os.path.isfile(p) for p in clips["path"])),
            "multi_label": int((clips["labels"].map(len) > 1).sum()) if "labels" in clips else 0,
        }
        d = None if durations is None else durations.get(name)
        if d is not None:
            ok = pd.Series(d, dtype=float).dropna()
            stats = ok.describe() if len(ok) else None
            row.update(
                headers_read=len(ok),
                unreadable=int(len(d) - len(ok)),
                min_s=float(stats["min"]) if stats is not None else math.nan,
                median_s=float(stats["50%"]) if stats is not None else math.nan,
                mean_s=float(stats["mean"]) if stats is not None else math.nan,
                max_s=float(stats["max"]) if stats is not None else math.nan,
                total_h=float(ok.mean() * len(clips) / 3600) if len(ok) else math.nan,
            )
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "dataset"
    return table


def class_balance(clips: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Clips per class (index "class", in ``classes`` order, default sorted labels), for 01.

    Columns: ``clips`` (clips whose primary ``label`` is the class), ``tagged`` (clips carrying
    the class among their ``labels``: more than ``clips`` only for multi-label AudioSet) and
    ``share`` (``clips`` / all clips)."""
    if classes is None:
        classes = sorted(clips["label"].unique())
    primary = clips["label"].value_counts()
    if "labels" in clips:
        tagged = clips["labels"].explode().value_counts()
    else:
        tagged = primary
    table = pd.DataFrame(
        {
            "clips": [int(primary.get(c, 0)) for c in classes],
            "tagged": [int(tagged.get(c, 0)) for c in classes],
        },
        index=pd.Index(list(classes), name="class"),
    )
    table["share"] = table["clips"] / max(len(clips), 1)
    return table


def balance_summary(balances: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """How balanced each dataset is (01_download): index "dataset", columns ``classes``,
    ``min_clips`` and ``smallest`` (class), ``max_clips`` and ``largest``, ``imbalance``
    (max / min; inf when a class has no clip). ``balances``: ``{name: class_balance(...)}``,
    counted on the primary label (``clips``)."""
    rows = {}
    for name, table in balances.items():
        counts = table["clips"]
        if not len(counts):
            continue
        lo, hi = int(counts.min()), int(counts.max())
        rows[name] = {
            "classes": len(counts),
            "min_clips": lo,
            "smallest": str(counts.idxmin()),
            "max_clips": hi,
            "largest": str(counts.idxmax()),
            "imbalance": hi / lo if lo else math.inf,
        }
    columns = ["classes", "min_clips", "smallest", "max_clips", "largest", "imbalance"]
    out = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    out.index.name = "dataset"
    return out


# ------------------------------------------------------------------------------ example clip
def pick_example(
    loaded: Mapping[str, tuple[pd.DataFrame, Sequence[str]]],
    dataset: str | None = None,
    seed: int = 0,
    max_tries: int = 20,
) -> dict[str, Any] | None:
    """A decodable example clip for 01_download, or None when nothing is loaded.

    From ``dataset`` (default: the first of ``loaded``) the clips are tried in a ``seed``-shuffled
    order until one decodes (at most ``max_tries``). Returns ``{"dataset", "label", "fold",
    "path", "waveform" ((T,) float32 mono at 48 kHz), "sr" (48000), "duration_s"}``.
    Raises ``ValueError`` if none of the tried files decodes."""
    from .audio import CLAP_SAMPLE_RATE, AudioError, load_audio

    if not loaded:
        return None
    name = dataset if dataset is not None else next(iter(loaded))
    clips = loaded[name][0]
    order = np.random.default_rng(seed).permutation(len(clips))[:max_tries]
    reasons = []
    for i in order:
        row = clips.iloc[int(i)]
        try:
            wave = load_audio(row["path"], CLAP_SAMPLE_RATE, warn=False)
        except AudioError as exc:
            reasons.append(exc.reason)
            continue
        return {
            "dataset": name,
            "label": str(row["label"]),
            "fold": row["fold"].item() if hasattr(row["fold"], "item") else row["fold"],
            "path": str(row["path"]),
            "waveform": wave,
            "sr": CLAP_SAMPLE_RATE,
            "duration_s": len(wave) / CLAP_SAMPLE_RATE,
        }
    raise ValueError(f"{name}: none of {len(order)} tried clips decodes ({'; '.join(reasons[:3])})")


# --------------------------------------------------------------------------- prompt strategies
# ------------------------------------------------------------------------------ UrbanSound8K
def audio_formats(clips: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """How many clips share each (sample rate, channels, sample format), from the file headers
    (04_urbansound8k_topk, whose WAVs mix 8-96 kHz, mono/stereo, 8/16/24-bit and float).

    Columns ``samplerate`` (Hz), ``channels``, ``subtype`` (e.g. PCM_16, FLOAT), ``clips``;
    sorted by ``clips`` descending. Files whose header cannot be read count in one row with
    subtype ``"unreadable"`` (rate and channels 0)."""
    from tqdm.auto import tqdm

    from .audio import AudioError, audio_info

    keys = []
    for path in tqdm(
        clips["path"], desc="reading headers", disable=bars_off(progress), unit="file"
    ):
        try:
            info = audio_info(path)
            keys.append((int(info["samplerate"]), int(info["channels"]), str(info["subtype"])))
        except AudioError:
            keys.append((0, 0, "unreadable"))
    table = pd.DataFrame(keys, columns=["samplerate", "channels", "subtype"])
    counts = table.value_counts().rename("clips").reset_index()
    order = np.lexsort(
        (counts["subtype"], counts["channels"], counts["samplerate"], -counts["clips"])
    )
    return counts.iloc[order].reset_index(drop=True)
