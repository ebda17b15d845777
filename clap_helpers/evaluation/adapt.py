"""Beyond zero-shot: class prototypes and probes built from CLAP embeddings, with per-fold evaluation.

Notation: ``a`` = L2-normalised audio embedding of a test clip, ``t_c`` = text embedding of class
``c``'s prompt, ``P`` = (C, D) matrix of class prototypes, ``s_c = a . p_c``, prediction = argmax.

Modes (see :func:`prototypes` and :func:`crossval`):

- ``"zs"``: zero-shot, ``P = T``; uses no training data.
- ``"tgap"``: text-guided audio prototypes; uses the training clips but *not their labels*:
  ``S = A_train T^T``, ``p_c`` = mean of the ``top_n`` training clips with the highest ``S[:, c]``
  (not re-normalised).
- ``"sv"``: supervised prototypes, ``p_c`` = mean of the training clips labelled ``c``.
- ``"linear"``: a logistic-regression probe (StandardScaler + LogisticRegression, fitted on the
  training folds only).
- ``"label_free"``: :func:`clap_helpers.evaluation.label_free.fit` (modality-gap centring, estimated class
  prior, Sinkhorn balanced assignment, prototype refinement) on an unlabelled pool: every clip
  (``transductive=True``) or the other folds' clips (``transductive=False``). Reads no label.

Domain adaptation against a known background (:func:`text_domain_adapt`,
:func:`audio_domain_adapt`) subtracts ``tau * beta_c`` from every score, where ``beta_c`` is the
mean similarity of the background embeddings to prototype ``p_c``. ``beta`` does not depend on the
test clip, so adaptation changes decisions only through one fixed offset per class: it removes a
bias towards classes whose prototypes resemble the background, it cannot re-rank clips within a
class.

Accuracies are fractions in [0, 1]; :func:`clap_helpers.evaluation.results.compare_table` puts
them in % next to the published numbers.

Used by: notebook 08_adaptation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..diagnostics import ClapWarning
from . import scoring

MODES = ("zs", "tgap", "sv", "linear")
LABEL_FREE = "label_free"  # also a crossval mode; it takes the extra `transductive` argument
PROTOTYPE_MODES = ("zs", "tgap", "sv")
DEFAULT_TOP_N = 35
DEFAULT_TAU = 0.5

__all__ = [
    "fold_table",
    "summarize_modes",
    "LABEL_FREE",
    "MODES",
    "audio_domain_adapt",
    "background_offsets",
    "crossval",
    "label_free_predict",
    "prototypes",
    "text_background_prompts",
    "text_domain_adapt",
]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def prototypes(
    mode: str,
    train_emb: np.ndarray | None,
    train_labels: np.ndarray | None,
    text_emb: np.ndarray | None,
    top_n: int = DEFAULT_TOP_N,
) -> np.ndarray:
    """Class prototypes ``P`` (C, D) float32 for ``mode`` in ``{"zs", "tgap", "sv"}``.

    Args:
        mode: ``"zs"`` (``P = T``), ``"tgap"`` or ``"sv"`` (see module docstring).
        train_emb: (N, D) training audio embeddings, finite rows only (unused for ``"zs"``).
        train_labels: (N,) ints in [0, C); only ``"sv"`` reads them (``None`` is fine otherwise).
        text_emb: (C, D) class text embeddings. ``"sv"`` uses ``t_c`` as the prototype of a class
            with no training clip (with a warning); it may be ``None`` only for ``"sv"`` when every
            class is present, in which case ``C = max(label) + 1``.
        top_n: ``"tgap"`` only: clips averaged per class, clipped to the number of training clips.

    Returns:
        (C, D) float32. tgap/sv prototypes are means of unit vectors, so their norm is <= 1.

    Used by: notebook 08_adaptation (via :func:`crossval`).
    """
    if mode not in PROTOTYPE_MODES:
        raise ValueError(f"mode must be one of {PROTOTYPE_MODES} for prototypes, got {mode!r}")
    T = None if text_emb is None else _as_2d(text_emb, "text_emb")
    if mode == "zs":
        if T is None:
            raise ValueError("mode 'zs' needs text_emb")
        return T.copy()

    A = _as_2d(train_emb, "train_emb")
    if A.shape[0] == 0:
        raise ValueError(f"mode {mode!r} needs at least one training clip")
    if T is not None and T.shape[1] != A.shape[1]:
        raise ValueError(f"train_emb has D={A.shape[1]} but text_emb has D={T.shape[1]}")

    if mode == "tgap":
        if T is None:
            raise ValueError("mode 'tgap' needs text_emb")
        if int(top_n) < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        k = min(int(top_n), A.shape[0])
        sim = A @ T.T  # (N, C)
        # Stable sort of -S: ties broken by clip order, so the result is deterministic.
        top = np.argsort(-sim, axis=0, kind="stable")[:k]  # (k, C)
        return A[top].mean(axis=0).astype(np.float32)  # (k, C, D) -> (C, D)

    # mode == "sv"
    if train_labels is None:
        raise ValueError("mode 'sv' needs train_labels")
    y = np.asarray(train_labels)
    if y.shape != (A.shape[0],):
        raise ValueError(f"train_labels has shape {y.shape}, expected ({A.shape[0]},)")
    n_classes = T.shape[0] if T is not None else int(y.max()) + 1
    _check_labels(y, n_classes)
    P = np.zeros((n_classes, A.shape[1]), dtype=np.float32)
    missing = []
    for c in range(n_classes):
        members = A[y == c]
        if len(members):
            P[c] = members.mean(axis=0)
        else:
            missing.append(c)
    if missing:
        if T is None:
            raise ValueError(f"classes {missing} have no training clip and no text_emb was given")
        warnings.warn(
            f"sv: classes {missing} have no training clip; using their text embeddings",
            ClapWarning,
            stacklevel=2,
        )
        P[missing] = T[missing]
    return P


# --------------------------------------------------------------------------------------------
# Domain adaptation
# --------------------------------------------------------------------------------------------


def text_background_prompts(background: str) -> list[str]:
    """The three prompts describing a background ``b`` (e.g. ``"park"``, ``"street traffic"``).

    Returns ``["This is a sound of {b}", "{B} sounds in the background",
    "This is a sound of {b} in the background"]`` where ``B`` is ``b`` with its first letter
    capitalised (the rest is kept as written). Embed them with the same text encoder as the class
    prompts and pass the (3, D) result to :func:`text_domain_adapt`.

    Used by: notebook 08_adaptation.
    """
    b = " ".join(str(background).split())
    if not b:
        raise ValueError("background must be a non-empty string")
    B = b[0].upper() + b[1:]
    return [
        f"This is a sound of {b}",
        f"{B} sounds in the background",
        f"This is a sound of {b} in the background",
    ]


def background_offsets(prototypes: np.ndarray, background_emb: np.ndarray) -> np.ndarray:
    """``beta_c = mean_k (B_k . p_c)``: (C, D) prototypes, (K, D) or (D,) background -> (C,) float32.

    Background rows containing NaN (failed files) are ignored; at least one must remain.
    """
    P = _as_2d(prototypes, "prototypes")
    B = np.asarray(background_emb, dtype=np.float32)
    if B.ndim == 1:
        B = B[None, :]
    B = _as_2d(B, "background_emb")
    if B.shape[1] != P.shape[1]:
        raise ValueError(f"background_emb has D={B.shape[1]} but prototypes have D={P.shape[1]}")
    B = B[np.isfinite(B).all(axis=1)]
    if B.shape[0] == 0:
        raise ValueError("background_emb has no finite row")
    return (B @ P.T).mean(axis=0).astype(np.float32)


def text_domain_adapt(
    scores: np.ndarray,
    prototypes: np.ndarray,
    background_text_emb: np.ndarray,
    tau: float = DEFAULT_TAU,
) -> np.ndarray:
    """Text domain adaptation: ``s'_c = s_c - tau * mean_k (B_k . p_c)``.

    Args:
        scores: (N, C) scores computed with ``prototypes``.
        prototypes: (C, D) prototypes (any mode).
        background_text_emb: (K, D) embeddings of :func:`text_background_prompts` (K = 3).
        tau: strength; 0 returns the scores unchanged (0.2, 0.5, 0.8 are the usual sweep).

    Returns:
        (N, C) float32 adapted scores. The offset is the same for every clip: only the per-class
        bias changes (see module docstring).

    Used by: notebook 08_adaptation.
    """
    return _adapt(scores, prototypes, background_text_emb, tau)


def audio_domain_adapt(
    scores: np.ndarray,
    prototypes: np.ndarray,
    background_audio_emb: np.ndarray,
    tau: float = DEFAULT_TAU,
) -> np.ndarray:
    """Audio domain adaptation: ``s'_c = s_c - tau * mean_j (e_j . p_c)``.

    ``background_audio_emb`` is (M, D): embeddings of background-only recordings (NaN rows of
    failed files are ignored). Otherwise as :func:`text_domain_adapt`.

    Used by: notebook 08_adaptation.
    """
    return _adapt(scores, prototypes, background_audio_emb, tau)


def _adapt(scores, prototypes, background, tau) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float32)
    P = _as_2d(prototypes, "prototypes")
    if s.ndim != 2 or s.shape[1] != P.shape[0]:
        raise ValueError(f"scores has shape {s.shape}, expected (N, {P.shape[0]})")
    beta = background_offsets(P, background)
    return (s - np.float32(tau) * beta[None, :]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Per-fold evaluation
# --------------------------------------------------------------------------------------------


def crossval(
    audio_emb: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray | Sequence,
    text_emb: np.ndarray | None,
    mode: str = "zs",
    *,
    top_n: int = DEFAULT_TOP_N,
    C: float = 1.0,
    max_iter: int = 1000,
    random_state: int = 0,
    adapt: tuple[str, np.ndarray] | None = None,
    tau: float = DEFAULT_TAU,
    transductive: bool = False,
    label_free: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Leave-one-fold-out accuracy of ``mode`` (``"zs"``, ``"tgap"``, ``"sv"``, ``"linear"`` or
    ``"label_free"``).

    For each fold ``f`` (sorted unique values of ``folds``): train = clips of the other folds,
    test = clips of ``f``. Rows of ``audio_emb`` containing NaN (failed files) are left out of
    both and counted in ``n_failed``.

    Args:
        audio_emb: (N, D) float32, L2-normalised rows; NaN rows = failed files.
        labels: (N,) ints in [0, C).
        folds: (N,) fold of each clip (ints such as 1-5 / 1-10, or strings).
        text_emb: (C, D) class text embeddings. May be ``None`` for ``"linear"`` (then
            ``C = max(label) + 1``).
        mode: see module docstring. ``"zs"`` ignores the training folds (scores are still
            reported per fold). ``"tgap"`` never reads training labels.
        top_n: ``"tgap"``: clips per class (default 35), clipped to the number of training clips.
        C, max_iter, random_state: ``"linear"``: inverse L2 strength, iterations and seed of
            ``LogisticRegression`` (lbfgs; deterministic). Inputs are standardised with a
            ``StandardScaler`` fitted on the training folds.
        adapt: ``None``, ``("text", B)`` with B (K, D) the embeddings of
            :func:`text_background_prompts`, or ``("audio", E)`` with E (M, D) embeddings of
            background-only recordings. Applied to each fold's prototypes (not for ``"linear"``).
        tau: adaptation strength (``s' = s - tau * beta``).
        transductive: ``"label_free"`` only: the unlabelled pool is every usable clip, the
            evaluation clips included (one fit for all folds); ``False`` (default): for each
            fold the pool is the other folds' audio, and the fitted model is applied to the
            held-out fold. A single fold needs ``transductive=True``.
        label_free: ``"label_free"`` only: keyword arguments of
            :func:`clap_helpers.evaluation.label_free.fit` (defaults: ``label_free.DEFAULTS``).
            ``text_emb`` may then also be an ensemble, (K, C, D).

    Returns:
        dict with ``per_fold`` {fold: accuracy in [0, 1]}, ``mean`` and ``std`` over folds
        (``std`` uses ddof=1 like pandas; NaN with a single fold), ``mode``, ``n_failed`` (NaN
        rows), ``n_test`` {fold: test clips used}, ``predictions`` (N,) int64 (-1 for failed
        rows), ``scores`` (N, C) float32 (NaN for failed rows; class probabilities for
        ``"linear"``), ``adapt`` (None/"text"/"audio"), ``tau``, ``top_n`` (tgap only);
        ``"label_free"`` adds ``transductive`` and ``prior`` (the estimated class proportions,
        (C,), averaged over folds when inductive). Its ``scores`` are the model's logits.

    Used by: notebook 08_adaptation.
    """
    if mode not in (*MODES, LABEL_FREE):
        raise ValueError(f"mode must be one of {(*MODES, LABEL_FREE)}, got {mode!r}")
    A = _as_2d(audio_emb, "audio_emb")
    n = A.shape[0]
    y = np.asarray(labels)
    f = np.asarray(folds)
    if y.shape != (n,) or f.shape != (n,):
        raise ValueError(f"labels {y.shape} and folds {f.shape} must both have shape ({n},)")
    if mode == "label_free":
        if adapt is not None:
            raise ValueError("domain adaptation (adapt=...) does not apply to mode 'label_free'")
        return _label_free_crossval(A, y, f, text_emb, transductive, label_free or {})
    T = None if text_emb is None else _as_2d(text_emb, "text_emb")
    if T is None and mode != "linear":
        raise ValueError(f"mode {mode!r} needs text_emb")
    if T is not None and T.shape[1] != A.shape[1]:
        raise ValueError(f"audio_emb has D={A.shape[1]} but text_emb has D={T.shape[1]}")

    ok = np.isfinite(A).all(axis=1)
    n_classes = T.shape[0] if T is not None else int(y[ok].max()) + 1
    _check_labels(y[ok], n_classes)
    adapt_kind, background = _parse_adapt(adapt, mode)

    fold_values = sorted(pd.unique(f).tolist())
    predictions = np.full(n, -1, dtype=np.int64)
    all_scores = np.full((n, n_classes), np.nan, dtype=np.float32)
    per_fold: dict[Any, float] = {}
    n_test: dict[Any, int] = {}
    for fold in fold_values:
        in_fold = f == fold
        test = in_fold & ok
        train = ~in_fold & ok
        n_test[fold] = int(test.sum())
        if not test.any():
            warnings.warn(f"fold {fold!r} has no usable test clip", ClapWarning, stacklevel=2)
            per_fold[fold] = float("nan")
            continue
        if mode == "linear":
            s = _linear_probe_scores(
                A[train], y[train], A[test], n_classes, C=C, max_iter=max_iter, seed=random_state
            )
        else:
            P = prototypes(mode, A[train], y[train], T, top_n=top_n)
            s = scoring.scores(A[test], P, cosine=False)  # adapted prototypes keep their norms
            if adapt_kind is not None:
                s = _adapt(s, P, background, tau)
        all_scores[test] = s
        predictions[test] = scoring.predict_scores(s)
        per_fold[fold] = float(np.mean(predictions[test] == y[test]))

    result = _fold_result(
        mode,
        per_fold,
        ok,
        n_test,
        predictions,
        all_scores,
        adapt=adapt_kind,
        tau=float(tau) if adapt_kind is not None else None,
    )
    if mode == "tgap":
        result["top_n"] = int(top_n)
    return result


def label_free_predict(audio_emb, text_emb, **options) -> dict[str, Any]:
    """Label-free classification of unlabelled clips; see
    :func:`clap_helpers.evaluation.label_free.label_free_predict` (same arguments and result).

    Used by: notebooks 02, 03, 04, 06, 08.
    """
    from . import label_free as lf

    return lf.label_free_predict(audio_emb, text_emb, **options)


def _label_free_crossval(A, y, f, text_emb, transductive, options) -> dict[str, Any]:
    """``crossval(mode="label_free")``: labels are read only to score the predictions."""
    from . import label_free as lf

    if text_emb is None:
        raise ValueError("mode 'label_free' needs text_emb")
    n_classes = lf.anchors(text_emb).shape[0]
    ok = np.isfinite(A).all(axis=1)
    _check_labels(y[ok], n_classes)
    fold_values = sorted(pd.unique(f).tolist())
    if not transductive and len(fold_values) < 2:
        raise ValueError(
            "label_free with transductive=False needs at least two folds (the pool of a fold is"
            " the other folds); pass transductive=True for a dataset without folds"
        )
    n = A.shape[0]
    predictions = np.full(n, -1, dtype=np.int64)
    all_scores = np.full((n, n_classes), np.nan, dtype=np.float32)
    priors = []
    if transductive:
        model = lf.fit(A[ok], text_emb, **options)
        all_scores[ok] = model.logits(A[ok])
        predictions[ok] = model.predict(A[ok])
        priors.append(model.prior)
    per_fold: dict[Any, float] = {}
    n_test: dict[Any, int] = {}
    for fold in fold_values:
        test = (f == fold) & ok
        n_test[fold] = int(test.sum())
        if not transductive:
            pool = (f != fold) & ok
            if not pool.any():
                raise ValueError(f"fold {fold!r}: the other folds have no usable clip")
            model = lf.fit(A[pool], text_emb, **options)
            priors.append(model.prior)
            if test.any():
                all_scores[test] = model.logits(A[test])
                predictions[test] = model.predict(A[test])
        if not test.any():
            warnings.warn(f"fold {fold!r} has no usable test clip", ClapWarning, stacklevel=3)
            per_fold[fold] = float("nan")
            continue
        per_fold[fold] = float(np.mean(predictions[test] == y[test]))
    return _fold_result(
        LABEL_FREE,
        per_fold,
        ok,
        n_test,
        predictions,
        all_scores,
        adapt=None,
        tau=None,
        transductive=bool(transductive),
        prior=np.mean(priors, axis=0),
    )


def _fold_result(mode, per_fold, ok, n_test, predictions, scores, **extra) -> dict[str, Any]:
    """The result dict every :func:`crossval` mode returns: per-fold accuracies, their mean and
    sample std over the folds that had test clips, failed-clip count, predictions and scores."""
    acc = np.array(list(per_fold.values()), dtype=float)
    valid = acc[np.isfinite(acc)]
    return {
        "mode": mode,
        "per_fold": per_fold,
        "mean": float(valid.mean()) if valid.size else float("nan"),
        "std": float(valid.std(ddof=1)) if valid.size > 1 else float("nan"),
        "n_failed": int((~ok).sum()),
        "n_test": n_test,
        "predictions": predictions,
        "scores": scores,
        **extra,
    }


def _linear_probe_scores(X, y, X_test, n_classes, *, C, max_iter, seed) -> np.ndarray:
    """Fit StandardScaler + LogisticRegression on (X, y); class probabilities (n_test, C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.unique(y)
    out = np.zeros((X_test.shape[0], n_classes), dtype=np.float32)
    if present.size == 1:  # a single training class: nothing to fit, predict it
        out[:, present[0]] = 1.0
        return out
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    )
    model.fit(X, y)
    out[:, model.classes_] = model.predict_proba(X_test)
    return out


def _parse_adapt(adapt, mode) -> tuple[str | None, np.ndarray | None]:
    if adapt is None:
        return None, None
    try:
        kind, background = adapt
    except (TypeError, ValueError):
        raise ValueError("adapt must be None, ('text', B) or ('audio', E)") from None
    if kind not in ("text", "audio"):
        raise ValueError(f"adapt kind must be 'text' or 'audio', got {kind!r}")
    if mode == "linear":
        raise ValueError("domain adaptation needs prototypes; it does not apply to mode 'linear'")
    return kind, np.asarray(background, dtype=np.float32)


def _as_2d(x, name: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} is required")
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, D), got shape {arr.shape}")
    return arr


def _check_labels(y: np.ndarray, n_classes: int) -> None:
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be ints in [0, {n_classes})")


def summarize_modes(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{mode: {"mean", "std", "per_fold"}}`` from ``{mode: adapt.crossval(...) result}``.

    The compact form written to the results JSON of notebook 08_adaptation (notebook 09 reads
    ``modes["zs"]["mean"]`` and ``modes["linear"]["mean"]``); accuracies are fractions.
    """
    return {
        mode: {
            "mean": float(res["mean"]),
            "std": float(res["std"]),
            "per_fold": {k: float(v) for k, v in res["per_fold"].items()},
        }
        for mode, res in results.items()
    }


def fold_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Accuracy (fraction) per fold (rows, then ``mean`` and ``std``) and mode (columns).

    ``results``: ``{mode: adapt.crossval(...) result}``. Used by: notebook 08_adaptation.
    """
    table = pd.DataFrame({mode: pd.Series(res["per_fold"]) for mode, res in results.items()})
    table.index.name = "fold"
    table.loc["mean"] = [float(res["mean"]) for res in results.values()]
    table.loc["std"] = [float(res["std"]) for res in results.values()]
    return table
