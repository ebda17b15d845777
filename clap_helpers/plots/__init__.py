"""Plots: every figure of the project, one naming convention.

Each function is named after what it draws (``confusion_matrix``, ``strategy_bars``,
``embedding_map``, ``accuracy_vs_snr``), draws into ``ax`` when given, otherwise creates a new
figure, and returns the Figure; none calls ``plt.show()``. :func:`save` writes a PNG.

Modules: ``core`` (shared helpers, :func:`save`), ``datasets`` (clips per class, durations),
``audio`` (waveform and log-mel, augmentation), ``scores`` (confusion matrices, bars, learning
curves), ``maps`` (t-SNE/PCA embedding maps, query maps), ``adaptation`` (notebook 08's figures).
All public functions are available here: ``ch.plots.confusion_matrix(...)``.
"""

from .adaptation import accuracy_vs_snr, compare_bars, tau_sweep
from .audio import augmentation, compute_logmel, waveform_and_logmel
from .core import class_colors, demo_mode, mark_demo, model_name, place_labels, save
from .datasets import class_balance, durations
from .maps import embedding_coords, embedding_map, pca_axis_labels, query_map, query_maps
from .scores import (
    ap_bars,
    class_deltas,
    confusion_grid,
    confusion_matrix,
    learning_curves,
    per_fold_bars,
    strategy_bars,
    topk_confusion,
    window_accuracy,
)

__all__ = [
    "accuracy_vs_snr",
    "ap_bars",
    "augmentation",
    "class_balance",
    "class_colors",
    "class_deltas",
    "compare_bars",
    "compute_logmel",
    "demo_mode",
    "confusion_grid",
    "confusion_matrix",
    "durations",
    "embedding_coords",
    "embedding_map",
    "learning_curves",
    "mark_demo",
    "model_name",
    "pca_axis_labels",
    "place_labels",
    "query_map",
    "per_fold_bars",
    "query_maps",
    "save",
    "strategy_bars",
    "tau_sweep",
    "topk_confusion",
    "waveform_and_logmel",
    "window_accuracy",
]
