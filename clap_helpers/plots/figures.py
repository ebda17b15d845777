"""Figures for the zero-shot notebooks.

Every plotting function draws into ``ax`` (or ``axes``) when given, otherwise creates a new
pyplot figure with constrained layout, and returns the Figure. Nothing here calls ``plt.show()``
or saves on its own; :func:`save` writes a PNG and closes the figure. Layouts are deterministic:
no random jitter, and t-SNE is seeded.

In a notebook, a figure closed by :func:`save` is no longer drawn automatically at the end of the
cell: display it first (``fig`` as a cell's last line, or ``IPython.display.display(fig)``), or
call ``save(fig, path, close=False)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from . import zeroshot

__all__ = [
    "ap_bars",
    "class_colors",
    "class_deltas",
    "confusion_matrix",
    "embedding_coords",
    "embedding_map",
    "compute_logmel",
    "per_fold_bars",
    "save",
    "strategy_bars",
    "topk_confusion",
    "waveform_and_logmel",
]

TEXT_MARKERS = ("*", "X", "P", "D", "^", "s")


# --------------------------------------------------------------------------------------- helpers
def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    while not isinstance(fig, Figure) and hasattr(fig, "figure"):  # SubFigure -> its parent
        fig = fig.figure
    return fig  # type: ignore[return-value]


def _fig_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return _root_figure(ax), ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _display(name: object) -> str:
    return str(name).replace("_", " ")


def class_colors(n: int) -> np.ndarray:
    """(n, 4) RGBA colours, distinct for up to 60 classes (tab10, tab20, then tab20+b+c)."""
    if n > 60:
        return matplotlib.colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))
    names = ("tab10",) if n <= 10 else ("tab20",) if n <= 20 else ("tab20", "tab20b", "tab20c")
    base = [c for name in names for c in matplotlib.colormaps[name](np.arange(20))]
    return np.array([(*base[i][:3], 1.0) for i in range(n)])


def _metric_cols(columns: Sequence[str]) -> list[str]:
    pattern = r"top\d+(_hit|_primary)?|mAP"
    return [c for c in columns if re.fullmatch(pattern, str(c))]


# ----------------------------------------------------------------------------- confusion matrices
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
    fig, ax = _fig_ax(ax, (side + 1.2, side))
    vmax = 1.0 if normalize else max(float(mat.max()), 1.0)
    im = ax.imshow(mat, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    font = float(np.clip(220.0 / max(n, 1), 4.5, 10.0))
    labels = [_display(c) for c in classes]
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
) -> Figure:
    """Grouped bars comparing prompt strategies (03_augmented_labels, also 05_fma, 06).

    table: rows = strategies, columns include top1/top3/top5 (fractions) as given by
    ``zeroshot.results_table``; ``metrics`` defaults to the top-k / hit / mAP columns present.
    Bars in percent with the value printed above each bar."""
    metrics = list(metrics) if metrics is not None else _metric_cols(list(table.columns))
    if not metrics:
        raise ValueError("no metric columns (top1, top3, ...) in table")
    names = [str(i) for i in table.index]
    x = np.arange(len(names), dtype=float)
    width = 0.8 / len(metrics)
    fig, ax = _fig_ax(ax, (min(14.0, max(5.0, 0.5 * len(names) * len(metrics) + 3)), 4.0))
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
    ax.set_xticks(x, names, rotation=20 if max(map(len, names), default=0) > 10 else 0)
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
    fig, ax = _fig_ax(ax, (6.5, max(2.5, 0.28 * n + 1.2)))
    y = np.arange(n)[::-1]
    vals = chosen.to_numpy() * scale
    bars = ax.barh(y, vals, color=np.where(vals > 0, "tab:green", "tab:red"))
    ax.bar_label(bars, labels=[f"{v:+.1f}" for v in vals], fontsize=7, padding=2)
    ax.set_yticks(y, [_display(c) for c in chosen.index], fontsize=8)
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
    fig, ax = _fig_ax(ax, (min(14.0, max(5.0, 0.5 * len(folds) * len(metrics) + 3)), 4.0))
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
    fig, ax = _fig_ax(ax, (6.5, max(2.5, 0.28 * n + 1.2)))
    y = np.arange(n)[::-1]
    bars = ax.barh(y, ap[keep], color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in ap[keep]], fontsize=7, padding=2)
    ax.set_yticks(y, [_display(classes[i]) for i in keep], fontsize=8)
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


# ---------------------------------------------------------------------------------- audio panels
def compute_logmel(
    waveform: Any,
    sr: int,
    n_fft: int = 1024,
    hop_length: int = 480,
    n_mels: int = 64,
    fmax: float = 14000.0,
) -> np.ndarray:
    """Log-mel spectrogram of a whole clip for display, (frames, n_mels) in dB (floor -100 dB).

    The CLAP front-end's own maths (:meth:`clap_helpers.frontend.LogMelFrontend.log_mel`: Hann
    STFT, Slaney mel filters from 0 to min(fmax, sr / 2) Hz), without the 10 s window or padding
    rule, so the picture shows the clip as it is."""
    import torch

    from .frontend import LogMelFrontend

    w = torch.as_tensor(np.asarray(waveform, dtype=np.float32).reshape(-1))
    if w.numel() <= n_fft // 2:  # reflect padding needs a little more than half a frame
        w = torch.nn.functional.pad(w, (0, n_fft // 2 + 1 - w.numel()))
    frontend = LogMelFrontend(
        sampling_rate=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        f_max=min(fmax, sr / 2),
    )
    return frontend.log_mel(w[None])[0].cpu().numpy()


def _mono(waveform: Any) -> np.ndarray:
    w = np.asarray(waveform, dtype=np.float64)
    if w.ndim == 2:  # average channels, whichever axis is the short one
        w = w.mean(axis=int(np.argmin(w.shape)))
    if w.ndim != 1:
        raise ValueError(f"waveform must be (T,) or (channels, T), got shape {w.shape}")
    return w


def waveform_and_logmel(
    waveform: Any,
    sr: int,
    logmel: Any = None,
    title: str | None = None,
    hop_length: int = 480,
    feature_sr: int = 48000,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Two stacked panels: the waveform over time (s) and a log-mel spectrogram with a dB
    colorbar (02_esc50_zeroshot, 05_fma).

    waveform (T,) at ``sr`` Hz (a (channels, T) array is averaged). ``logmel`` (frames, mels) in
    dB, e.g. the CLAP extractor's ``input_features[0, 0]``; its frames are placed at
    ``hop_length / feature_sr`` s each (480 / 48 kHz = 10 ms). If None, :func:`compute_logmel`
    makes one at ``sr`` (frames of ``hop_length / sr`` s). Long waveforms are drawn as a min/max
    envelope. ``axes``: an optional pair of axes to draw into."""
    w = _mono(waveform)
    if logmel is None:
        mel = compute_logmel(w, sr, hop_length=hop_length)
        frame_s = hop_length / sr
    else:
        mel = np.asarray(logmel, dtype=np.float64)
        while mel.ndim > 2 and mel.shape[0] == 1:
            mel = mel[0]
        if mel.ndim != 2:
            raise ValueError(f"logmel must be (frames, mels), got shape {np.shape(logmel)}")
        frame_s = hop_length / feature_sr
    cax = None
    if axes is None:  # a narrow second column holds the colorbar, so both panels align
        fig, grid = plt.subplots(2, 2, figsize=(9, 5.5), width_ratios=(40, 1), layout="constrained")
        ax_w, ax_m, cax = grid[0, 0], grid[1, 0], grid[1, 1]
        grid[0, 1].remove()
        ax_m.sharex(ax_w)
        ax_w.tick_params(labelbottom=False)
    else:
        ax_w, ax_m = axes
        fig = _root_figure(ax_w)
    t_end = len(w) / sr
    if len(w) > 20000:
        bins = 4000
        per = len(w) // bins
        chunks = w[: per * bins].reshape(bins, per)
        t = (np.arange(bins) + 0.5) * per / sr
        ax_w.fill_between(t, chunks.min(axis=1), chunks.max(axis=1), color="tab:blue", lw=0)
    else:
        ax_w.plot(np.arange(len(w)) / sr, w, color="tab:blue", lw=0.6)
    ax_w.set_xlim(0, max(t_end, mel.shape[0] * frame_s))
    ax_w.set_ylabel("amplitude")
    im = ax_m.imshow(
        mel.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(0.0, mel.shape[0] * frame_s, 0.0, float(mel.shape[1])),
    )
    ax_m.set_xlabel("time (s)")
    ax_m.set_ylabel("mel bin")
    if cax is not None:
        fig.colorbar(im, cax=cax, label="dB")
    else:
        fig.colorbar(im, ax=ax_m, pad=0.01, label="dB")
    if title:
        ax_w.set_title(title)
    return fig


# ----------------------------------------------------------------------------- embedding map
def embedding_coords(
    audio_emb: Any,
    text_embs: Mapping[str, Any] | None = None,
    method: str = "tsne",
    seed: int = 0,
    perplexity: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """2-D coordinates for :func:`embedding_map`: ``(audio_xy (M, 2), kept (N,) bool,
    {name: (C, 2)})``.

    NaN audio rows are dropped (``kept`` marks the rows used). Audio and every text set are
    projected jointly (fit on their concatenation). "pca": sklearn PCA. "tsne": sklearn t-SNE
    (PCA init, seeded, perplexity ``min(30, (n - 1) / 3)`` for n points unless given; exact
    gradients up to 250 points, Barnes-Hut above), after a PCA to 50 dimensions when there are
    more. t-SNE of 2000 clips takes tens of seconds on 2 CPU cores."""
    from sklearn.decomposition import PCA

    audio = np.asarray(audio_emb, dtype=np.float64)
    kept = np.isfinite(audio).all(axis=1)
    blocks = [audio[kept]]
    texts = dict(text_embs or {})
    names = list(texts)
    for name in names:
        t = np.asarray(texts[name], dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != audio.shape[1]:
            raise ValueError(f"text_embs[{name!r}] has shape {t.shape}, audio dim {audio.shape[1]}")
        blocks.append(t)
    X = np.concatenate(blocks, axis=0)
    n = X.shape[0]
    if method == "pca":
        if n < 2:
            raise ValueError("PCA needs at least 2 points")
        xy = PCA(n_components=2, svd_solver="full", random_state=seed).fit_transform(X)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        if n < 4:
            raise ValueError("t-SNE needs at least 4 points")
        if X.shape[1] > 50 and n > 50:
            X = PCA(n_components=50, svd_solver="full", random_state=seed).fit_transform(X)
        p = perplexity if perplexity is not None else min(30.0, (n - 1) / 3.0)
        tsne = TSNE(
            n_components=2,
            perplexity=p,
            init="pca",
            learning_rate="auto",
            random_state=seed,
            method="exact" if n <= 250 else "barnes_hut",
        )
        xy = tsne.fit_transform(X)
    else:
        raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")
    sizes = np.cumsum([len(b) for b in blocks])
    parts = np.split(xy, sizes[:-1])
    return parts[0], kept, dict(zip(names, parts[1:], strict=True))


def embedding_map(
    audio_emb: Any,
    labels: Any,
    classes: Sequence[str],
    text_embs: Mapping[str, Any] | None = None,
    method: str = "tsne",
    seed: int = 0,
    ax: Axes | None = None,
    title: str | None = None,
    perplexity: float | None = None,
) -> Figure:
    """t-SNE or PCA map of audio embeddings coloured by class (07_tsne).

    audio_emb (N, D), labels (N,) int into ``classes``; ``text_embs`` e.g.
    ``{"label": T1, "sentence": T2}``, each (C, D), drawn with their own marker (star, X, plus,
    ...) in the class colour with a black edge; the first set's points carry the class name, and
    the points of one class in successive sets are joined by a grey line. Projection by
    :func:`embedding_coords` (joint fit, NaN rows dropped, seeded). Expect the text points to sit
    apart from the audio clusters (the modality gap). Legends sit outside the axes, on the
    right (classes in columns of 28)."""
    audio_xy, kept, text_xy = embedding_coords(audio_emb, text_embs, method, seed, perplexity)
    y = np.asarray(labels)[kept]
    n_classes = len(classes)
    colours = class_colors(n_classes)
    present = [c for c in range(n_classes) if np.any(y == c)]
    ncol = max(1, math.ceil(len(present) / 28))
    fig, ax = _fig_ax(ax, (8.0 + 2.2 * ncol, 7.0))
    size = 10 if len(y) > 1000 else 22
    for c in present:
        m = y == c
        ax.scatter(
            audio_xy[m, 0],
            audio_xy[m, 1],
            s=size,
            color=colours[c],
            alpha=0.6,
            linewidths=0,
            label=_display(classes[c]),
        )
    handles = []
    names = list(text_xy)
    if len(names) > 1:
        segs = [
            np.stack([text_xy[names[i]][c] for i in range(len(names))])
            for c in range(min(len(text_xy[n]) for n in names))
        ]
        ax.add_collection(LineCollection(segs, colors="0.5", linewidths=0.7, zorder=2))
    for i, name in enumerate(names):
        txy = text_xy[name]
        marker = TEXT_MARKERS[i % len(TEXT_MARKERS)]
        ax.scatter(
            txy[:, 0],
            txy[:, 1],
            s=150,
            marker=marker,
            c=colours[: len(txy)],
            edgecolors="black",
            linewidths=0.8,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker=marker,
                markersize=10,
                markerfacecolor="0.8",
                markeredgecolor="black",
                label=f"text: {name}",
            )
        )
        if i == 0:
            for c, (px, py) in enumerate(txy[:n_classes]):
                ax.annotate(
                    _display(classes[c]),
                    (px, py),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=7,
                    zorder=4,
                )
    # Both legends sit outside the axes on the right: classes at the top, text markers below.
    if handles:
        text_legend = ax.legend(
            handles=handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=7
        )
        ax.add_artist(text_legend)
        text_legend.set_clip_on(False)  # add_artist clips to the axes otherwise
    if present:
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=6 if len(present) > 12 else 7,
            ncol=ncol,
            markerscale=1.5,
            title="audio clips",
            title_fontsize=7,
        )
    ax.margins(0.08)
    ax.set_xticks([])
    ax.set_yticks([])
    label = "t-SNE" if method == "tsne" else "PCA"
    ax.set_title(title if title else f"{label} of audio embeddings (n={len(y)})")
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 150, close: bool = True) -> Path:
    """Write ``fig`` to ``path`` (parent folders created; ".png" added if there is no suffix) at
    ``dpi``, then close it unless ``close=False``. Returns the path written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return path
