"""Maps of embeddings: t-SNE/PCA scatter of clips with class text points, query maps.

Used by: notebooks 07_tsne and 10_sound_search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .core import class_colors, display_name, fig_ax, place_labels

__all__ = [
    "embedding_coords",
    "embedding_map",
    "query_map",
    "pca_axis_labels",
    "query_maps",
    "TEXT_MARKERS",
]

if TYPE_CHECKING:  # pragma: no cover
    from ..apps.search import EmbeddingMap, SoundIndex

TEXT_MARKERS = ("*", "X", "P", "D", "^", "s")


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
    audio_xy, kept, text_xy, _ = _coords(audio_emb, text_embs, method, seed, perplexity)
    return audio_xy, kept, text_xy


def _coords(audio_emb, text_embs, method, seed, perplexity):
    """:func:`embedding_coords` plus the PCA's explained variance ratios (2,) (None for t-SNE)."""
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
        pca = PCA(n_components=2, svd_solver="full", random_state=seed)
        xy = pca.fit_transform(X)
        explained = pca.explained_variance_ratio_
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
        explained = None
    else:
        raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")
    sizes = np.cumsum([len(b) for b in blocks])
    parts = np.split(xy, sizes[:-1])
    return parts[0], kept, dict(zip(names, parts[1:], strict=True)), explained


def pca_axis_labels(ax: Axes, explained: Any) -> None:
    """Axis labels of a PCA map: ``PC1 (34 % of variance)``; no ticks (the units mean nothing)."""
    ax.set_xticks([])
    ax.set_yticks([])
    if explained is not None:
        ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f} % of variance)", fontsize=8)
        ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f} % of variance)", fontsize=8)


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
    ...) in the class colour with a black edge; the first set's points carry the class name
    (placed so that no two names overlap), and the points of one class in successive sets are
    joined by a grey line (in the legend as well). Projection by :func:`embedding_coords` (joint
    fit, NaN rows dropped, seeded); a PCA map's axes give each component's share of the
    variance. Expect the text points to sit apart from the audio clusters (the modality gap).
    Legends sit outside the axes, on the right (classes in columns of 28)."""
    audio_xy, kept, text_xy, explained = _coords(audio_emb, text_embs, method, seed, perplexity)
    y = np.asarray(labels)[kept]
    n_classes = len(classes)
    colours = class_colors(n_classes)
    present = [c for c in range(n_classes) if np.any(y == c)]
    ncol = max(1, math.ceil(len(present) / 28))
    fig, ax = fig_ax(ax, (8.0 + 2.2 * ncol, 7.0))
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
            label=display_name(classes[c]),
        )
    handles = []
    names = list(text_xy)
    if len(names) > 1:
        segs = [
            np.stack([text_xy[names[i]][c] for i in range(len(names))])
            for c in range(min(len(text_xy[n]) for n in names))
        ]
        ax.add_collection(LineCollection(segs, colors="0.5", linewidths=0.7, zorder=2))
        handles.append(
            Line2D([], [], color="0.5", lw=0.7, label=f"same class: {' to '.join(names)}")
        )
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
    if method == "pca":
        pca_axis_labels(ax, explained)
    label = "t-SNE" if method == "tsne" else "PCA"
    ax.set_title(title if title else f"{label} of audio embeddings (n={len(y)})")
    if names:  # class names at the first text set's points, last: they need the final layout
        first = text_xy[names[0]][:n_classes]
        rest = [text_xy[n] for n in names[1:]]
        place_labels(
            ax,
            first,
            [display_name(classes[c]) for c in range(len(first))],
            avoid=np.concatenate(rest) if rest else None,
        )
    return fig


def query_map(
    emap: EmbeddingMap,
    clips: pd.DataFrame,
    query_xy: Any = None,
    hit_rows: Sequence[int] = (),
    query_label: str = "query",
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7.0, 5.5),
) -> Figure:
    """Scatter of the collection on ``emap`` coloured by dataset, the hits (``hit_rows``) ringed
    and labelled by rank and class (labels placed so that none overlaps another), the query as
    a black star at ``query_xy`` (2,). A PCA map's axes give each component's share of the
    variance. Without ``ax`` the figure is a plain ``matplotlib.figure.Figure`` (not registered
    with pyplot, so nothing to close: what the web app's threads need)."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()
    xy = emap.xy
    names = list(pd.unique(clips["dataset"])) if "dataset" in clips else [""]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    size = 6 if len(xy) > 3000 else 14
    for i, name in enumerate(names):
        m = np.isfinite(xy).all(axis=1)
        if "dataset" in clips:
            m = m & (clips["dataset"] == name).to_numpy()
        ax.scatter(
            *xy[m].T,
            s=size,
            alpha=0.45,
            linewidths=0,
            color=colours[i % len(colours)],
            label=f"{name} ({m.sum()})" if name else f"clips ({m.sum()})",
        )
    hits = [r for r in hit_rows if np.isfinite(xy[r]).all()]
    if hits:
        ax.scatter(
            *xy[hits].T,
            s=90,
            facecolors="none",
            edgecolors="red",
            linewidths=1.4,
            label=f"top {len(hits)}",
            zorder=3,
        )
    if query_xy is not None:
        qx, qy = np.asarray(query_xy, dtype=float)
        ax.scatter(
            [qx],
            [qy],
            marker="*",
            s=320,
            color="black",
            edgecolors="white",
            linewidths=0.8,
            label=query_label[:40],
            zorder=5,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    if emap.method == "pca":
        pca_axis_labels(ax, getattr(emap, "explained", None))
    ax.margins(0.06)
    ax.set_title(f"{'t-SNE' if emap.method == 'tsne' else 'PCA'} map of {len(xy)} clips")
    ax.legend(loc="best", fontsize=7, framealpha=0.8)
    if hits:
        shown = hits[:5]
        place_labels(
            ax,
            xy[shown],
            [f"{rank} {clips['label'].iloc[r]}" for rank, r in enumerate(shown, 1)],
            color="darkred",
            avoid=None if query_xy is None else np.asarray(query_xy, dtype=float)[None],
        )
    return fig


def query_maps(
    index: SoundIndex,
    query: str,
    k: int = 10,
    methods: Sequence[str] = ("pca", "tsne"),
    seed: int = 0,
) -> Figure:
    """One :func:`query_map` panel per method (fitted on ``index``) with a text query and its
    top-k clips marked: a pyplot figure (shown by a notebook like every other one), 6.5 in wide
    per panel."""
    import matplotlib.pyplot as plt

    from ..apps.search import EmbeddingMap

    q = index.embed_texts(query)[0]
    rows = index.search(q, k)["row"].tolist()
    fig, axes = plt.subplots(
        1, len(methods), figsize=(6.5 * len(methods), 5.5), layout="constrained", squeeze=False
    )
    for ax, method in zip(axes[0], methods, strict=True):
        emap = EmbeddingMap.fit(index.embeddings, method, seed)
        query_map(emap, index.clips, emap.place(q), rows, f'"{query}"', ax=ax)
    return fig
