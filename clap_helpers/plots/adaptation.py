"""Figures of the adaptation and robustness experiments (notebook 08).

:func:`compare_bars` (our modes next to the published numbers), :func:`accuracy_vs_snr` and
:func:`tau_sweep` (background-noise robustness with domain adaptation). Accuracies are fractions in
the inputs and shown in %.

Used by: notebook 08_adaptation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..evaluation import adapt
from ..evaluation.robustness import snr_table, tau_table
from .core import fig_ax, root_figure, shorten

__all__ = ["accuracy_vs_snr", "compare_bars", "tau_sweep"]

_MODE_COLOURS = {
    "zs": "tab:blue",
    "tgap": "tab:orange",
    "sv": "tab:green",
    "linear": "tab:red",
    "label_free": "tab:purple",
}


_METHOD_COLOURS = {
    "zero-shot": "tab:blue",
    "tgap": "tab:orange",
    "sv": "tab:green",
    "linear probe": "tab:red",
    "label_free (inductive)": "tab:purple",
    "label_free (transductive)": "tab:purple",
    "training-free": "tab:purple",
}


_ADAPT_STYLES = {"none": "-", "text": "--", "audio": ":"}


_ADAPT_MARKERS = {"none": "o", "text": "s", "audio": "^"}


def compare_bars(
    table: pd.DataFrame, ax: Axes | None = None, title: str | None = None, max_chars: int = 44
) -> Figure:
    """Horizontal bars: our modes (mean ± std over folds) above the published accuracies.

    Args:
        table: :func:`clap_helpers.evaluation.adapt.compare_table` output (``source``, ``model``,
            ``method``, ``accuracy`` and ``std`` in %).
        ax: draw into this Axes, else a new figure.
        title: axes title.
        max_chars: published model names are shortened to this many characters.

    Our bars are solid with error bars (std over folds); published bars are pale and hatched,
    coloured by method (zero-shot blue, linear probe red), so each of our bars can be read
    against the published numbers of the same method. Returns the Figure.

    Used by: notebook 08_adaptation.
    """
    ours = table[table["source"] == "ours"]
    published = table[table["source"] == "published"].sort_values(
        ["method", "accuracy"], ascending=[False, False], kind="stable"
    )
    n = len(ours) + len(published)
    fig, ax = fig_ax(ax, (8.0, max(3.0, 0.32 * n + 1.2)))
    gap = 0.8 if len(ours) and len(published) else 0.0
    y_ours = np.arange(len(ours), dtype=float)
    y_pub = len(ours) + gap + np.arange(len(published), dtype=float)

    def colour(method: str) -> str:
        return _METHOD_COLOURS.get(method, "tab:gray")

    if len(ours):
        acc = ours["accuracy"].to_numpy(dtype=float)
        err = np.nan_to_num(ours["std"].to_numpy(dtype=float), nan=0.0)
        bars = ax.barh(y_ours, acc, xerr=err, color=[colour(m) for m in ours["method"]], capsize=3)
        ax.bar_label(bars, labels=list(ours["text"]), fontsize=7, padding=4)
    if len(published):
        acc = published["accuracy"].to_numpy(dtype=float)
        bars = ax.barh(
            y_pub,
            acc,
            color=[colour(m) for m in published["method"]],
            alpha=0.35,
            hatch="//",
            edgecolor="white",
        )
        ax.bar_label(bars, labels=list(published["text"]), fontsize=7, padding=2)
    labels = [f"ours ({m}) · {meth}" for m, meth in zip(ours["model"], ours["method"], strict=True)]
    labels = [shorten(s, max_chars + 12) for s in labels]
    labels += [
        f"{shorten(m, max_chars)} · {meth}"
        for m, meth in zip(published["model"], published["method"], strict=True)
    ]
    ax.set_yticks(np.concatenate([y_ours, y_pub]), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return fig


def accuracy_vs_snr(
    long: pd.DataFrame,
    tau: float = adapt.DEFAULT_TAU,
    ax: Axes | None = None,
    title: str | None = None,
    chance: float | None = None,
) -> Figure:
    """Accuracy (%) against condition, one line per method, error bars = std over folds.

    x runs from ``clean`` to the lowest SNR (equally spaced); colour = mode, line style =
    adaptation (solid none, dashed text, dotted audio) at strength ``tau``. Lines are shifted
    sideways a little so the error bars do not hide each other. ``chance`` (a fraction, e.g.
    ``1 / n_classes``) adds a grey reference line. Returns the Figure.

    Used by: notebook 08_adaptation.
    """
    mean = snr_table(long, tau, "mean")
    std = snr_table(long, tau, "std")
    fig, ax = fig_ax(ax, (7.0, 4.2))
    x = np.arange(mean.shape[1], dtype=float)
    n = len(mean)
    for i, method in enumerate(mean.index):
        mode, _, rest = method.partition(" + ")
        kind = rest.split(" ")[0] if rest else "none"
        shift = (i - (n - 1) / 2) * min(0.05, 0.3 / max(n, 1))
        ax.errorbar(
            x + shift,
            100 * mean.loc[method].to_numpy(dtype=float),
            yerr=100 * np.nan_to_num(std.loc[method].to_numpy(dtype=float)),
            color=_MODE_COLOURS.get(mode, "tab:gray"),
            ls=_ADAPT_STYLES.get(kind, "-"),
            marker=_ADAPT_MARKERS.get(kind, "o"),
            ms=5,
            capsize=2,
            lw=1.5,
            label=method,
        )
    if chance is not None:
        ax.axhline(100 * chance, color="gray", ls="-.", lw=1, label="chance")
    ax.set_xticks(x, list(mean.columns))
    ax.set_xlabel("foreground-to-background SNR")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title if title else f"accuracy against background level (DA tau = {tau:g})")
    return fig


def tau_sweep(
    long: pd.DataFrame, axes: Sequence[Axes] | None = None, title: str | None = None
) -> Figure:
    """One panel per condition: accuracy (%) of each adapted method against tau.

    tau = 0 is the unadapted method, so a line going up means adaptation helps at that strength.
    ``axes``: one Axes per condition (clean first), else a new figure. Returns the Figure.

    Used by: notebook 08_adaptation.
    """
    table = tau_table(long)
    conditions = list(dict.fromkeys(table.index.get_level_values("condition")))
    methods = list(dict.fromkeys(table.index.get_level_values("method")))
    taus = np.array([float(t) for t in table.columns])
    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            1,
            len(conditions),
            figsize=(2.6 * len(conditions) + 1.8, 3.4),
            sharey=True,
            layout="constrained",
            squeeze=False,
        )
        axes = list(axes[0])
    else:
        axes = list(axes)
        if len(axes) != len(conditions):
            raise ValueError(f"need {len(conditions)} axes (one per condition), got {len(axes)}")
        fig = root_figure(axes[0])
    for ax, cond in zip(axes, conditions, strict=True):
        for method in methods:
            mode, _, rest = method.partition(" + ")
            kind = rest.split(" ")[0]
            ax.plot(
                taus,
                100 * table.loc[(method, cond)].to_numpy(dtype=float),
                color=_MODE_COLOURS.get(mode, "tab:gray"),
                ls=_ADAPT_STYLES.get(kind, "-"),
                marker=_ADAPT_MARKERS.get(kind, "o"),
                ms=4,
                label=method,
            )
        ax.set_title(cond, fontsize=10)
        ax.set_xticks(taus, [f"{t:g}" for t in taus])
        ax.set_xlabel("tau")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title if title else "domain adaptation strength (tau 0: not adapted)")
    return fig
