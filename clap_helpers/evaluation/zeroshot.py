"""Zero-shot evaluation on precomputed embeddings (no model here).

Inputs: audio embeddings (N, D) and class text embeddings (C, D), float, L2-normalised rows; a clip
whose audio failed to load has a NaN row, which every function excludes and counts as failed.
Scores are cosine similarities ``audio_emb @ text_emb.T``. Ranking ties are broken towards the
lowest class index, everywhere (``argmax`` and stable sorts agree on this). A ``k`` larger than the
number of classes C is clipped to C (the metric key still names the requested k); a top-k with
k >= C is 100 % whatever the model, so the notebooks ask only for :func:`useful_ks` and compare
with :func:`chance_levels`.

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
    "chance_levels",
    "evaluate_strategies",
    "gains_and_losses",
    "per_class_topk",
    "top_confusions",
    "class_deltas",
    "confusion_matrix",
    "evaluate",
    "evaluate_multilabel",
    "per_fold",
    "predict",
    "results_table",
    "scores",
    "topk_accuracy",
    "topk_confusion_matrix",
    "topk_indices",
    "topk_line",
    "true_class_rank",
    "useful_ks",
    "valid_rows",
]


from .scoring import (  # noqa: F401 - the scoring core, re-exported for the notebooks
    as_2d as _as_2d,
)
from .scoring import (
    as_labels as _as_labels,
)
from .scoring import (
    check_text as _check_text,
)
from .scoring import (
    confusion_matrix,
    predict,
    scores,
    topk_accuracy,
    topk_confusion_matrix,
    topk_indices,
    true_class_rank,
    valid_rows,
)


# ------------------------------------------------------------------------------------ evaluation
def useful_ks(ks: Sequence[int], n_classes: int) -> tuple[int, ...]:
    """The ``ks`` that say something with ``n_classes`` classes: k = 1 and every k < C (a top-k
    with k >= C counts every clip as right). ``useful_ks((1, 3, 5), 4) == (1, 3)``."""
    return tuple(int(k) for k in ks if int(k) == 1 or int(k) < n_classes)


def chance_levels(ks: Sequence[int], n_classes: int) -> dict[str, float]:
    """Top-k accuracy of a random ranking of ``n_classes`` classes: ``{"top{k}": min(k, C) / C}``
    (whatever the class balance)."""
    return {f"top{int(k)}": min(int(k), n_classes) / n_classes for k in ks}


def topk_line(result: Mapping[str, Any], hit: bool = False) -> str:
    """One line of a result's top-k numbers: ``"top-1 16.0 %  top-3 66.0 %  on 50 clips (0
    failed)"``; ``hit=True`` reads the ``top{k}_hit`` keys of :func:`evaluate_multilabel`."""
    pattern = r"top(\d+)_hit" if hit else r"top(\d+)"
    found = sorted(
        (int(m.group(1)), key) for key in result if (m := re.fullmatch(pattern, str(key)))
    )
    name = "top-{} hit" if hit else "top-{}"
    parts = [f"{name.format(k)} {100 * float(result[key]):.1f} %" for k, key in found]
    return "  ".join(parts) + f"  on {result['n']} clips ({result['n_failed']} failed)"


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


def evaluate_strategies(
    audio_emb: Any,
    clips: pd.DataFrame,
    classes: Sequence[str],
    text_sets: Mapping[str, Any],
    ks: Sequence[int] = (1, 3, 5),
) -> dict[str, dict[str, Any]]:
    """:func:`clap_helpers.evaluation.zeroshot.evaluate` for each prompt strategy (03_augmented_labels).

    audio_emb (N, D); ``clips`` from :func:`clap_helpers.data.loaders.load` (its ``target`` column
    is the label); ``text_sets`` ``{strategy: (C, D)}`` from
    :func:`clap_helpers.evaluation.prompts.embed_prompt_sets`. Top-k and per-class accuracy are always
    against the single (primary) label, so every dataset gets the same columns. For a
    multi-label dataset (a ``labels`` column: the AudioSet subset) each result also gets
    ``mAP``, ``per_class_ap`` and ``top{k}_hit`` (any true label in the top k) from
    :func:`clap_helpers.evaluation.zeroshot.evaluate_multilabel`. Returns ``{strategy: result}``, ready for
    :func:`clap_helpers.evaluation.zeroshot.results_table` and :func:`clap_helpers.evaluation.zeroshot.class_deltas`."""
    labels = clips["target"].to_numpy()
    multi = "labels" in clips.columns
    from ..data.loaders import label_matrix

    matrix = label_matrix(clips, list(classes)) if multi else None
    out = {}
    for name, text_emb in text_sets.items():
        result = evaluate(audio_emb, labels, text_emb, ks)
        if multi:
            extra = evaluate_multilabel(audio_emb, matrix, text_emb, ks)
            keep = ["mAP", "per_class_ap", *(f"top{int(k)}_hit" for k in ks)]
            result.update({k: extra[k] for k in keep})
        out[name] = result
    return out


def gains_and_losses(deltas: pd.DataFrame, n: int = 5) -> dict[str, Any]:
    """Summary of :func:`clap_helpers.evaluation.zeroshot.class_deltas` (03_augmented_labels).

    Returns ``{"gains": {class: delta}`` (the ``n`` largest positive deltas, largest first),
    ``"losses": {class: delta}`` (the ``n`` most negative, worst first), ``"n_gain"``,
    ``"n_loss"``, ``"n_same"`` (classes with a zero delta) and ``"n_undefined"`` (NaN delta: no
    clip of the class was scored)}``. Deltas are fractions (0.1 = 10 points)."""
    d = deltas["delta"].astype(float)
    defined = d[np.isfinite(d)]
    gains = defined[defined > 0].sort_values(ascending=False, kind="stable").head(n)
    losses = defined[defined < 0].sort_values(ascending=True, kind="stable").head(n)
    return {
        "gains": {str(k): float(v) for k, v in gains.items()},
        "losses": {str(k): float(v) for k, v in losses.items()},
        "n_gain": int((defined > 0).sum()),
        "n_loss": int((defined < 0).sum()),
        "n_same": int((defined == 0).sum()),
        "n_undefined": int(len(d) - len(defined)),
    }


def top_confusions(conf: Any, classes: Sequence[str], n: int = 10) -> pd.DataFrame:
    """The ``n`` most frequent mistakes in a confusion matrix (04_urbansound8k_topk).

    conf (C, C) counts, rows = true class, columns = predicted (``evaluate(...)["confusion"]``).
    Returns columns ``true``, ``predicted``, ``clips`` and ``share`` (of the true class's clips),
    off-diagonal non-zero cells only, most clips first (ties: larger share, then class order)."""
    mat = np.asarray(conf, dtype=np.int64)
    if mat.shape != (len(classes), len(classes)):
        raise ValueError(f"conf must be ({len(classes)}, {len(classes)}), got {mat.shape}")
    totals = mat.sum(axis=1)
    rows = [
        (classes[i], classes[j], int(mat[i, j]), mat[i, j] / totals[i], i, j)
        for i, j in zip(*np.nonzero(mat), strict=True)
        if i != j
    ]
    rows.sort(key=lambda r: (-r[2], -r[3], r[4], r[5]))
    table = pd.DataFrame([r[:4] for r in rows[:n]], columns=["true", "predicted", "clips", "share"])
    return table.astype({"clips": np.int64, "share": float})


def per_class_topk(
    true_rank: Any, labels: Any, classes: Sequence[str], ks: Sequence[int] = (1, 3, 5)
) -> pd.DataFrame:
    """Top-k accuracy of each class (04_urbansound8k_topk): index "class", columns ``clips``
    (scored clips of the class) and ``top{k}`` (fraction, NaN for a class without scored clips).

    ``true_rank`` (N,) from :func:`clap_helpers.evaluation.zeroshot.evaluate` (0 = top-1, -1 = failed
    clip, left out); labels (N,) int class indices."""
    rank = np.asarray(true_rank, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    if rank.shape != y.shape:
        raise ValueError(f"true_rank {rank.shape} and labels {y.shape} differ")
    ok = rank >= 0
    data: dict[str, list[float]] = {"clips": []}
    for k in ks:
        data[f"top{int(k)}"] = []
    for c in range(len(classes)):
        m = ok & (y == c)
        data["clips"].append(int(m.sum()))
        for k in ks:
            data[f"top{int(k)}"].append(float(np.mean(rank[m] < k)) if m.any() else math.nan)
    table = pd.DataFrame(data, index=pd.Index(list(classes), name="class"))
    return table.astype({"clips": np.int64})
