"""Figures of datasets: clips per class and clip durations.

Used by: notebook 01_download.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .core import panels

__all__ = ["class_balance", "durations"]


def class_balance(
    balances: Mapping[str, pd.DataFrame], column: str = "clips", title: str | None = None
) -> Any:
    """One panel per dataset: horizontal bars of clips per class (01_download).

    ``balances``: ``{name: class_balance(...)}``; ``column``: ``"clips"`` (primary label) or
    ``"tagged"``. A dashed line marks the mean over classes, so imbalance shows at a glance.
    With no dataset, one empty panel says so. Returns the matplotlib Figure."""
    n_max = max((len(b) for b in balances.values()), default=1)
    fig, axes = panels(len(balances), 4.3, max(3.0, 0.17 * n_max + 1.4))
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


def durations(durations: Mapping[str, pd.Series], bins: int = 30) -> Any:
    """One histogram of clip durations (s) per dataset (01_download); unreadable (NaN) clips
    are left out and counted in the panel title. With no dataset, one empty panel says so."""
    fig, axes = panels(len(durations), 3.6, 2.8)
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
