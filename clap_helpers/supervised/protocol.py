"""Supervised baseline: CNNs trained from scratch on log-mel spectrograms, with SpecAugment.

The classic non-CLAP reference on ESC-50: train on 4 folds, test on the 5th::

    feats = ch.cnn.logmel_features(clips["path"], name="esc50")     # cached on disk
    run = ch.cnn.train_folds(feats, clips["target"], clips["fold"], model="cnn8", folds=[1])
    run["mean"], run["per_fold"], run["history"]                     # test accuracy, logs

Features
    The CLAP log-mel front-end (:class:`clap_helpers.frontend.LogMelFrontend`, ``rand_trunc``:
    48 kHz, 1024-sample Hann window, hop 480 = 10 ms, 64 Slaney mel bands 0-14 kHz, dB) on a
    **5 s** window with **zero padding** (``padding="pad"``): ESC-50 clips are exactly 5 s, so
    nothing is padded or cut; shorter clips (UrbanSound8K) keep silence after the sound instead of
    CLAP's repetitions; longer clips are centre-cropped. One clip -> (1, 501, 64) float32.
    Features are computed once and cached under ``<cache_dir>/logmel/<settings hash>/`` through
    :class:`clap_helpers.cache.EmbeddingStore` (keyed by :func:`clap_helpers.cache.file_key`:
    path, size, mtime; atomic chunk files; a corrupt chunk is reported, deleted and recomputed).
    Files that cannot be decoded are named in a warning, skipped and counted.

Augmentation (:class:`SpecAugment`, training batches only)
    a random crop of ``crop_fraction`` of the frames (eval uses whole clips: every model ends in
    global average pooling), then ``time_masks`` time bands and ``freq_masks`` mel bands per clip,
    each of a uniform random width in [0, max], set to ``fill``. No flips. Seeded.

Models (:func:`build_model`; input (B, 1, frames, mels) in dB, standardised inside the model with
the training folds' mean and std, stored as buffers so checkpoints are self-contained)
    ``cnn4``: 4 x [3x3 conv, batch norm, ReLU, 2x2 max-pool], 32-256 channels;
    ``cnn8``: 8 x [3x3 conv, batch norm, ReLU], every second one with stride 2, 32-256 channels;
    ``resnet18``: ResNet-18 layout (BasicBlock x [2, 2, 2, 2], widths 64-512) with a one-channel
    7x7 stride-2 stem and max-pool. All: global average pooling, dropout, linear layer.

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

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .audio import CLAP_SAMPLE_RATE, AudioError, load_audio
from .cache import EmbeddingStore, default_cache_dir, file_key
from .frontend import LogMelFrontend, batch_from_list
from .training import (
    METRICS,
    TrainConfig,
    classification_metrics,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "MODELS",
    "CNN4",
    "CNN8",
    "FeatureWarning",
    "LogMelSet",
    "ResNet18",
    "SpecAugment",
    "build_model",
    "classification_metrics",
    "compare_table",
    "feature_settings",
    "load_model",
    "logmel_features",
    "make_frontend",
    "model_names",
    "plot_augmentation",
    "plot_learning_curves",
    "save_model",
    "summary_table",
    "train_folds",
    "validation_split",
]

FEATURE_VERSION = 1
"""Bump when the feature code changes its output: old cache entries then land elsewhere."""


class FeatureWarning(UserWarning):
    """An audio file could not be decoded; it is skipped (its feature row is NaN, ok=False)."""


# ----------------------------------------------------------------------------------------------
# Log-mel features, cached
# ----------------------------------------------------------------------------------------------
def make_frontend(max_length_s: float = 5.0, padding: str = "pad") -> LogMelFrontend:
    """The CLAP ``rand_trunc`` log-mel front-end on a ``max_length_s`` window (48 kHz input):
    (B, T) waveforms -> (B, 1, 1 + max_length_s * 100, 64) dB (501 frames for 5 s)."""
    return LogMelFrontend(truncation="rand_trunc", max_length_s=max_length_s, padding=padding)


def feature_settings(frontend: LogMelFrontend) -> dict:
    """Everything the cached features depend on (the cache namespace, minus the dataset)."""
    return {
        "features": "clap_logmel",
        "version": FEATURE_VERSION,
        "truncation": frontend.truncation,
        "sampling_rate": frontend.sampling_rate,
        "n_fft": frontend.n_fft,
        "hop_length": frontend.hop_length,
        "n_mels": frontend.n_mels,
        "f_min": frontend.f_min,
        "f_max": frontend.f_max,
        "max_length_s": float(frontend.max_length_s),
        "padding": frontend.padding,
        "stft_dtype": str(frontend.stft_dtype),
    }


@dataclass
class LogMelSet:
    """Log-mel features of a list of files (what :func:`logmel_features` returns).

    x: (N, 1, frames, n_mels) float32 dB, row i for file i; NaN rows for failed files.
    ok: (N,) bool, False for failed files. failures: [(path, reason)] of the skipped files.
    n_cached / n_computed: rows read from the cache / computed now. settings: the front-end
    settings (see :func:`feature_settings`).
    """

    x: np.ndarray
    ok: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0
    settings: dict = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return int((~self.ok).sum())

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"LogMelSet({len(self)} clips x {tuple(self.x.shape[1:])}, {self.n_failed} failed, "
            f"{self.n_cached} cached, {self.n_computed} computed)"
        )


def logmel_features(
    paths: Iterable[str | os.PathLike],
    *,
    name: str = "default",
    cache_dir: str | os.PathLike | None | bool = None,
    max_length_s: float = 5.0,
    padding: str = "pad",
    batch_size: int = 32,
    progress: bool = True,
) -> LogMelSet:
    """Log-mel spectrograms of audio files, computed once and cached on disk.

    Args:
        paths: audio files (anything :func:`clap_helpers.audio.load_audio` reads); decoded to mono
            48 kHz.
        name: dataset name, part of the cache namespace (keeps one dataset's cache small).
        cache_dir: cache root (``None``: :func:`clap_helpers.cache.default_cache_dir`; ``False``:
            no cache). Files live in ``<cache_dir>/logmel/<hash of settings and name>/``.
        max_length_s, padding: the front-end window (s) and padding rule (see module docstring).
        batch_size: clips per front-end call. progress: tqdm bar.

    Returns:
        :class:`LogMelSet`. A file that fails to decode raises no error: a :class:`FeatureWarning`
        names it, its row is NaN and ``ok`` False. Cached rows are keyed by
        :func:`clap_helpers.cache.file_key`, so an edited file is recomputed.

    Used by: notebook 09_cnn_baseline.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    frontend = make_frontend(max_length_s, padding)
    settings = feature_settings(frontend)
    shape = (frontend.n_channels, frontend.n_frames, frontend.n_mels)
    dim = int(np.prod(shape))
    x = np.full((len(paths), *shape), np.nan, dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    keys = [file_key(p) for p in paths]
    store = None
    if cache_dir is not False:
        root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        store = EmbeddingStore(root, "logmel", {**settings, "dataset": name}, dim, flush_every=128)
        found, rows = store.lookup(keys)
        x[found] = rows[found].reshape(-1, *shape)
        ok[found] = True
        del rows
    todo = np.flatnonzero(~ok).tolist()
    n_cached = len(paths) - len(todo)
    failures: list[tuple[str, str]] = []
    bar = tqdm(
        total=len(paths),
        initial=n_cached,
        desc="log-mel features",
        unit="clip",
        disable=not progress,
        delay=2.0,
    )
    try:
        for start in range(0, len(todo), batch_size):
            rows_done, waves = [], []
            for i in todo[start : start + batch_size]:
                try:
                    waves.append(load_audio(paths[i], sr=CLAP_SAMPLE_RATE))
                    rows_done.append(i)
                except AudioError as exc:
                    failures.append((paths[i], exc.reason))
                    warnings.warn(
                        f"{paths[i]}: {exc.reason} (skipped)", FeatureWarning, stacklevel=2
                    )
            if waves:
                feats = frontend(*batch_from_list(waves)).input_features.numpy()
                x[rows_done] = feats
                ok[rows_done] = True
                if store is not None:
                    store.add([keys[i] for i in rows_done], feats.reshape(len(rows_done), dim))
            bar.update(len(todo[start : start + batch_size]))
    finally:
        bar.close()
        if store is not None:
            store.flush()
    if failures:
        warnings.warn(
            f"{len(failures)} of {len(paths)} files could not be decoded and are skipped",
            FeatureWarning,
            stacklevel=2,
        )
    return LogMelSet(
        x=x,
        ok=ok,
        failures=failures,
        n_cached=n_cached,
        n_computed=len(todo) - len(failures),
        settings=settings,
    )


# ----------------------------------------------------------------------------------------------
# SpecAugment
# ----------------------------------------------------------------------------------------------
class SpecAugment(nn.Module):
    """Random time crop + time and frequency masking of spectrogram batches (training only).

    Input (B, C, frames, mels). In training mode: each clip gets a random crop of
    ``round(crop_fraction * frames)`` consecutive frames (output (B, C, crop, mels); 1.0 = no
    crop), then ``time_masks`` bands of ``w ~ U{0..max_time_width}`` frames and ``freq_masks``
    bands of ``w ~ U{0..max_freq_width}`` mel bins, at uniform random positions, all channels set
    to ``fill`` (bands may overlap). In eval mode the input is returned unchanged. Random numbers
    come from the module's own CPU generator (``seed``; :meth:`reseed`), so results do not depend
    on torch's global RNG or the device. Used by: :func:`train_folds` (notebook 09_cnn_baseline).
    """

    def __init__(
        self,
        crop_fraction: float = 0.9,
        time_masks: int = 2,
        max_time_width: int = 40,
        freq_masks: int = 2,
        max_freq_width: int = 8,
        fill: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.crop_fraction = float(crop_fraction)
        self.time_masks, self.max_time_width = int(time_masks), int(max_time_width)
        self.freq_masks, self.max_freq_width = int(freq_masks), int(max_freq_width)
        self.fill = float(fill)
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream at ``seed``."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def extra_repr(self) -> str:
        return (
            f"crop_fraction={self.crop_fraction}, time_masks={self.time_masks}x"
            f"{self.max_time_width}, freq_masks={self.freq_masks}x{self.max_freq_width}, "
            f"fill={self.fill}, seed={self.seed}"
        )

    def crop_length(self, frames: int) -> int:
        """Frames kept by the training crop of a ``frames``-frame input."""
        return min(frames, max(1, round(self.crop_fraction * frames)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, frames, mels), got shape {tuple(x.shape)}")
        return self.mask(self.crop(x))

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop in time: (B, C, T, M) -> (B, C, crop_length(T), M)."""
        b, c, t, m = x.shape
        length = self.crop_length(t)
        if length == t:
            return x
        offsets = torch.randint(0, t - length + 1, (b,), generator=self.generator)
        frames = (offsets[:, None] + torch.arange(length)).to(x.device)  # (B, L)
        return x.gather(2, frames[:, None, :, None].expand(b, c, length, m))

    def _bands(self, batch: int, size: int, count: int, max_width: int) -> torch.Tensor:
        """(batch, size) bool: union of ``count`` random bands of width 0..max_width per row."""
        if count <= 0 or max_width <= 0:
            return torch.zeros((batch, size), dtype=torch.bool)
        width = torch.randint(0, min(max_width, size) + 1, (batch, count), generator=self.generator)
        u = torch.rand((batch, count), generator=self.generator)
        start = (u * (size - width + 1)).long()  # in [0, size - width]
        pos = torch.arange(size)
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
        return inside.any(dim=1)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Time and frequency masking of (B, C, T, M); returns a new tensor."""
        b, _, t, m = x.shape
        time = self._bands(b, t, self.time_masks, self.max_time_width).to(x.device)
        freq = self._bands(b, m, self.freq_masks, self.max_freq_width).to(x.device)
        return x.masked_fill(time[:, None, :, None] | freq[:, None, None, :], self.fill)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SpectrogramClassifier(nn.Module):
    """Base of the three models: standardise, ``self.body``, global average pool, dropout, linear.

    Input (B, 1, frames, mels) in dB (any number of frames >= 32 and mels >= 32); output (B,
    n_classes) logits. ``input_mean``/``input_std`` (scalar buffers, saved with the weights) are
    set from the training data by :meth:`set_input_stats`.
    """

    def __init__(self, body: nn.Module, channels: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(1.0))
        self.body = body
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, n_classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    def set_input_stats(self, mean: float, std: float) -> None:
        """Standardisation of the input: (x - mean) / std, both in dB."""
        self.input_mean.fill_(float(mean))
        self.input_std.fill_(max(float(std), 1e-6))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, frames, mels) dB -> (B, channels) pooled features."""
        h = self.body((x - self.input_mean) / self.input_std)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(x)))


class CNN4(SpectrogramClassifier):
    """4 conv layers: [3x3 conv, BN, ReLU, 2x2 max-pool] x 4 with ``channels`` (32-256).
    About 0.45 GFLOP per 5 s clip (501 x 64) forward."""

    def __init__(
        self, n_classes: int, channels: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.3
    ) -> None:
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [*_conv_bn_relu(c_in, c), nn.MaxPool2d(2)]
            c_in = c
        super().__init__(nn.Sequential(*layers), c_in, n_classes, dropout)


class CNN8(SpectrogramClassifier):
    """8 conv layers [3x3 conv, BN, ReLU]; layers 2, 4, 6, 8 have stride 2 (no pooling layers),
    ``channels`` 32, 32, 64, 64, 128, 128, 256, 256. About 0.75 GFLOP per 5 s clip forward."""

    def __init__(
        self,
        n_classes: int,
        channels: Sequence[int] = (32, 32, 64, 64, 128, 128, 256, 256),
        dropout: float = 0.3,
    ) -> None:
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(channels):
            layers += _conv_bn_relu(c_in, c, stride=2 if i % 2 else 1)
            c_in = c
        super().__init__(nn.Sequential(*layers), c_in, n_classes, dropout)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, ReLU between, identity (or 1x1 conv + BN) shortcut, ReLU after the sum.
    The last BN starts at zero scale, so each block starts as the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.shortcut(x))


class ResNet18(SpectrogramClassifier):
    """ResNet-18 for one-channel spectrograms: stem [7x7 conv stride 2, BN, ReLU, 3x3 max-pool
    stride 2] (1 input channel), 4 stages of 2 BasicBlocks with widths ``width`` x 1, 2, 4, 8 and
    strides 1, 2, 2, 2; 11.2 M parameters at width 64, about 1.2 GFLOP per 5 s clip forward
    (``width=32`` is about 4x cheaper)."""

    def __init__(self, n_classes: int, width: int = 64, dropout: float = 0.2) -> None:
        stem = [
            nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        stages: list[nn.Module] = []
        c_in = width
        for i, mult in enumerate((1, 2, 4, 8)):
            c_out = width * mult
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]
            c_in = c_out
        super().__init__(nn.Sequential(*stem, *stages), c_in, n_classes, dropout)
        for mod in self.modules():
            if isinstance(mod, BasicBlock):
                nn.init.zeros_(mod.bn2.weight)


MODELS = {"cnn4": CNN4, "cnn8": CNN8, "resnet18": ResNet18}
"""Model name -> class; the names :func:`build_model` and the notebook's ``cnn_model`` accept."""


def build_model(name: str, n_classes: int, **kwargs: Any) -> SpectrogramClassifier:
    """A fresh model ``name`` (``"cnn4"``, ``"cnn8"``, ``"resnet18"``) with ``n_classes`` outputs;
    ``kwargs`` go to its class (e.g. ``dropout``, ``channels``, ``width``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if int(n_classes) < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    return MODELS[name](int(n_classes), **kwargs)


def model_names(spec: str | Sequence[str]) -> list[str]:
    """``"cnn8"`` -> ["cnn8"]; ``"all"`` -> every model; a list is checked and kept in order.
    Used by: notebook 09_cnn_baseline."""
    names = list(MODELS) if spec == "all" else [spec] if isinstance(spec, str) else list(spec)
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)} or 'all'")
    return names


def save_model(path: str | os.PathLike, model: SpectrogramClassifier, name: str, **meta) -> Path:
    """Save ``model`` (built by :func:`build_model` as ``name``) with what rebuilds it."""
    n_classes = model.fc.out_features
    return save_checkpoint(path, model, model_name=name, n_classes=n_classes, **meta)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[SpectrogramClassifier, dict]:
    """Rebuild a model saved by :func:`save_model` or :func:`train_folds` (``best.pt``): returns
    (model in eval mode on ``device``, metadata dict: model_name, n_classes, model_kwargs, classes,
    feature settings, epoch, val_loss, ...). Its predictions equal the saved model's."""
    payload = load_checkpoint(path)
    meta = payload["meta"]
    model = build_model(meta["model_name"], meta["n_classes"], **meta.get("model_kwargs", {}))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), meta


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
            :class:`clap_helpers.training.TrainConfig` (``train_kwargs`` sets the others). Every
            fold uses the same seed (same initial weights and stream of random numbers).
        val_fraction: class-stratified share of the training folds held out for validation.
        run_dir: folder for ``<model>/fold<k>/metrics.csv`` (+ TensorBoard events when
            available) and ``best.pt`` (:func:`load_model`); None writes nothing.

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
    for fold in tested:
        test = ok & (fold_all == fold)
        pool = np.flatnonzero(ok & (fold_all != fold))
        is_val = validation_split(y_all[pool], val_fraction, seed)
        train_idx, val_idx, test_idx = pool[~is_val], pool[is_val], np.flatnonzero(test)
        if train_idx.size == 0 or test_idx.size == 0:
            raise ValueError(
                f"fold {fold!r}: {train_idx.size} training, {test_idx.size} test clips"
            )
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
            desc=f"{model} fold {fold}",
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


def _read_json(path: str | os.PathLike | None) -> dict | None:
    if path is None:
        return None
    from .paths import resolve

    p = resolve(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _mean_std(value: Any) -> tuple[float, float]:
    if isinstance(value, Mapping):
        for key in ("mean", "accuracy", "top1"):
            if isinstance(value.get(key), (int, float)):
                std = value.get("std")
                return float(value[key]), float(std) if isinstance(std, (int, float)) else math.nan
        return math.nan, math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), math.nan
    return math.nan, math.nan


def compare_table(
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
    zs = _read_json(zeroshot_results)
    if zs is None:
        rows.append(("CLAP zero-shot", math.nan, math.nan, "", "not run"))
    else:
        mean, _ = _mean_std(zs.get("top1"))
        rows.append(
            (
                "CLAP zero-shot",
                100 * mean,
                math.nan,
                "all clips (no training)",
                Path(str(zeroshot_results)).name,
            )
        )
    ad = _read_json(adaptation_results)
    section = ad.get(dataset, ad) if isinstance(ad, dict) else None
    modes = section.get("modes") if isinstance(section, dict) else None
    if not isinstance(modes, Mapping) or not modes:
        rows.append(("CLAP linear probe", math.nan, math.nan, "", "not run"))
    else:
        for mode, value in modes.items():
            mean, std = _mean_std(value)
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


def plot_learning_curves(
    runs: Mapping[str, Mapping[str, Any]] | pd.DataFrame, title: str | None = None
):
    """Loss, accuracy and macro F1 per epoch (3 panels) for each model of ``runs`` ({name:
    :func:`train_folds` result} or one ``history`` DataFrame): train (dashed), validation
    (dotted) and test fold (solid), averaged over folds; a dot marks the kept epoch of each fold.
    Returns the matplotlib Figure. Used by: notebook 09_cnn_baseline."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    histories = (
        {"": runs} if isinstance(runs, pd.DataFrame) else {k: v["history"] for k, v in runs.items()}
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    styles = {"train": "--", "val": ":", "test": "-"}
    colours = plt.get_cmap("tab10")
    for ci, (name, hist) in enumerate(histories.items()):
        mean = hist.groupby("epoch").mean(numeric_only=True)
        for ax, metric in zip(axes, ("loss", "accuracy", "f1"), strict=True):
            for split, style in styles.items():
                col = f"{split}_{metric}"
                if col in mean:
                    label = f"{name} {split}".strip()
                    ax.plot(mean.index, mean[col], style, color=colours(ci % 10), label=label)
            if "best" in hist and f"test_{metric}" in hist:
                best = hist[hist["best"].astype(bool)].groupby("fold").tail(1)
                ax.plot(best["epoch"], best[f"test_{metric}"], "o", color=colours(ci % 10), ms=4)
    for ax, label in zip(axes, ("cross-entropy loss", "accuracy", "macro F1"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    axes[2].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_augmentation(spectrogram: Any, augment: SpecAugment | None = None, n: int = 2):
    """One clip's log-mel ((1, frames, mels) or (frames, mels), dB) and ``n`` SpecAugment draws
    of it (default settings, fill = the clip's mean), time on x. Returns the Figure.
    Used by: notebook 09_cnn_baseline."""
    import matplotlib.pyplot as plt

    spec = torch.as_tensor(np.asarray(spectrogram, dtype=np.float32))
    spec = spec.reshape(1, 1, *spec.shape[-2:])
    augment = augment or SpecAugment(fill=float(spec.mean()))
    augment.train()
    views = [("original", spec[0, 0])] + [
        (f"augmented #{i + 1}", augment(spec)[0, 0]) for i in range(n)
    ]
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3), constrained_layout=True)
    vmin, vmax = float(spec.min()), float(spec.max())
    for ax, (label, img) in zip(np.atleast_1d(axes), views, strict=True):
        im = ax.imshow(
            img.T.numpy(), origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma"
        )
        ax.set_title(label)
        ax.set_xlabel("frame (10 ms)")
        ax.set_ylabel("mel band")
    fig.colorbar(im, ax=axes, fraction=0.03, label="dB")
    return fig
