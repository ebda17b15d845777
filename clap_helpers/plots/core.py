"""Shared figure helpers: one way to get a figure and axes, colours, names, labels, saving.

Every plotting function of :mod:`clap_helpers.plots` draws into ``ax`` (or ``axes``) when given,
otherwise creates a new pyplot figure with constrained layout, and returns the Figure. Nothing
calls ``plt.show()`` or saves on its own; :func:`save` writes a PNG and closes the figure, so a
notebook cell that saves and then shows ``fig`` renders it exactly once.

A kernel started by ``make demo`` or the notebook tests has ``CLAP_HELPERS_DEMO=1``
(:data:`clap_helpers.devtools.runner.DEMO_ENV`): :func:`save` then prefixes the figure's title
with "demo · ", so no fixture figure passes for a result. :func:`model_name` keeps machine
paths out of titles; :func:`place_labels` writes point labels that do not overlap.

Used by: every notebook that draws (01-11), through :mod:`clap_helpers.plots`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "DEMO_PREFIX",
    "class_colors",
    "demo_mode",
    "display_name",
    "fig_ax",
    "mark_demo",
    "model_name",
    "panels",
    "place_labels",
    "root_figure",
    "save",
    "shorten",
]

DEMO_PREFIX = "demo · "


def root_figure(ax: Axes) -> Figure:
    """The top-level Figure that holds ``ax`` (a SubFigure's parent, recursively)."""
    fig = ax.figure
    while not isinstance(fig, Figure) and hasattr(fig, "figure"):  # SubFigure -> its parent
        fig = fig.figure
    return fig  # type: ignore[return-value]


def fig_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``(figure, ax)``: the given ``ax`` and its figure, or a new constrained-layout figure."""
    if ax is not None:
        return root_figure(ax), ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def panels(n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A new figure with ``n`` panels side by side (at least one), each ``width`` x ``height``."""
    fig, axes = plt.subplots(
        1, max(n, 1), figsize=(width * max(n, 1), height), layout="constrained", squeeze=False
    )
    return fig, list(axes[0])


def display_name(name: object) -> str:
    """A class or column name for people: underscores become spaces."""
    return str(name).replace("_", " ")


def shorten(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters with an ellipsis."""
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def class_colors(n: int) -> np.ndarray:
    """(n, 4) RGBA colours, distinct for up to 60 classes (tab10, tab20, then tab20+b+c)."""
    if n > 60:
        return matplotlib.colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))
    names = ("tab10",) if n <= 10 else ("tab20",) if n <= 20 else ("tab20", "tab20b", "tab20c")
    base = [c for name in names for c in matplotlib.colormaps[name](np.arange(20))]
    return np.array([(*base[i][:3], 1.0) for i in range(n)])


def model_name(model: object) -> str:
    """A model for titles: the last part of a hub id or of a folder path
    (``laion/clap-htsat-unfused`` -> ``clap-htsat-unfused``, ``/tmp/x/build/demo/tiny-clap`` ->
    ``tiny-clap``), never a machine path."""
    text = str(model).rstrip("/\\")
    return re.split(r"[/\\]", text)[-1] or text


def demo_mode() -> bool:
    """True in a kernel started for the fixtures (``CLAP_HELPERS_DEMO=1``)."""
    return os.environ.get("CLAP_HELPERS_DEMO", "") == "1"


def mark_demo(fig: Figure) -> None:
    """Prefix the figure's title with :data:`DEMO_PREFIX` (once): its suptitle, else the title of
    its only titled axes, else a new suptitle."""
    sup = fig.get_suptitle()
    titled = [ax for ax in fig.axes if ax.get_title()]
    if DEMO_PREFIX in sup or any(ax.get_title().startswith(DEMO_PREFIX) for ax in titled):
        return
    if sup:
        fig.suptitle(DEMO_PREFIX + sup)
    elif len(titled) == 1:
        titled[0].set_title(DEMO_PREFIX + titled[0].get_title())
    else:
        fig.suptitle(DEMO_PREFIX + "synthetic fixtures, random model")


def place_labels(
    ax: Axes,
    xy: Any,
    texts: Sequence[str],
    *,
    fontsize: float = 7,
    color: Any = "black",
    avoid: Any = None,
    zorder: float = 4,
    clearance: float = 6.0,
) -> list:
    """Annotate points ``xy`` (n, 2, data units) with ``texts`` so that no two labels overlap.

    Each label goes to the first free spot among positions around its point, nearest first
    (right, left, above, below, then further out with a thin leader line); a spot is free when
    the label's box misses the labels placed so far, keeps ``clearance`` points (about a
    marker's radius) from the points ``xy`` and ``avoid`` (m, 2, e.g. other markers) and stays
    inside the axes. With no free spot the least crowded one is used.
    Runs the figure's layout first, so call it once everything else (legends included) is
    drawn. Returns the annotations."""
    from matplotlib.textpath import TextToPath

    fig = root_figure(ax)
    fig.draw_without_rendering()  # settle the layout: pixel positions are final
    pts = np.asarray(xy, dtype=float).reshape(-1, 2)
    others = (
        np.asarray(avoid, dtype=float).reshape(-1, 2) if avoid is not None else np.zeros((0, 2))
    )
    px = ax.transData.transform(pts) if len(pts) else pts
    obstacles = np.concatenate([px, ax.transData.transform(others)]) if len(others) else px
    frame = ax.get_window_extent()
    scale = fig.dpi / 72.0  # points -> pixels
    prop = matplotlib.font_manager.FontProperties(size=fontsize)
    sizer = TextToPath()
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for (x, y), text in zip(px, texts, strict=True):
        w, h, d = sizer.get_text_width_height_descent(str(text), prop, ismath=False)
        w, h = w * scale, (h + d) * scale
        best, best_cost = None, np.inf
        for dist in (7.0, 14.0, 24.0, 36.0):
            r = dist * scale
            for dx, dy in (
                (1, 0.2),
                (-1, 0.2),
                (0, 1),
                (0, -1),
                (1, 1),
                (-1, 1),
                (1, -1),
                (-1, -1),
            ):
                left = x + dx * r - (w if dx < 0 else w / 2 if dx == 0 else 0)
                bottom = y + dy * r - (h if dy < 0 else h / 2 if -0.5 < dy < 0.5 else 0)
                box = (left, bottom, left + w, bottom + h)
                cost = _overlap(box, placed, obstacles, clearance * scale) + 0.01 * dist
                outside = (
                    box[0] < frame.x0 or box[1] < frame.y0 or box[2] > frame.x1 or box[3] > frame.y1
                )
                cost += 1e6 if outside else 0
                if cost < best_cost:
                    best, best_cost = (box, dist), cost
            if best_cost < 1:  # a free spot at this distance: take the nearest
                break
        box, dist = best
        placed.append(box)
        offset = ((box[0] - x) / scale, (box[1] - y) / scale)  # lower-left corner, points
        ann = ax.annotate(
            str(text),
            ax.transData.inverted().transform((x, y)),
            xytext=offset,
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=fontsize,
            color=color,
            zorder=zorder,
            arrowprops=dict(arrowstyle="-", color="0.4", lw=0.5, shrinkA=0, shrinkB=2)
            if dist > 7.0
            else None,
        )
        ann.set_in_layout(False)
        out.append(ann)
    return out


def _overlap(box, placed, points, radius) -> float:
    """Pixels² of ``box`` covered by the ``placed`` boxes plus 100 per point of ``points``
    within ``radius`` of it."""
    x0, y0, x1, y1 = box
    area = 0.0
    for a0, b0, a1, b1 in placed:
        area += max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
    if len(points):
        inside = (
            (points[:, 0] > x0 - radius)
            & (points[:, 0] < x1 + radius)
            & (points[:, 1] > y0 - radius)
            & (points[:, 1] < y1 + radius)
        )
        area += 100.0 * int(inside.sum())
    return area


def save(fig: Figure, path: str | Path, dpi: int = 150, close: bool = True) -> Path:
    """Write ``fig`` to ``path`` (parent folders created; ".png" added if there is no suffix) at
    ``dpi``, then close it unless ``close=False`` (a notebook shows a closed figure once, as the
    value of ``fig``; an open one would be shown a second time at the end of the cell). In a
    demo kernel (:func:`demo_mode`) the title is marked first (:func:`mark_demo`). Returns the
    path written."""
    if demo_mode():
        mark_demo(fig)
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return path
