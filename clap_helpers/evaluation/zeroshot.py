"""Zero-shot evaluation on precomputed embeddings (no model here).

Inputs: audio embeddings (N, D) and class text embeddings (C, D), float, L2-normalised rows; a clip
whose audio failed to load has a NaN row, which every function excludes and counts as failed.
Scores are cosine similarities ``audio_emb @ text_emb.T``. Ranking ties are broken towards the
lowest class index, everywhere (``argmax`` and stable sorts agree on this). A ``k`` larger than the
number of classes C is clipped to C (the metric key still names the requested k).

Used by 02_esc50_zeroshot (:func:`evaluate`, :func:`per_fold`), 03_augmented_labels
(:func:`results_table`, :func:`class_deltas`), 04_urbansound8k_topk, 05_fma,
06_audioset_subset (:func:`evaluate_multilabel`) and 07_tsne; :func:`to_jsonable` writes results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "class_deltas",
    "confusion_matrix",
    "evaluate",
    "evaluate_multilabel",
    "per_fold",
    "predict",
    "results_table",
    "scores",
    "to_jsonable",
    "topk_accuracy",
    "topk_confusion_matrix",
    "topk_indices",
    "true_class_rank",
    "valid_rows",
]


# --------------------------------------------------------------------------------------- helpers
def _as_2d(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


def _as_labels(
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
    return np.isfinite(_as_2d(emb, "emb")).all(axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _check_text(text_emb: Any, dim: int) -> np.ndarray:
    text = _as_2d(text_emb, "text_emb")
    if text.shape[1] != dim:
        raise ValueError(f"text_emb has dimension {text.shape[1]}, audio_emb {dim}")
    if not np.isfinite(text).all():
        raise ValueError("text_emb contains NaN or inf")
    return text


# ---------------------------------------------------------------------------------------- scores
def scores(audio_emb: Any, text_emb: Any, logit_scale: float | None = None) -> np.ndarray:
    """(N, C) class scores.

    Cosine similarity (rows are re-normalised first, which changes nothing for L2-normalised
    input). With ``logit_scale`` (the multiplier itself, e.g. ``model.logit_scale_a.exp()``), the
    softmax over classes of ``logit_scale * cosine``, as the transformers pipeline reports; the
    ranking is the same. NaN rows of ``audio_emb`` give NaN rows."""
    audio = _as_2d(audio_emb, "audio_emb")
    text = _check_text(text_emb, audio.shape[1])
    dtype = np.result_type(audio.dtype, text.dtype, np.float32)
    s = _normalise(audio.astype(dtype, copy=False)) @ _normalise(text.astype(dtype)).T
    if logit_scale is None:
        return s
    z = float(logit_scale) * s.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype)


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, C)) class indices by decreasing score, ties to the lowest index; -1 rows for
    NaN score rows."""
    s = _as_2d(scores, "scores")
    k = max(1, min(int(k), s.shape[1]))
    ok = np.isfinite(s).all(axis=1)
    out = np.full((s.shape[0], k), -1, dtype=np.int64)
    if ok.any() and k == 1:  # argmax returns the first (lowest) index among ties
        out[ok, 0] = np.argmax(s[ok], axis=1)
    elif ok.any():
        out[ok] = np.argsort(-s[ok], axis=1, kind="stable")[:, :k]
    return out


def predict(audio_emb: Any, text_emb: Any, k: int = 1) -> np.ndarray:
    """Top-1 class per clip (N,) for ``k=1``, else the top-k classes (N, min(k, C));
    -1 for failed (NaN) clips."""
    idx = topk_indices(scores(audio_emb, text_emb), k)
    return idx[:, 0] if k == 1 else idx


def true_class_rank(scores: np.ndarray, labels: Any) -> np.ndarray:
    """(N,) 0-based rank of the true class under the tie rule (0 = top-1); -1 for NaN rows.
    The clip is top-k correct iff ``0 <= rank < k``."""
    s = _as_2d(scores, "scores")
    y = _as_labels(labels, s.shape[0], s.shape[1])
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
    k = min(int(k), _as_2d(scores, "scores").shape[1])
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
    s = _as_2d(scores, "scores")
    y = _as_labels(labels, s.shape[0], s.shape[1])
    rank = true_class_rank(s, y)
    pred = topk_indices(s, 1)[:, 0]
    pred = np.where((rank >= 0) & (rank < k), y, pred)
    return confusion_matrix(y, pred, s.shape[1])


# ------------------------------------------------------------------------------------ evaluation
def evaluate(
    audio_emb: Any, labels: Any, text_emb: Any, ks: Sequence[int] = (1, 3, 5)
) -> dict[str, Any]:
    """Single-label zero-shot evaluation (02_esc50_zeroshot, 03, 04_urbansound8k_topk, 05_fma).

    audio_emb (N, D), labels (N,) int in [0, C), text_emb (C, D). Returns a dict:

    - ``"top{k}"`` for each k in ``ks``: accuracy as a fraction of the clips scored
      (k clipped to C, key named by the requested k);
    - ``"confusion"``: (C, C) int64, rows = true class, columns = top-1 prediction; rows sum to the
      scored clips of each class;
    - ``"per_class"``: (C,) float top-1 accuracy, NaN for classes without scored clips;
    - ``"support"``: (C,) int, scored clips per class;
    - ``"n"``: clips scored; ``"n_failed"``: NaN rows excluded;
    - ``"predictions"``: (N,) int top-1 class, -1 for failed rows;
    - ``"true_rank"``: (N,) int rank of the true class (0 = top-1), -1 for failed rows; top-k
      accuracy for any k is ``mean(true_rank[true_rank >= 0] < k)``.

    The (N, C) scores are not stored; get them from :func:`scores`."""
    audio = _as_2d(audio_emb, "audio_emb")
    text = _check_text(text_emb, audio.shape[1])
    n_classes = text.shape[0]
    y = _as_labels(labels, audio.shape[0], n_classes)
    s = scores(audio, text)
    rank = true_class_rank(s, y)
    pred = topk_indices(s, 1)[:, 0]
    ok = rank >= 0
    n = int(ok.sum())
    out: dict[str, Any] = {}
    for k in ks:
        kk = min(int(k), n_classes)
        out[f"top{int(k)}"] = float(np.mean(rank[ok] < kk)) if n else math.nan
    conf = confusion_matrix(y, pred, n_classes)
    support = conf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.nan)
    out.update(
        confusion=conf,
        per_class=per_class.astype(np.float64),
        support=support,
        n=n,
        n_failed=int(audio.shape[0] - n),
        predictions=pred,
        true_rank=rank,
    )
    return out


def _metric_columns(keys: Sequence[str]) -> list[str]:
    topk = sorted((k for k in keys if re.fullmatch(r"top\d+", k)), key=lambda k: int(k[3:]))
    hits = sorted((k for k in keys if re.fullmatch(r"top\d+_hit", k)), key=lambda k: int(k[3:-4]))
    rest = [k for k in ("top1_primary", "mAP", "n", "n_failed") if k in keys]
    return topk + hits + rest


def per_fold(
    audio_emb: Any, labels: Any, folds: Any, text_emb: Any, ks: Sequence[int] = (1, 3, 5)
) -> pd.DataFrame:
    """Zero-shot accuracy per fold (02_esc50_zeroshot, 04_urbansound8k_topk).

    One row per fold (index = sorted fold values, name "fold"), then a "mean" row (unweighted mean
    over folds; its ``n``/``n_failed`` are the totals) and a "std" row (sample std over folds,
    ddof=1, NaN for a single fold). Columns ``top{k}`` for ``ks``, ``n``, ``n_failed``; float."""
    audio = _as_2d(audio_emb, "audio_emb")
    folds = np.asarray(folds)
    if folds.shape != (audio.shape[0],):
        raise ValueError(f"folds must have shape ({audio.shape[0]},), got {folds.shape}")
    y = np.asarray(labels)
    metrics = [f"top{int(k)}" for k in ks]
    cols = [*metrics, "n", "n_failed"]
    rows: dict[Any, dict[str, float]] = {}
    for f in sorted(pd.unique(folds).tolist()):
        m = folds == f
        r = evaluate(audio[m], y[m], text_emb, ks)
        rows[f] = {c: float(r[c]) for c in cols}
    folds_df = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    mean = {**folds_df[metrics].mean().to_dict(), "n": folds_df["n"].sum()}
    mean["n_failed"] = folds_df["n_failed"].sum()
    std = {**folds_df[metrics].std(ddof=1).to_dict(), "n": np.nan, "n_failed": np.nan}
    data = [*rows.values(), mean, std]
    index = pd.Index([*rows, "mean", "std"], dtype=object, name="fold")
    return pd.DataFrame(data, index=index, columns=cols, dtype=float)


def evaluate_multilabel(
    audio_emb: Any,
    label_matrix: Any,
    text_emb: Any,
    ks: Sequence[int] = (1, 3, 5),
    primary: Any = None,
) -> dict[str, Any]:
    """Multi-label evaluation (AudioSet subset, 06_audioset_subset).

    audio_emb (N, D), label_matrix (N, C) bool (True = class present), text_emb (C, D). Returns:

    - ``"mAP"``: mean over classes with at least one positive among scored clips of sklearn's
      ``average_precision_score`` on the cosine scores; ``"per_class_ap"``: (C,), NaN for classes
      without positives; ``"support"``: (C,) positives per class;
    - ``"top{k}_hit"``: fraction of scored clips with any true label among their top min(k, C);
      clips without any label count as misses;
    - ``"top1_primary"`` (only if ``primary`` (N,) int is given): top-1 accuracy against it,
      over scored clips with ``primary >= 0``;
    - ``"n"``, ``"n_failed"``, ``"predictions"`` ((N,) top-1, -1 for failed rows)."""
    from sklearn.metrics import average_precision_score

    audio = _as_2d(audio_emb, "audio_emb")
    text = _check_text(text_emb, audio.shape[1])
    n_classes = text.shape[0]
    Y = np.asarray(label_matrix).astype(bool)
    if Y.shape != (audio.shape[0], n_classes):
        raise ValueError(f"label_matrix must be ({audio.shape[0]}, {n_classes}), got {Y.shape}")
    s = scores(audio, text)
    ok = np.isfinite(s).all(axis=1)
    sv, Yv = s[ok].astype(np.float64), Y[ok]
    support = Yv.sum(axis=0)
    ap = np.full(n_classes, np.nan)
    for c in np.flatnonzero(support > 0):
        ap[c] = average_precision_score(Yv[:, c], sv[:, c])
    n = int(ok.sum())
    out: dict[str, Any] = {"mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan}
    kmax = min(max(int(k) for k in ks), n_classes) if ks else 1
    top = topk_indices(sv, kmax) if n else np.zeros((0, kmax), dtype=np.int64)
    for k in ks:
        kk = min(int(k), n_classes)
        hit = np.take_along_axis(Yv, top[:, :kk], axis=1).any(axis=1)
        out[f"top{int(k)}_hit"] = float(hit.mean()) if n else math.nan
    pred = topk_indices(s, 1)[:, 0]
    if primary is not None:
        p = _as_labels(primary, audio.shape[0], name="primary")
        if p.size and p.max() >= n_classes:
            raise ValueError(f"primary must be < {n_classes}")
        m = ok & (p >= 0)
        out["top1_primary"] = float(np.mean(pred[m] == p[m])) if m.any() else math.nan
    out.update(
        per_class_ap=ap,
        support=support.astype(np.int64),
        n=n,
        n_failed=int(audio.shape[0] - n),
        predictions=pred,
    )
    return out


# ----------------------------------------------------------------------------------- comparisons
def results_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Compare strategies (03_augmented_labels, 05_fma, 06_audioset_subset).

    One row per entry of ``results`` (insertion order, index "strategy"), columns the scalar
    metrics found: ``top{k}`` by k, ``top{k}_hit``, ``top1_primary``, ``mAP``,
    ``n``, ``n_failed``. Works on :func:`evaluate`/:func:`evaluate_multilabel` results and on their
    :func:`to_jsonable` form."""
    keys: list[str] = []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    cols = _metric_columns(keys)
    data = {
        name: {c: (np.nan if r.get(c) is None else float(r[c])) for c in cols}
        for name, r in results.items()
    }
    df = pd.DataFrame.from_dict(data, orient="index", columns=cols)
    df.index.name = "strategy"
    return df


def class_deltas(res_a: Any, res_b: Any, classes: Sequence[str]) -> pd.DataFrame:
    """Per-class change from result A to result B, "which classes gain and lose"
    (03_augmented_labels).

    ``res_a``/``res_b``: results of :func:`evaluate` (uses ``per_class``), of
    :func:`evaluate_multilabel` (uses ``per_class_ap``) or (C,) arrays. Returns a DataFrame indexed
    by class name (index "class") with columns ``a``, ``b``, ``delta`` (= b - a) and ``support``
    (if known), sorted by delta descending (biggest gain first, NaN last, ties by class order)."""

    def per_class(r: Any) -> np.ndarray:
        if isinstance(r, Mapping):
            key = "per_class" if "per_class" in r else "per_class_ap"
            r = r[key]
        return np.asarray([np.nan if v is None else v for v in r], dtype=np.float64)

    a, b = per_class(res_a), per_class(res_b)
    if not (len(a) == len(b) == len(classes)):
        raise ValueError(f"lengths differ: a {len(a)}, b {len(b)}, classes {len(classes)}")
    df = pd.DataFrame({"a": a, "b": b, "delta": b - a}, index=pd.Index(list(classes), name="class"))
    for r in (res_a, res_b):
        if isinstance(r, Mapping) and "support" in r:
            df["support"] = np.asarray(r["support"])
            break
    order = np.lexsort((np.arange(len(df)), -np.nan_to_num(df["delta"].to_numpy(), nan=-np.inf)))
    return df.iloc[order]


def to_jsonable(result: Any) -> Any:
    """Plain Python for the results JSON every notebook writes (``json.dump``).

    Recursive over dicts, lists, numpy arrays and scalars, DataFrames: arrays -> nested lists,
    numpy scalars -> int/float/bool, NaN/inf -> None (strict JSON), DataFrame ->
    {index: {column: value}}, non-string keys -> str."""
    if isinstance(result, pd.DataFrame):
        return to_jsonable(result.to_dict(orient="index"))
    if isinstance(result, pd.Series):
        return to_jsonable(result.to_dict())
    if isinstance(result, Mapping):
        return {
            (k if isinstance(k, str) else str(to_jsonable(k))): to_jsonable(v)
            for k, v in result.items()
        }
    if isinstance(result, np.ndarray):
        return to_jsonable(result.tolist())
    if isinstance(result, (list, tuple)):
        return [to_jsonable(v) for v in result]
    if isinstance(result, (bool, np.bool_)):
        return bool(result)
    if isinstance(result, (int, np.integer)):
        return int(result)
    if isinstance(result, (float, np.floating)):
        v = float(result)
        return v if math.isfinite(v) else None
    return result
