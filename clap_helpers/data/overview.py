"""Dataset overviews and result summaries for the exploration notebooks.

What the other modules do not cover and notebooks 01, 03 and 04 need:

- 01_download: which of the four datasets are on disk and how to get the others
  (:func:`download_plan`, :func:`fetch_missing`; loading is
  :func:`clap_helpers.datasets.load_available`), a per-dataset summary of
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

from . import datasets, zeroshot
from .paths import resolve

__all__ = [
    "CONTENTS",
    "DOWNLOAD_SIZES",
    "PUBLISHED_TOP1",
    "audio_formats",
    "clap_logmel",
    "class_balance",
    "balance_summary",
    "class_balance_figure",
    "clip_durations",
    "download_plan",
    "duration_figure",
    "evaluate_strategies",
    "fetch_missing",
    "gains_and_losses",
    "on_disk",
    "overview_table",
    "per_class_topk",
    "pick_example",
    "prompt_examples",
    "published_comparison",
    "top_confusions",
]

# What each dataset holds and what it costs to download (shown by notebook 01).
CONTENTS = {
    "esc50": "2000 WAV clips of 5 s, 50 classes, 5 folds",
    "urbansound8k": "8732 WAV clips of at most 4 s, 10 classes, 10 folds",
    "fma_small": "8000 MP3 tracks of 30 s, 8 genres, training/validation/test split",
    "audioset": "10 s YouTube segments, 22 classes, multi-label, balanced_train/eval",
}
DOWNLOAD_SIZES = {
    "esc50": "about 600 MB",
    "urbansound8k": "about 6 GB",
    "fma_small": "7.2 GB audio + 342 MB metadata",
    "audioset": "up to about 0.9 GB (20 clips per class and split), via yt-dlp + ffmpeg",
}


# Published zero-shot top-1 accuracies (fractions) of laion/clap-htsat-unfused and its paper,
# from the one table of published numbers, clap_helpers.adapt.published_table().
def _published_top1() -> dict[str, dict[str, float]]:
    from .adapt import published_table

    table = published_table().iloc[:2]  # the LAION-CLAP paper and the transformers re-run
    return {
        name: dict(zip(table["model"], table[column] / 100.0, strict=True))
        for name, column in (("esc50", "esc50_zs"), ("urbansound8k", "us8k_zs"))
    }


PUBLISHED_TOP1 = _published_top1()
_DATASET_ALIASES = {"us8k": "urbansound8k", "esc-50": "esc50", "fma": "fma_small"}


def _check_name(name: str) -> str:
    if name not in datasets.NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(datasets.NAMES)}")
    return name


# ---------------------------------------------------------------------------- what is on disk
def on_disk(name: str, data_root: str | os.PathLike = "downloads") -> bool:
    """True when dataset ``name``'s metadata file, the one the loader reads, exists under
    ``data_root`` (01_download). Audio files are not checked here (see :func:`overview_table`)."""
    root = resolve(data_root)
    return (root / datasets.METADATA_FILES[_check_name(name)]).is_file()


def download_plan(
    data_root: str | os.PathLike = "downloads", names: Iterable[str] = datasets.NAMES
) -> pd.DataFrame:
    """One row per dataset (index "dataset"), for 01_download: ``on_disk`` (bool), ``contents``,
    ``size`` (of the download) and ``command`` (the ``bash dataset.sh`` line for ``data_root``)."""
    rows = {
        name: {
            "on_disk": on_disk(name, data_root),
            "contents": CONTENTS[name],
            "size": DOWNLOAD_SIZES[name],
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
    ``fetch(name, dest=...)`` defaults to :func:`clap_helpers.download.fetch`; the destination
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

    ``{name: Series}`` from :func:`clap_helpers.datasets.durations` (index = the clips' index,
    NaN for an unreadable header). With ``n_samples``, only a class-stratified subset of that
    many clips per dataset is read (:func:`clap_helpers.datasets.stratified_subset`, ``seed``):
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


def _panels(n: int, width: float, height: float):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, max(n, 1), figsize=(width * max(n, 1), height), layout="constrained", squeeze=False
    )
    return fig, list(axes[0])


def class_balance_figure(
    balances: Mapping[str, pd.DataFrame], column: str = "clips", title: str | None = None
) -> Any:
    """One panel per dataset: horizontal bars of clips per class (01_download).

    ``balances``: ``{name: class_balance(...)}``; ``column``: ``"clips"`` (primary label) or
    ``"tagged"``. A dashed line marks the mean over classes, so imbalance shows at a glance.
    With no dataset, one empty panel says so. Returns the matplotlib Figure."""
    n_max = max((len(b) for b in balances.values()), default=1)
    fig, axes = _panels(len(balances), 4.3, max(3.0, 0.17 * n_max + 1.4))
    if not balances:
        axes[0].text(0.5, 0.5, "no dataset on disk", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, (name, table) in zip(axes, balances.items(), strict=False):
        counts = table[column].to_numpy(dtype=float)
        y = np.arange(len(counts))[::-1]
        ax.barh(y, counts, color="tab:blue")
        ax.set_yticks(y, [str(c).replace("_", " ") for c in table.index], fontsize=6.5)
        if len(counts):
            ax.axvline(counts.mean(), color="black", ls="--", lw=0.8)
        ax.set_xlabel("clips")
        ax.set_title(f"{name} ({len(table)} classes)", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def duration_figure(durations: Mapping[str, pd.Series], bins: int = 30) -> Any:
    """One histogram of clip durations (s) per dataset (01_download); unreadable (NaN) clips
    are left out and counted in the panel title. With no dataset, one empty panel says so."""
    fig, axes = _panels(len(durations), 3.6, 2.8)
    if not durations:
        axes[0].text(0.5, 0.5, "no dataset on disk", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, (name, d) in zip(axes, durations.items(), strict=False):
        values = pd.Series(d, dtype=float)
        ok = values.dropna().to_numpy()
        if len(ok):
            lo, hi = float(ok.min()), float(ok.max())
            ax.hist(ok, bins=bins, range=(lo - 0.5, hi + 0.5) if hi - lo < 1e-6 else None)
        bad = len(values) - len(ok)
        ax.set_title(name + (f" ({bad} unreadable)" if bad else ""), fontsize=10)
        ax.set_xlabel("duration (s)")
        ax.set_ylabel("clips")
    return fig


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


def clap_logmel(waveform: Any, sr: int = 48_000) -> np.ndarray:
    """The log-mel the unfused CLAP checkpoints see for one clip (01_download): (1001, 64) dB.

    :class:`clap_helpers.frontend.LogMelFrontend` with its defaults (those of
    ``laion/clap-htsat-unfused``): a 10 s window of 1001 frames of 10 ms, 64 Slaney mel bands
    from 0 to 14 kHz; a shorter clip is repeated to fill the window, then zero-padded; a longer
    one is centre-cropped. ``waveform`` (T,) float at 48 kHz."""
    import torch

    from .frontend import LogMelFrontend

    if sr != 48_000:
        raise ValueError(f"the CLAP front-end takes 48 kHz audio, got {sr} Hz")
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32).reshape(-1))
    features = LogMelFrontend()(x[None]).input_features  # (1, 1, 1001, 64)
    return features[0, 0].cpu().numpy()


# --------------------------------------------------------------------------- prompt strategies
def evaluate_strategies(
    audio_emb: Any,
    clips: pd.DataFrame,
    classes: Sequence[str],
    text_sets: Mapping[str, Any],
    ks: Sequence[int] = (1, 3, 5),
) -> dict[str, dict[str, Any]]:
    """:func:`clap_helpers.zeroshot.evaluate` for each prompt strategy (03_augmented_labels).

    audio_emb (N, D); ``clips`` from :func:`clap_helpers.datasets.load` (its ``target`` column
    is the label); ``text_sets`` ``{strategy: (C, D)}`` from
    :func:`clap_helpers.prompts.embed_prompt_sets`. Top-k and per-class accuracy are always
    against the single (primary) label, so every dataset gets the same columns. For a
    multi-label dataset (a ``labels`` column: the AudioSet subset) each result also gets
    ``mAP``, ``per_class_ap`` and ``top{k}_hit`` (any true label in the top k) from
    :func:`clap_helpers.zeroshot.evaluate_multilabel`. Returns ``{strategy: result}``, ready for
    :func:`clap_helpers.zeroshot.results_table` and :func:`clap_helpers.zeroshot.class_deltas`."""
    labels = clips["target"].to_numpy()
    multi = "labels" in clips.columns
    matrix = datasets.label_matrix(clips, list(classes)) if multi else None
    out = {}
    for name, text_emb in text_sets.items():
        result = zeroshot.evaluate(audio_emb, labels, text_emb, ks)
        if multi:
            extra = zeroshot.evaluate_multilabel(audio_emb, matrix, text_emb, ks)
            keep = ["mAP", "per_class_ap", *(f"top{int(k)}_hit" for k in ks)]
            result.update({k: extra[k] for k in keep})
        out[name] = result
    return out


def prompt_examples(
    sets: Mapping[str, Sequence[Sequence[str]]], classes: Sequence[str], n: int | None = 5
) -> pd.DataFrame:
    """The prompts of each strategy side by side for the first ``n`` classes (all if None), for
    03_augmented_labels: index "class", one column per strategy, several prompts of a class
    joined by " | "."""
    chosen = list(classes)[: n if n is not None else len(classes)]
    data = {
        name: [" | ".join(groups[i]) for i in range(len(chosen))] for name, groups in sets.items()
    }
    return pd.DataFrame(data, index=pd.Index(chosen, name="class"))


def gains_and_losses(deltas: pd.DataFrame, n: int = 5) -> dict[str, Any]:
    """Summary of :func:`clap_helpers.zeroshot.class_deltas` (03_augmented_labels).

    Returns ``{"gains": {class: delta}`` (the ``n`` largest positive deltas, largest first),
    ``"losses": {class: delta}`` (the ``n`` most negative, worst first), ``"n_gain"``,
    ``"n_loss"``, ``"n_same"`` (classes with a zero delta) and ``"n_undefined"`` (NaN delta: no
    clip of the class was scored)}``. Deltas are fractions (0.1 = 10 points)."""
    d = deltas["delta"].astype(float)
    defined = d[np.isfinite(d)]
    gains = defined[defined > 0].sort_values(ascending=False, kind="stable").head(n)
    losses = defined[defined < 0].sort_values(ascending=True, kind="stable").head(n)
    return {
        "gains": {str(k): float(v) for k, v in gains.items()},
        "losses": {str(k): float(v) for k, v in losses.items()},
        "n_gain": int((defined > 0).sum()),
        "n_loss": int((defined < 0).sum()),
        "n_same": int((defined == 0).sum()),
        "n_undefined": int(len(d) - len(defined)),
    }


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
    for path in tqdm(clips["path"], desc="reading headers", disable=not progress, unit="file"):
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


def published_comparison(dataset: str, top1: float, label: str = "this run") -> pd.DataFrame:
    """Our top-1 next to the published zero-shot numbers (04_urbansound8k_topk; ESC-50 too).

    Index "source" (``label`` first, then :data:`PUBLISHED_TOP1`'s entries), columns
    ``top1_percent`` and ``difference_points`` (our top-1 minus that row's, in points; 0 for our
    row). ``dataset``: "esc50" or "urbansound8k" ("us8k" accepted)."""
    key = _DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    if key not in PUBLISHED_TOP1:
        raise ValueError(f"no published numbers for {dataset!r}; known: {sorted(PUBLISHED_TOP1)}")
    rows = {label: float(top1), **PUBLISHED_TOP1[key]}
    table = pd.DataFrame(
        {
            "top1_percent": [100.0 * v for v in rows.values()],
            "difference_points": [100.0 * (float(top1) - v) for v in rows.values()],
        },
        index=pd.Index(list(rows), name="source"),
    )
    return table


def top_confusions(conf: Any, classes: Sequence[str], n: int = 10) -> pd.DataFrame:
    """The ``n`` most frequent mistakes in a confusion matrix (04_urbansound8k_topk).

    conf (C, C) counts, rows = true class, columns = predicted (``evaluate(...)["confusion"]``).
    Returns columns ``true``, ``predicted``, ``clips`` and ``share`` (of the true class's clips),
    off-diagonal non-zero cells only, most clips first (ties: larger share, then class order)."""
    mat = np.asarray(conf, dtype=np.int64)
    if mat.shape != (len(classes), len(classes)):
        raise ValueError(f"conf must be ({len(classes)}, {len(classes)}), got {mat.shape}")
    totals = mat.sum(axis=1)
    rows = [
        (classes[i], classes[j], int(mat[i, j]), mat[i, j] / totals[i], i, j)
        for i, j in zip(*np.nonzero(mat), strict=True)
        if i != j
    ]
    rows.sort(key=lambda r: (-r[2], -r[3], r[4], r[5]))
    table = pd.DataFrame([r[:4] for r in rows[:n]], columns=["true", "predicted", "clips", "share"])
    return table.astype({"clips": np.int64, "share": float})


def per_class_topk(
    true_rank: Any, labels: Any, classes: Sequence[str], ks: Sequence[int] = (1, 3, 5)
) -> pd.DataFrame:
    """Top-k accuracy of each class (04_urbansound8k_topk): index "class", columns ``clips``
    (scored clips of the class) and ``top{k}`` (fraction, NaN for a class without scored clips).

    ``true_rank`` (N,) from :func:`clap_helpers.zeroshot.evaluate` (0 = top-1, -1 = failed
    clip, left out); labels (N,) int class indices."""
    rank = np.asarray(true_rank, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    if rank.shape != y.shape:
        raise ValueError(f"true_rank {rank.shape} and labels {y.shape} differ")
    ok = rank >= 0
    data: dict[str, list[float]] = {"clips": []}
    for k in ks:
        data[f"top{int(k)}"] = []
    for c in range(len(classes)):
        m = ok & (y == c)
        data["clips"].append(int(m.sum()))
        for k in ks:
            data[f"top{int(k)}"].append(float(np.mean(rank[m] < k)) if m.any() else math.nan)
    table = pd.DataFrame(data, index=pd.Index(list(classes), name="class"))
    return table.astype({"clips": np.int64})
