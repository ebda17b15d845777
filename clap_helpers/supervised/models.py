"""CNN classifiers of log-mel spectrograms, and their checkpoints.

Input (B, 1, frames, mels) in dB, standardised inside the model with the training folds' mean and
std (buffers, so checkpoints are self-contained). ``cnn4``: 4 x [3x3 conv, batch norm, ReLU, 2x2
max-pool], 32-256 channels; ``cnn8``: 8 x [3x3 conv, batch norm, ReLU], every second one with
stride 2, 32-256 channels; ``resnet18``: ResNet-18 layout (BasicBlock x [2, 2, 2, 2], widths
64-512) with a one-channel 7x7 stride-2 stem and max-pool. All: global average pooling, dropout,
linear layer.

Used by: notebook 09_cnn_baseline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .training import load_checkpoint, save_checkpoint

__all__ = [
    "BasicBlock",
    "CNN4",
    "CNN8",
    "MODELS",
    "ResNet18",
    "SpectrogramClassifier",
    "build_model",
    "load_model",
    "model_names",
    "save_model",
]


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
