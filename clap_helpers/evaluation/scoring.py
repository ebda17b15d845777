"""The scoring core: scores, predictions, ranks, top-k and confusion counts of embeddings.

Every evaluation in the project goes through these functions. Inputs are audio embeddings (N, D)
and class prototypes (C, D): zero-shot is the case prototypes = class text embeddings; adaptation
(:mod:`~clap_helpers.evaluation.adapt`) and label-free methods move the prototypes and score the
same way. A clip whose audio failed to load has a NaN row, which every function excludes and counts
as failed. Ranking ties are broken towards the lowest class index everywhere (``argmax`` and stable
sorts agree). A ``k`` larger than the number of classes C is clipped to C.

Used by: notebooks 02-11 through :mod:`~clap_helpers.evaluation.zeroshot`,
:mod:`~clap_helpers.evaluation.adapt`, :mod:`~clap_helpers.evaluation.compare` and the search app.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "as_2d",
    "as_labels",
    "check_text",
    "confusion_matrix",
    "predict",
    "predict_scores",
    "scores",
    "topk_accuracy",
    "topk_confusion_matrix",
    "topk_indices",
    "true_class_rank",
    "valid_rows",
]


# --------------------------------------------------------------------------------------- helpers
def as_2d(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


def as_labels(
    labels: Any, n: int, n_classes: int | None = None, name: str = "labels"
) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and not np.all(np.isfinite(arr.astype(float)) & (arr == np.round(arr))):
            raise ValueError(f"{name} must be integer class indices")
        arr = arr.astype(np.int64)
    arr = arr.astype(np.int64, copy=False)
    if n_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes}), got {arr.min()}..{arr.max()}")
    return arr


def valid_rows(emb: Any) -> np.ndarray:
    """(N,) bool: rows whose values are all finite (a failed clip has a NaN row)."""
    return np.isfinite(as_2d(emb, "emb")).all(axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def check_text(text_emb: Any, dim: int) -> np.ndarray:
    text = as_2d(text_emb, "text_emb")
    if text.shape[1] != dim:
        raise ValueError(f"text_emb has dimension {text.shape[1]}, audio_emb {dim}")
    if not np.isfinite(text).all():
        raise ValueError("text_emb contains NaN or inf")
    return text


# ---------------------------------------------------------------------------------------- scores
def scores(
    audio_emb: Any, text_emb: Any, logit_scale: float | None = None, *, cosine: bool = True
) -> np.ndarray:
    """(N, C) class scores of audio (N, D) against class prototypes (C, D).

    Zero-shot is the case prototypes = class text embeddings. ``cosine=True``: cosine similarity
    (rows are re-normalised first, which changes nothing for L2-normalised input);
    ``cosine=False``: the plain dot product ``A P^T`` (adapted prototypes of
    :mod:`clap_helpers.evaluation.adapt` keep their norms). With ``logit_scale`` (the multiplier
    itself, e.g. ``model.logit_scale_a.exp()``), the softmax over classes of ``logit_scale *
    score``, as the transformers pipeline reports; the ranking is the same. NaN rows of
    ``audio_emb`` give NaN rows."""
    audio = as_2d(audio_emb, "audio_emb")
    text = check_text(text_emb, audio.shape[1])
    dtype = np.result_type(audio.dtype, text.dtype, np.float32)
    if cosine:
        s = _normalise(audio.astype(dtype, copy=False)) @ _normalise(text.astype(dtype)).T
    else:
        s = audio.astype(dtype, copy=False) @ text.astype(dtype).T
    if logit_scale is None:
        return s
    z = float(logit_scale) * s.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype)


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, C)) class indices by decreasing score, ties to the lowest index; -1 rows for
    NaN score rows."""
    s = as_2d(scores, "scores")
    k = max(1, min(int(k), s.shape[1]))
    ok = np.isfinite(s).all(axis=1)
    out = np.full((s.shape[0], k), -1, dtype=np.int64)
    if ok.any() and k == 1:  # argmax returns the first (lowest) index among ties
        out[ok, 0] = np.argmax(s[ok], axis=1)
    elif ok.any():
        out[ok] = np.argsort(-s[ok], axis=1, kind="stable")[:, :k]
    return out


def predict_scores(scores: np.ndarray) -> np.ndarray:
    """(N,) int64 top-1 class of (N, C) scores (ties to the lowest index); -1 for NaN rows."""
    return topk_indices(scores, 1)[:, 0]


def predict(audio_emb: Any, text_emb: Any, k: int = 1) -> np.ndarray:
    """Top-1 class per clip (N,) for ``k=1``, else the top-k classes (N, min(k, C));
    -1 for failed (NaN) clips."""
    idx = topk_indices(scores(audio_emb, text_emb), k)
    return idx[:, 0] if k == 1 else idx


def true_class_rank(scores: np.ndarray, labels: Any) -> np.ndarray:
    """(N,) 0-based rank of the true class under the tie rule (0 = top-1); -1 for NaN rows.
    The clip is top-k correct iff ``0 <= rank < k``."""
    s = as_2d(scores, "scores")
    y = as_labels(labels, s.shape[0], s.shape[1])
    ok = np.isfinite(s).all(axis=1)
    rank = np.full(s.shape[0], -1, dtype=np.int64)
    if ok.any():
        sv, yv = s[ok], y[ok]
        true = sv[np.arange(len(yv)), yv][:, None]
        before = np.arange(s.shape[1])[None, :] < yv[:, None]
        rank[ok] = (sv > true).sum(axis=1) + ((sv == true) & before).sum(axis=1)
    return rank


def topk_accuracy(scores: np.ndarray, labels: Any, k: int) -> float:
    """Fraction of non-NaN rows whose true class is among the top ``min(k, C)``; NaN if none."""
    rank = true_class_rank(scores, labels)
    ok = rank >= 0
    k = min(int(k), as_2d(scores, "scores").shape[1])
    return float(np.mean(rank[ok] < k)) if ok.any() else math.nan


def confusion_matrix(labels: Any, predictions: Any, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted; predictions < 0 skipped."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    keep = p >= 0
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (y[keep], p[keep]), 1)
    return conf


def topk_confusion_matrix(scores: np.ndarray, labels: Any, k: int = 3) -> np.ndarray:
    """(C, C) int64 "top-k confusion": a clip whose true class is in its top k counts on the
    diagonal, any other clip at (true, top-1 prediction). Rows sum to the clips per class, the
    trace over the total is the top-k accuracy. NaN rows are skipped."""
    s = as_2d(scores, "scores")
    y = as_labels(labels, s.shape[0], s.shape[1])
    rank = true_class_rank(s, y)
    pred = topk_indices(s, 1)[:, 0]
    pred = np.where((rank >= 0) & (rank < k), y, pred)
    return confusion_matrix(y, pred, s.shape[1])
