"""Figures of scores and accuracies: confusion matrices, strategy/fold/class bars, AP bars.

Used by: notebooks 02-06 and 08 (confusion matrices, bars).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..evaluation import zeroshot
from .core import class_colors, display_name, fig_ax

__all__ = [
    "ap_bars",
    "class_deltas",
    "confusion_grid",
    "confusion_matrix",
    "learning_curves",
    "per_fold_bars",
    "strategy_bars",
    "topk_confusion",
    "window_accuracy",
]


def _metric_cols(columns: Sequence[str]) -> list[str]:
    pattern = r"top\d+(_hit|_primary)?|mAP"
    return [c for c in columns if re.fullmatch(pattern, str(c))]


def confusion_matrix(
    conf: Any,
    classes: Sequence[str],
    normalize: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool | None = None,
    cmap: str = "Blues",
) -> Figure:
    """Confusion matrix image (02_esc50_zeroshot, 04_urbansound8k_topk, 05_fma).

    conf: (C, C) counts, rows = true class, columns = predicted (``evaluate(...)["confusion"]``).
    ``normalize`` divides each row by its total (empty rows stay 0) so a cell is the fraction of
    the true class. The figure grows with C (about 12 in at 50 classes), tick fonts shrink, x
    labels are rotated; cell values are printed only when ``annotate`` (default: C <= 15)."""
    mat = np.asarray(conf, dtype=np.float64)
    n = len(classes)
    if mat.shape != (n, n):
        raise ValueError(f"conf must be ({n}, {n}) for {n} classes, got {mat.shape}")
    if normalize:
        rows = mat.sum(axis=1, keepdims=True)
        mat = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    side = float(np.clip(0.2 * n + 2.5, 4.0, 16.0))
    fig, ax = fig_ax(ax, (side + 1.2, side))
    vmax = 1.0 if normalize else max(float(mat.max()), 1.0)
    im = ax.imshow(mat, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    font = float(np.clip(220.0 / max(n, 1), 4.5, 10.0))
    labels = [display_name(c) for c in classes]
    ax.set_xticks(np.arange(n), labels, fontsize=font, rotation=90 if n > 12 else 45)
    if n <= 12:
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
            t.set_rotation_mode("anchor")
    ax.set_yticks(np.arange(n), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cbar.set_label("fraction of true class" if normalize else "clips")
    if annotate is None:
        annotate = n <= 15
    if annotate:
        for i in range(n):
            for j in range(n):
                v = mat[i, j]
                if v == 0:
                    continue
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                colour = "white" if v > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=font * 0.85, color=colour)
    if title:
        ax.set_title(title)
    return fig


def topk_confusion(
    scores: Any,
    labels: Any,
    classes: Sequence[str],
    k: int = 3,
    normalize: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Top-k confusion matrix (04_urbansound8k_topk).

    scores (N, C), labels (N,) int. A clip whose true class is among its top k scores counts on
    the diagonal (as correct); any other clip counts at (true class, top-1 prediction). So the
    diagonal shows top-k accuracy per class and the off-diagonal cells show what the clips that
    miss even at k are mistaken for. NaN score rows are skipped."""
    conf = zeroshot.topk_confusion_matrix(scores, labels, k)
    if title is None:
        title = f"top-{k} confusion (diagonal: true class in top {k})"
    return confusion_matrix(conf, classes, normalize=normalize, ax=ax, title=title)


# ------------------------------------------------------------------------------------ bar charts
def strategy_bars(
    table: pd.DataFrame,
    ax: Axes | None = None,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    chance: Mapping[str, float] | None = None,
) -> Figure:
    """Grouped bars comparing prompt strategies (03_augmented_labels, also 05_fma, 06).

    table: rows = strategies, columns include top1/top3/top5 (fractions) as given by
    ``zeroshot.results_table``; ``metrics`` defaults to the top-k / hit / mAP columns present.
    Bars in percent with the value printed above each bar. ``chance``: ``{metric: fraction}``
    (e.g. :func:`clap_helpers.evaluation.zeroshot.chance_levels`), a dotted line per metric in
    its colour, in the legend."""
    metrics = list(metrics) if metrics is not None else _metric_cols(list(table.columns))
    if not metrics:
        raise ValueError("no metric columns (top1, top3, ...) in table")
    names = [str(i) for i in table.index]
    x = np.arange(len(names), dtype=float)
    width = 0.8 / len(metrics)
    fig, ax = fig_ax(ax, (min(14.0, max(5.0, 0.5 * len(names) * len(metrics) + 3)), 4.0))
    colours = class_colors(len(metrics))
    for i, m in enumerate(metrics):
        vals = 100.0 * table[m].to_numpy(dtype=np.float64)
        bars = ax.bar(
            x + (i - (len(metrics) - 1) / 2) * width, vals, width, label=m, color=colours[i]
        )
        ax.bar_label(
            bars,
            labels=[f"{v:.1f}" if np.isfinite(v) else "" for v in vals],
            fontsize=7,
            padding=1,
        )
        if chance and m in chance:
            level = 100.0 * chance[m]
            ax.axhline(level, color=colours[i], ls=":", lw=1.2, label=f"chance {m} ({level:.1f})")
    if max(map(len, names), default=0) > 10:  # slanted, each label ending under its group
        ax.set_xticks(x, names, rotation=20, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, names)
    ax.set_ylim(0, 108)
    ax.set_ylabel("%")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return fig


def class_deltas(
    deltas: pd.DataFrame,
    top: int = 15,
    ax: Axes | None = None,
    title: str | None = None,
    percent: bool = True,
) -> Figure:
    """Horizontal bars of the classes that gain and lose most between two strategies
    (03_augmented_labels).

    deltas: ``zeroshot.class_deltas(res_a, res_b, classes)`` (index = class, column ``delta``
    = b - a). Shows up to ``top`` gains (green) and ``top`` losses (red), largest gain at the
    top; classes with no change or NaN delta are left out. Values in points if ``percent``."""
    d = deltas["delta"].astype(float)
    d = d[np.isfinite(d)]
    gains = d[d > 0].sort_values(ascending=False, kind="stable").head(top)
    losses = d[d < 0].sort_values(ascending=True, kind="stable").head(top)
    chosen = pd.concat([gains, losses.iloc[::-1]])  # descending: gains first, worst loss last
    scale = 100.0 if percent else 1.0
    n = len(chosen)
    fig, ax = fig_ax(ax, (6.5, max(2.5, 0.28 * n + 1.2)))
    y = np.arange(n)[::-1]
    vals = chosen.to_numpy() * scale
    bars = ax.barh(y, vals, color=np.where(vals > 0, "tab:green", "tab:red"))
    ax.bar_label(bars, labels=[f"{v:+.1f}" for v in vals], fontsize=7, padding=2)
    ax.set_yticks(y, [display_name(c) for c in chosen.index], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    if n:
        lim = float(np.abs(vals).max()) * 1.25
        ax.set_xlim(-lim, lim)
    else:
        ax.text(0.5, 0.5, "no class changed", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("change (points)" if percent else "change")
    if title is None:
        title = f"largest per-class gains and losses (top {top} each)"
    ax.set_title(title)
    return fig


def per_fold_bars(
    df: pd.DataFrame,
    ax: Axes | None = None,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Accuracy per fold (02_esc50_zeroshot, 04_urbansound8k_topk), from ``zeroshot.per_fold``.

    Grouped bars per fold (percent) for ``metrics`` (default: the top-k columns), a dashed line
    at each metric's mean over folds, and the mean +- std in the legend."""
    metrics = list(metrics) if metrics is not None else _metric_cols(list(df.columns))
    folds = df.drop(index=[i for i in ("mean", "std") if i in df.index])
    x = np.arange(len(folds), dtype=float)
    width = 0.8 / max(len(metrics), 1)
    fig, ax = fig_ax(ax, (min(14.0, max(5.0, 0.5 * len(folds) * len(metrics) + 3)), 4.0))
    colours = class_colors(len(metrics))
    for i, m in enumerate(metrics):
        vals = 100.0 * folds[m].to_numpy(dtype=np.float64)
        mean = float(np.nanmean(vals)) if len(vals) else math.nan
        std = float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0
        ax.bar(
            x + (i - (len(metrics) - 1) / 2) * width,
            vals,
            width,
            color=colours[i],
            label=f"{m}: {mean:.1f} ± {std:.1f}",
        )
        ax.axhline(mean, color=colours[i], ls="--", lw=1)
    ax.set_xticks(x, [str(f) for f in folds.index])
    ax.set_xlabel("fold")
    ax.set_ylabel("%")
    ax.set_ylim(0, 108)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def ap_bars(
    per_class_ap: Any,
    classes: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    sort: bool = True,
) -> Figure:
    """Average precision per class (06_audioset_subset): horizontal bars, best at the top when
    ``sort``, a dashed line at the mAP. Classes with NaN AP (no positive clip) are left out and
    counted in the title."""
    ap = np.asarray([np.nan if v is None else v for v in per_class_ap], dtype=np.float64)
    if len(ap) != len(classes):
        raise ValueError(f"{len(ap)} AP values for {len(classes)} classes")
    keep = np.flatnonzero(np.isfinite(ap))
    if sort:
        keep = keep[np.argsort(-ap[keep], kind="stable")]
    n = len(keep)
    fig, ax = fig_ax(ax, (6.5, max(2.5, 0.28 * n + 1.2)))
    y = np.arange(n)[::-1]
    bars = ax.barh(y, ap[keep], color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in ap[keep]], fontsize=7, padding=2)
    ax.set_yticks(y, [display_name(classes[i]) for i in keep], fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("average precision")
    if n:
        m = float(ap[keep].mean())
        ax.axvline(m, color="black", ls="--", lw=1, label=f"mAP {m:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    missing = len(ap) - n
    if title is None:
        title = "average precision per class"
    if missing:
        title += f" ({missing} without positives)"
    ax.set_title(title)
    return fig


def learning_curves(runs: Mapping[str, Mapping[str, Any]] | pd.DataFrame, title: str | None = None):
    """Loss, accuracy and macro F1 per epoch (3 panels) for each model of ``runs`` ({name:
    :func:`train_folds` result} or one ``history`` DataFrame): train (dashed), validation
    (dotted) and test fold (solid), averaged over folds; a dot marks the kept epoch of each fold.
    Returns the matplotlib Figure. Used by: notebook 09_cnn_baseline."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    histories = (
        {"": runs} if isinstance(runs, pd.DataFrame) else {k: v["history"] for k, v in runs.items()}
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    styles = {"train": "--", "val": ":", "test": "-"}
    colours = plt.get_cmap("tab10")
    for ci, (name, hist) in enumerate(histories.items()):
        mean = hist.groupby("epoch").mean(numeric_only=True)
        for ax, metric in zip(axes, ("loss", "accuracy", "f1"), strict=True):
            for split, style in styles.items():
                col = f"{split}_{metric}"
                if col in mean:
                    label = f"{name} {split}".strip()
                    ax.plot(mean.index, mean[col], style, color=colours(ci % 10), label=label)
            if "best" in hist and f"test_{metric}" in hist:
                best = hist[hist["best"].astype(bool)].groupby("fold").tail(1)
                ax.plot(best["epoch"], best[f"test_{metric}"], "o", color=colours(ci % 10), ms=4)
    for ax, label in zip(axes, ("cross-entropy loss", "accuracy", "macro F1"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    axes[2].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def confusion_grid(
    results: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    title: str | None = None,
):
    """Normalised confusion matrices side by side, one panel per result (05_fma).

    results: {panel title: :func:`clap_helpers.evaluation.zeroshot.evaluate` result}; drawn with
    :func:`clap_helpers.plots.confusion_matrix`. Returns the Figure."""
    import matplotlib.pyplot as plt

    from .. import plots

    n = len(results)
    if n == 0:
        raise ValueError("no results to draw")
    side = float(np.clip(0.2 * len(classes) + 2.5, 4.0, 16.0))
    fig, axes = plt.subplots(1, n, figsize=(n * (side + 1.4), side + 0.6), layout="constrained")
    for ax, (name, res) in zip(np.atleast_1d(axes), results.items(), strict=True):
        top1 = res.get("top1")
        panel = f"{name}\ntop-1 {top1:.1%}" if top1 is not None and np.isfinite(top1) else name
        plots.confusion_matrix(res["confusion"], classes, ax=ax, title=panel)
    if title:
        fig.suptitle(title)
    return fig


def window_accuracy(path: str | os.PathLike, breakdown: pd.DataFrame, title: str | None = None):
    """Waveform and log-mel of one clip with the window boundaries of ``breakdown`` (the table of
    :func:`window_breakdown`) drawn as dashed lines and each window's predicted class written on
    top (05_fma). Returns the Figure of :func:`clap_helpers.plots.waveform_and_logmel`."""
    from .. import plots
    from ..data.audio import CLAP_SAMPLE_RATE, load_audio

    x = load_audio(path, CLAP_SAMPLE_RATE)
    fig = plots.waveform_and_logmel(x, CLAP_SAMPLE_RATE, title=title)
    wave_ax, mel_ax = fig.axes[0], fig.axes[1]
    windows = breakdown.drop(index="average", errors="ignore")
    for start, end, predicted in windows[["start_s", "end_s", "predicted"]].itertuples(index=False):
        for ax in (wave_ax, mel_ax):
            ax.axvline(start, color="black" if ax is wave_ax else "white", ls="--", lw=1)
        wave_ax.text(
            (start + end) / 2,
            0.95,
            str(predicted),
            transform=wave_ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0},
        )
    return fig
