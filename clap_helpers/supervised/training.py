"""A small supervised training loop for classifiers on in-memory feature tensors.

Generic building blocks (no audio knowledge; :mod:`clap_helpers.supervised` wires them to log-mel
spectrograms and the fold protocol):

- :func:`classification_metrics`: accuracy and macro precision / recall / F1 (same definitions as
  scikit-learn's ``precision_recall_fscore_support(average="macro")``);
- :func:`fit`: AdamW, linear warm-up + cosine learning-rate schedule stepped per batch, mixed
  precision on CUDA (bf16 autocast, or fp16 autocast + ``GradScaler``), optional train-time
  augmentation, per-epoch metrics on the training batches and on every evaluation split, logged
  to a CSV file (always) and to TensorBoard (when ``tensorboard`` is installed), one tqdm progress
  bar per call (or the caller's, shared by several calls), and the weights with the lowest validation loss kept (in memory and on disk);
- :func:`save_checkpoint` / :func:`load_checkpoint`: atomic ``torch.save`` of weights + metadata.

Reproducibility: :func:`fit` seeds torch's global RNG (dropout) with ``config.seed``, shuffles
with ``numpy.random.default_rng([seed, epoch])`` and reseeds the augmentation, so two CPU runs
with the same seed give identical weights. CUDA runs are seeded too but not bit-exact (cuDNN
picks its own algorithms).

Used by: clap_helpers.supervised (notebook 09_cnn_baseline).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..diagnostics import bars_off
from ..embedding.devices import resolve_device, resolve_precision

__all__ = [
    "METRICS",
    "FitResult",
    "MetricsLogger",
    "TrainConfig",
    "classification_metrics",
    "cosine_schedule",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict_logits",
    "save_checkpoint",
    "tensorboard_available",
]

METRICS = ("loss", "accuracy", "precision", "recall", "f1")
"""Per-split columns of the training log, e.g. ``train_loss``, ``val_f1``, ``test_accuracy``."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINT_FORMAT = "clap_helpers.checkpoint/1"


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def classification_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 of single-label predictions.

    y_true, y_pred: (N,) integer class indices. The macro average runs over the classes that occur
    in ``y_true`` or ``y_pred`` (scikit-learn's default ``labels``). Per class ``c``:
    precision = TP / predicted-as-c (0 if never predicted), recall = TP / true-c (0 if absent from
    ``y_true``), F1 = 2 TP / (true-c + predicted-as-c); macro F1 is the mean of the per-class F1
    (not the F1 of the macro precision and recall). Returns floats in [0, 1] (NaN for N = 0)
    under the keys ``accuracy``, ``precision``, ``recall``, ``f1``.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} labels but y_pred has {p.size}")
    if y.size == 0:
        return dict.fromkeys(("accuracy", "precision", "recall", "f1"), math.nan)
    classes = np.union1d(y, p)
    yi, pi = np.searchsorted(classes, y), np.searchsorted(classes, p)
    k = classes.size
    tp = np.bincount(yi[yi == pi], minlength=k).astype(np.float64)
    n_true = np.bincount(yi, minlength=k).astype(np.float64)
    n_pred = np.bincount(pi, minlength=k).astype(np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros(k), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros(k), where=n_true > 0)
    f1 = 2.0 * tp / (n_true + n_pred)  # every class occurs somewhere, so the sum is > 0
    return {
        "accuracy": float(np.mean(y == p)),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
    }


# ----------------------------------------------------------------------------------------------
# Configuration, devices, schedule
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    epochs; batch_size (training clips per step); eval_batch_size (None: 2 x batch_size);
    lr: peak AdamW learning rate; weight_decay: AdamW decay of weight matrices and kernels (not of
    biases and norm parameters); warmup_epochs: linear warm-up from 0, then cosine decay to
    ``min_lr_ratio * lr`` at the last step; label_smoothing of the cross-entropy; grad_clip: max
    global gradient norm (None: no clipping); seed; device (``"auto"``: CUDA, MPS, CPU);
    precision (``"auto"``: bf16 on CUDA with bf16, fp16 on older CUDA GPUs, fp32 elsewhere; or
    ``"fp32"``, ``"bf16"``, ``"fp16"``); progress: one tqdm bar (batches) for the whole run.
    """

    epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR factor: linear 1/w .. 1 over ``warmup_steps``, then half a cosine from 1 down
    to ``min_lr_ratio`` at step ``total_steps - 1``. Call ``scheduler.step()`` after each step."""
    total = max(int(total_steps), 1)
    warm = min(max(int(warmup_steps), 0), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        span = max(total - 1 - warm, 1)
        t = min(max(step - warm, 0) / span, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    x: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits of ``model`` in eval mode: x (N, ...) on any device -> (N, C) float32 on the CPU.

    ``device`` defaults to the model's; ``precision`` as in :class:`TrainConfig` (resolved).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision = resolve_precision(precision, device, training=True)
    model.eval()
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        with _autocast(device, precision):
            out.append(model(xb).float().cpu())
    if not out:
        return torch.empty((0, 0))
    return torch.cat(out)


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Mean cross-entropy ``loss`` and :func:`classification_metrics` of ``model`` on (x, y).

    x: (N, ...) features, y: (N,) int64 targets. Also returns ``predictions`` (N,) int64 numpy
    and ``logits`` (N, C) float32 torch (CPU).
    """
    logits = predict_logits(model, x, batch_size, device, precision)
    y = torch.as_tensor(y, dtype=torch.int64)
    pred = logits.argmax(dim=1).numpy()
    return {
        "loss": float(F.cross_entropy(logits, y)) if len(y) else math.nan,
        **classification_metrics(y.numpy(), pred),
        "predictions": pred,
        "logits": logits,
    }


# ----------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------
def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard`` can be imported (the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:  # ImportError, or a broken tensorboard install
        return False
    return True


class MetricsLogger:
    """Appends one row per epoch to ``<log_dir>/metrics.csv`` and, when available, writes the
    metrics as TensorBoard scalars (``train/loss``, ``val/f1``, ..., ``epoch/lr``; step = epoch).

    ``log_dir=None`` logs nothing (rows are still returned by :func:`fit`). The CSV columns are
    those of the first row; the file is flushed after every row, so a live run can be plotted.
    """

    def __init__(self, log_dir: str | os.PathLike | None, tensorboard: bool | None = None):
        self.dir = Path(log_dir) if log_dir is not None else None
        self.csv_path = self.dir / "metrics.csv" if self.dir is not None else None
        self._columns: list[str] | None = None
        self._writer = None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.csv_path.unlink(missing_ok=True)
            if tensorboard is None:
                tensorboard = tensorboard_available()
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.dir))

    def log(self, row: Mapping[str, Any]) -> None:
        if self.csv_path is None:
            return
        if self._columns is None:
            self._columns = list(row)
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self._columns])
        if self._writer is not None:
            step = int(row.get("epoch", 0))
            for key, value in row.items():
                split, _, metric = key.partition("_")
                if metric in METRICS:
                    self._writer.add_scalar(f"{split}/{metric}", float(value), step)
                elif key in ("lr", "seconds"):
                    self._writer.add_scalar(f"epoch/{key}", float(value), step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, **meta: Any) -> Path:
    """Write ``model``'s state_dict (on the CPU) and ``meta`` (plain Python values: str, int,
    float, bool, None, lists, dicts) to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a :func:`save_checkpoint` file: ``{"state_dict": ..., "meta": {...}}`` (weights-only
    unpickling, so loading an untrusted file cannot run code)."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a clap_helpers checkpoint")
    return payload


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`fit` returns.

    model: the trained model with the best weights loaded (on the training device, eval mode);
    history: one row per epoch (columns ``epoch``, ``lr``, ``<split>_<metric>`` for train, val
    and each evaluation split, ``best``, ``seconds`` and any ``log_extra`` keys); best_epoch and
    best_val_loss (NaN without validation data: then the last epoch is kept); device and
    precision actually used; csv_path of the log (None without ``log_dir``).
    """

    model: torch.nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    device: str
    precision: str
    csv_path: Path | None = None
    config: dict = field(default_factory=dict)


def fit(
    model: torch.nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: TrainConfig | None = None,
    *,
    evals: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    augment: torch.nn.Module | None = None,
    log_dir: str | os.PathLike | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_meta: Mapping[str, Any] | None = None,
    log_extra: Mapping[str, Any] | None = None,
    desc: str = "",
    bar: Any = None,
) -> FitResult:
    """Train ``model`` with cross-entropy on ``train`` = (x (N, ...) float32, y (N,) int64).

    Every epoch: one shuffled pass over ``train`` (``augment`` applied to each batch in training
    mode), then evaluation of ``val`` and of each ``evals`` split (e.g. ``{"test": (x, y)}``)
    without augmentation. The weights with the lowest ``val_loss`` so far are copied (and, with
    ``checkpoint_path``, saved by :func:`save_checkpoint` with ``checkpoint_meta`` plus ``epoch``
    and ``val_loss``); they are loaded back into ``model`` at the end. ``evals`` splits are only
    reported, never used for selection. Tensors may live on the CPU; batches are moved to the
    device. ``log_extra`` items (e.g. fold, model name) are prepended to every log row.

    Progress: one bar over all batches of all epochs (``desc``, the epoch and the loss as its
    postfix); ``bar``: an open tqdm bar to advance instead (shared by the folds of one run, see
    :func:`clap_helpers.supervised.train_folds`), left open.
    """
    cfg = config or TrainConfig()
    x_train, y_train = train
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    n = int(x_train.shape[0])
    if n == 0:
        raise ValueError("no training data")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device, training=True)
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    splits = dict(evals or {})
    if val is not None and len(val[1]) > 0:
        splits = {"val": val, **splits}
    has_val = "val" in splits

    torch.manual_seed(cfg.seed)
    if augment is not None and hasattr(augment, "reseed"):
        augment.reseed(cfg.seed)
    model.to(device)
    if augment is not None:
        augment.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps = math.ceil(n / cfg.batch_size)
    scheduler = cosine_schedule(
        optimizer, cfg.epochs * steps, round(cfg.warmup_epochs * steps), cfg.min_lr_ratio
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    logger = MetricsLogger(log_dir)
    from tqdm.auto import tqdm

    best_state, best_epoch, best_loss = None, 0, math.inf
    rows = []
    own_bar = bar is None
    if own_bar:
        bar = tqdm(
            total=cfg.epochs * steps,
            desc=desc or None,
            unit="batch",
            disable=bars_off(cfg.progress),
        )
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            if augment is not None:
                augment.train()
            order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(n))
            loss_sum, preds = 0.0, []
            lr = optimizer.param_groups[0]["lr"]
            for step in range(steps):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                xb = x_train[idx].to(device, non_blocking=True)
                yb = y_train[idx].to(device, non_blocking=True)
                if augment is not None:
                    xb = augment(xb)
                with _autocast(device, precision):
                    logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(idx)
                preds.append(logits.detach().argmax(dim=1).cpu())
                bar.update(1)
                bar.set_postfix_str(
                    f"{desc} epoch {epoch}/{cfg.epochs} loss {float(loss.detach()):.3f}".strip(),
                    refresh=False,
                )

            row: dict[str, Any] = {**(log_extra or {}), "epoch": epoch, "lr": lr}
            row["train_loss"] = loss_sum / n
            train_metrics = classification_metrics(y_train[order].numpy(), torch.cat(preds))
            row.update({f"train_{k}": v for k, v in train_metrics.items()})
            for name, (xs, ys) in splits.items():
                res = evaluate(model, xs, ys, eval_bs, device, precision)
                row.update({f"{name}_{k}": res[k] for k in METRICS})
            is_best = not has_val or row["val_loss"] < best_loss
            if is_best:
                best_epoch, best_loss = epoch, row["val_loss"] if has_val else math.nan
                best_state = copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})
                if checkpoint_path is not None:
                    save_checkpoint(
                        checkpoint_path,
                        model,
                        **(checkpoint_meta or {}),
                        epoch=epoch,
                        val_loss=float(best_loss),
                    )
            row["best"] = bool(is_best)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            logger.log(row)
    finally:
        logger.close()
        if own_bar:
            bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        model=model,
        history=pd.DataFrame(rows),
        best_epoch=best_epoch,
        best_val_loss=float(best_loss) if has_val else math.nan,
        device=str(device),
        precision=precision,
        csv_path=logger.csv_path,
        config=asdict(cfg),
    )
