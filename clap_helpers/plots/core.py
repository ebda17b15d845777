"""Shared figure helpers: one way to get a figure and axes, colours, names, saving.

Every plotting function of :mod:`clap_helpers.plots` draws into ``ax`` (or ``axes``) when given,
otherwise creates a new pyplot figure with constrained layout, and returns the Figure. Nothing
calls ``plt.show()`` or saves on its own; :func:`save` writes a PNG and closes the figure.

Used by: every notebook that draws (01-11), through :mod:`clap_helpers.plots`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["class_colors", "display_name", "fig_ax", "panels", "root_figure", "save", "shorten"]


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
