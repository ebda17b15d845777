"""Supervised baseline: CNNs trained from scratch on log-mel spectrograms, with SpecAugment.

The classic non-CLAP reference on ESC-50: train on 4 folds, test on the 5th::

    feats = ch.cnn.logmel_features(clips["path"], name="esc50")     # cached on disk
    run = ch.cnn.train_folds(feats, clips["target"], clips["fold"], model="cnn8", folds=[1])
    run["mean"], run["per_fold"], run["history"]                     # test accuracy, logs

The pieces: :mod:`.features` (cached log-mel), :mod:`.augment` (SpecAugment), :mod:`.models`
(CNN4, CNN8, ResNet18, checkpoints), :mod:`.training` (the training loop), this module (the fold
protocol and its tables).

Protocol (:func:`train_folds`)
    For each test fold: the other folds are the training data; a class-stratified
    ``val_fraction`` (10 %) of them is held out as validation; the checkpoint with the lowest
    validation loss is kept; the test fold is evaluated every epoch for the learning curves but
    never used to choose anything; the reported number is the test-fold accuracy of the kept
    checkpoint (ESC-50 practice: mean over the 5 folds). Note that ESC-50 keeps the clips cut from
    one recording in one fold, while the validation clips are drawn across the training folds, so
    validation loss is somewhat optimistic; it only picks the epoch.

Used by: notebook 09_cnn_baseline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..diagnostics import bars_off
from ..evaluation.results import load_results, read_accuracy
from .augment import SpecAugment
from .features import LogMelSet
from .models import build_model
from .training import (
    METRICS,
    TrainConfig,
    evaluate,
    fit,
)

__all__ = ["versus_clap_table", "summary_table", "train_folds", "validation_split"]


# ----------------------------------------------------------------------------------------------
# Fold protocol
# ----------------------------------------------------------------------------------------------
def validation_split(labels: Any, fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """(N,) bool, True for validation rows: per class ``round(fraction * n_c)`` random rows,
    at least 1 and at most ``n_c - 1`` for classes with 2 or more rows (``fraction=0``: none)."""
    y = np.asarray(labels)
    out = np.zeros(y.shape[0], dtype=bool)
    if fraction <= 0:
        return out
    rng = np.random.default_rng(seed)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if rows.size < 2:
            continue
        k = min(max(round(fraction * rows.size), 1), rows.size - 1)
        out[rng.permutation(rows)[:k]] = True
    return out


def _fold_list(spec: Any, available: Sequence) -> list:
    if isinstance(spec, str) and spec == "all":
        return list(available)
    wanted = [spec] if np.isscalar(spec) else list(spec)
    missing = [f for f in wanted if f not in set(available)]
    if missing or not wanted:
        raise ValueError(f"fold(s) {missing} not in the data (folds: {list(available)})")
    return wanted


def train_folds(
    features: LogMelSet | np.ndarray,
    labels: Any,
    folds: Any,
    *,
    model: str = "cnn8",
    test_folds: Any = (1,),
    n_classes: int | None = None,
    classes: Sequence[str] | None = None,
    augment: bool = True,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    augment_kwargs: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and test ``model`` with the fold protocol (see module docstring).

    Args:
        features: :class:`LogMelSet` (failed rows are left out) or an (N, 1, frames, mels) array.
        labels: (N,) int class indices. folds: (N,) fold of each clip (ESC-50: 1-5).
        model: ``"cnn4"``, ``"cnn8"`` or ``"resnet18"``. test_folds: a fold, a list, or ``"all"``.
        n_classes: default ``max(labels) + 1``. classes: names, stored in the checkpoints.
        augment: use :class:`SpecAugment` (``augment_kwargs``; fill = the training mean in dB,
            i.e. 0 after standardisation) on training batches.
        epochs, batch_size, lr, weight_decay, seed, device, precision: see
            :class:`clap_helpers.supervised.training.TrainConfig` (``train_kwargs`` sets the others). Every
            fold uses the same seed (same initial weights and stream of random numbers).
        val_fraction: class-stratified share of the training folds held out for validation.
        run_dir: folder for ``<model>/fold<k>/metrics.csv`` (+ TensorBoard events when
            available) and ``best.pt`` (:func:`load_model`); None writes nothing.
        progress: one tqdm bar for the whole run (every batch of every epoch of every fold).

    Returns:
        dict: ``model``, ``folds``; ``per_fold`` DataFrame (fold, n_train, n_val, n_test,
        best_epoch, test loss/accuracy/precision/recall/f1 of the kept checkpoint, seconds per
        epoch); ``history`` DataFrame (all folds' epoch logs, column ``fold``); ``mean``/``std``
        of the test accuracy over folds (std NaN for one fold), ``f1`` mean macro F1;
        ``confusion`` (C, C) int64 counts summed over the test folds (rows = true);
        ``predictions`` (N,) int64 (-1 where not tested); ``checkpoints`` {fold: path};
        ``n_failed`` (files left out); ``device``, ``precision``.

    Used by: notebook 09_cnn_baseline.
    """
    x_all = features.x if isinstance(features, LogMelSet) else np.asarray(features, np.float32)
    ok = features.ok if isinstance(features, LogMelSet) else np.isfinite(x_all).all(axis=(1, 2, 3))
    y_all = np.array(labels, dtype=np.int64)  # a copy: pandas may hand out read-only arrays
    fold_all = np.asarray(folds)
    n = x_all.shape[0]
    if y_all.shape != (n,) or fold_all.shape != (n,):
        raise ValueError(f"labels {y_all.shape} and folds {fold_all.shape} must be ({n},)")
    n_classes = int(n_classes or y_all[ok].max() + 1)
    tested = _fold_list(test_folds, sorted(pd.unique(fold_all[ok]).tolist()))
    x_t = torch.from_numpy(x_all)
    y_t = torch.from_numpy(y_all)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        precision=precision,
        progress=progress,
        **(train_kwargs or {}),
    )
    run_dir = Path(run_dir) if run_dir is not None else None
    predictions = np.full(n, -1, dtype=np.int64)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    per_fold, histories, checkpoints = [], [], {}
    device_used = precision_used = None
    splits = {}
    for fold in tested:
        test = ok & (fold_all == fold)
        pool = np.flatnonzero(ok & (fold_all != fold))
        is_val = validation_split(y_all[pool], val_fraction, seed)
        train_idx, val_idx, test_idx = pool[~is_val], pool[is_val], np.flatnonzero(test)
        if train_idx.size == 0 or test_idx.size == 0:
            raise ValueError(
                f"fold {fold!r}: {train_idx.size} training, {test_idx.size} test clips"
            )
        splits[fold] = train_idx, val_idx, test_idx
    from tqdm.auto import tqdm

    batches = sum(epochs * math.ceil(s[0].size / cfg.batch_size) for s in splits.values())
    bar = tqdm(total=batches, desc=model, unit="batch", disable=bars_off(progress))
    for fold, (train_idx, val_idx, test_idx) in splits.items():
        x_train = x_t[train_idx]
        torch.manual_seed(seed)
        net = build_model(model, n_classes, **(model_kwargs or {}))
        std, mean = (float(v) for v in torch.std_mean(x_train))  # float32, no 2x copy
        net.set_input_stats(mean, std)
        aug = None
        if augment:
            aug = SpecAugment(**{"fill": mean, "seed": seed, **(augment_kwargs or {})})
        fold_dir = run_dir / model / f"fold{fold}" if run_dir is not None else None
        ckpt = fold_dir / "best.pt" if fold_dir is not None else None
        meta = {
            "model_name": model,
            "n_classes": n_classes,
            "model_kwargs": dict(model_kwargs or {}),
            "classes": list(classes) if classes is not None else None,
            "features": dict(features.settings) if isinstance(features, LogMelSet) else None,
            "fold": _plain(fold),
            "augment": bool(augment),
            "seed": int(seed),
        }
        result = fit(
            net,
            (x_train, y_t[train_idx]),
            (x_t[val_idx], y_t[val_idx]) if val_idx.size else None,
            cfg,
            evals={"test": (x_t[test_idx], y_t[test_idx])},
            augment=aug,
            log_dir=fold_dir,
            checkpoint_path=ckpt,
            checkpoint_meta=meta,
            log_extra={"model": model, "fold": _plain(fold)},
            desc=f"fold {fold}",
            bar=bar,
        )
        device_used, precision_used = result.device, result.precision
        eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
        res = evaluate(
            result.model, x_t[test_idx], y_t[test_idx], eval_bs, precision=result.precision
        )
        predictions[test_idx] = res["predictions"]
        np.add.at(confusion, (y_all[test_idx], res["predictions"]), 1)
        per_fold.append(
            {
                "fold": _plain(fold),
                "n_train": int(train_idx.size),
                "n_val": int(val_idx.size),
                "n_test": int(test_idx.size),
                "best_epoch": result.best_epoch,
                **{f"test_{k}": res[k] for k in METRICS},
                "seconds_per_epoch": float(result.history["seconds"].mean()),
            }
        )
        histories.append(result.history)
        if ckpt is not None:
            checkpoints[_plain(fold)] = str(ckpt)
        del x_train, net, result
    bar.close()
    table = pd.DataFrame(per_fold)
    acc = table["test_accuracy"].to_numpy()
    return {
        "model": model,
        "folds": [_plain(f) for f in tested],
        "per_fold": table,
        "history": pd.concat(histories, ignore_index=True),
        "mean": float(acc.mean()),
        "std": float(acc.std(ddof=1)) if acc.size > 1 else math.nan,
        "f1": float(table["test_f1"].mean()),
        "confusion": confusion,
        "predictions": predictions,
        "checkpoints": checkpoints,
        "n_failed": int((~ok).sum()),
        "device": device_used,
        "precision": precision_used,
    }


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar (for JSON, checkpoints and DataFrames)."""
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------------------------
# Tables and figures
# ----------------------------------------------------------------------------------------------
def summary_table(runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model of :func:`train_folds` results: model, folds, accuracy and its std,
    macro precision, recall, F1 (means over test folds, fractions), best epoch, s/epoch.
    Used by: notebook 09_cnn_baseline."""
    rows = []
    for name, run in runs.items():
        t = run["per_fold"]
        rows.append(
            {
                "model": name,
                "folds": ",".join(str(f) for f in run["folds"]),
                "accuracy": run["mean"],
                "accuracy_std": run["std"],
                "precision": float(t["test_precision"].mean()),
                "recall": float(t["test_recall"].mean()),
                "f1": float(t["test_f1"].mean()),
                "best_epoch": float(t["best_epoch"].mean()),
                "seconds_per_epoch": float(t["seconds_per_epoch"].mean()),
            }
        )
    return pd.DataFrame(rows)


_CLAP_MODE_NAMES = {
    "zs": "zero-shot",
    "tgap": "text-guided audio prototypes",
    "sv": "supervised prototypes",
    "linear": "linear probe",
}


def _read_results(path: str | os.PathLike | None) -> dict | None:
    """A results file, or None when it is absent or unreadable (that notebook has not run)."""
    if path is None:
        return None
    try:
        return load_results(path)
    except (OSError, ValueError):
        return None


def versus_clap_table(
    runs: Mapping[str, Mapping[str, Any]],
    zeroshot_results: str | os.PathLike | None = "results/02_esc50_zeroshot.json",
    adaptation_results: str | os.PathLike | None = "results/08_adaptation.json",
    dataset: str = "esc50",
    augment: bool = True,
) -> pd.DataFrame:
    """The CNNs next to CLAP zero-shot (notebook 02) and the CLAP probes (notebook 08).

    Reads ``top1`` of ``zeroshot_results`` and the per-mode results of ``adaptation_results``
    (``modes`` = {mode: {"mean", "std"} or a number}, looked up under ``[dataset]`` first; all
    fractions). A missing file gives one row marked ``"not run"``. Returns columns ``method``,
    ``accuracy`` and ``std`` (%), ``evaluated_on``, ``source``.

    Used by: notebook 09_cnn_baseline.
    """
    rows = []
    aug = "with SpecAugment" if augment else "no augmentation"
    for name, run in runs.items():
        folds = run["folds"]
        where = f"test fold {folds[0]}" if len(folds) == 1 else f"{len(folds)} test folds (mean)"
        rows.append(
            (f"CNN {name} ({aug})", 100 * run["mean"], 100 * run["std"], where, "this notebook")
        )
    zs = _read_results(zeroshot_results)
    if zs is None:
        rows.append(("CLAP zero-shot", math.nan, math.nan, "", "not run"))
    else:
        mean, _ = read_accuracy(zs.get("top1"))
        rows.append(
            (
                "CLAP zero-shot",
                100 * mean,
                math.nan,
                "all clips (no training)",
                Path(str(zeroshot_results)).name,
            )
        )
    ad = _read_results(adaptation_results)
    section = ad.get(dataset, ad) if isinstance(ad, dict) else None
    modes = section.get("modes") if isinstance(section, dict) else None
    if not isinstance(modes, Mapping) or not modes:
        rows.append(("CLAP linear probe", math.nan, math.nan, "", "not run"))
    else:
        for mode, value in modes.items():
            mean, std = read_accuracy(value)
            label = _CLAP_MODE_NAMES.get(mode, str(mode))
            rows.append(
                (
                    f"CLAP {label}",
                    100 * mean,
                    100 * std,
                    "leave-one-fold-out (mean)",
                    Path(str(adaptation_results)).name,
                )
            )
    return pd.DataFrame(rows, columns=["method", "accuracy", "std", "evaluated_on", "source"])
