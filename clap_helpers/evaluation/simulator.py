"""A simulator of CLAP-like audio and text embeddings, for choosing defaults without real labels.

The fixtures' tiny random CLAP cannot show what label-free adaptation does (its zero-shot is at
chance), and tuning on a real benchmark's labels would make the benchmark number dishonest. So the
defaults of :mod:`clap_helpers.evaluation.label_free` are chosen on embeddings drawn from this simulator,
which reproduces the properties of real CLAP embeddings that the method relies on:

- **modality gap**: every audio embedding shares a common direction ``g_a`` and every text
  embedding another one ``g_t`` (orthogonal to ``g_a``), so audio-text cosines are small (about
  0.2-0.4 as in CLAP) while audio-audio cosines are large;
- **class clusters of different spread**: clip = class direction ``mu_c`` + isotropic noise whose
  norm ``sigma_c`` is drawn per class from ``spread``;
- **confusable pairs**: ``n_confusable`` pairs of classes whose directions have cosine
  ``confusable_cos`` (dog / wolf, rain / sea waves);
- **off-centre text anchors**: ``t_c`` = ``mu_c`` + ``anchor_offset`` x a random unit direction,
  plus a random per-class bias of size ``anchor_bias`` towards the shared audio direction, which
  makes some prompts "hubs" that attract too many clips under zero-shot;
- **class prior**: ``class_counts`` clips per class, balanced or not (:func:`us8k_counts`).

Everything is deterministic given ``seed``. Accuracies of zero-shot on the default settings are
in the 75-92 % range of CLAP on ESC-50 / UrbanSound8K, so gains are measured where they matter.

Used by: benchmarks/label_free_defaults.py, tests/unit/evaluation/test_label_free.py (and, through the defaults
it chose, notebooks 02, 03, 04, 06 and 08).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SETTINGS", "SimulatedEmbeddings", "simulate", "us8k_counts"]


@dataclass(frozen=True)
class SimulatedEmbeddings:
    """Output of :func:`simulate`.

    Attributes:
        audio: (N, D) float32, L2-normalised clip embeddings.
        text: (C, D) float32, L2-normalised class text embeddings (one prompt per class).
        labels: (N,) int64 class of each clip, in [0, C).
        folds: (N,) int64 fold of each clip, 1..n_folds (stratified by class).
        params: the arguments of the call, for tables.
    """

    audio: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def us8k_counts(n_classes: int = 10, per_class: int = 100) -> list[int]:
    """UrbanSound8K-like class counts: every class ``per_class`` except two at 43 % and 37 %.

    UrbanSound8K has 1000 clips for most classes, but car_horn 429 and gun_shot 374 (and
    siren 929, children_playing 1000 ...). With ``per_class=100``: ``[100, ..., 43, 37]``.
    """
    counts = [per_class] * n_classes
    counts[-2] = max(1, round(0.429 * per_class))
    counts[-1] = max(1, round(0.374 * per_class))
    return counts


def simulate(
    n_classes: int = 50,
    class_counts: int | Sequence[int] = 40,
    dim: int = 512,
    *,
    n_folds: int = 5,
    gap: float = 1.0,
    signal: float = 1.0,
    spread: tuple[float, float] = (1.3, 2.2),
    n_confusable: int = 5,
    confusable_cos: float = 0.6,
    anchor_offset: float = 1.0,
    anchor_bias: float = 0.25,
    noise_rank: int = 16,
    seed: int = 0,
) -> SimulatedEmbeddings:
    """Draw CLAP-like audio and text embeddings (see the module docstring for the model).

    Args:
        n_classes: C.
        class_counts: clips per class: one int (balanced) or C ints (e.g. :func:`us8k_counts`).
        dim: D, the embedding size (512 for CLAP).
        n_folds: folds 1..n_folds, assigned round-robin within each class after a shuffle.
        gap: norm of the shared modality direction (``g_a`` for audio, ``g_t`` for text) relative
            to the class direction (norm ``signal``); larger means a wider modality gap.
        signal: norm of the class direction ``mu_c`` in audio and text.
        spread: (low, high): each class's noise norm ``sigma_c`` is uniform in this range.
        n_confusable: number of disjoint class pairs (0, 1), (2, 3), ... made confusable.
        confusable_cos: cosine between the class directions of a confusable pair.
        anchor_offset: norm of the random per-class displacement of the text anchor.
        anchor_bias: the text anchor of class c also gets ``b_c * g_a`` with ``b_c`` uniform in
            [0, anchor_bias]: classes with a larger ``b_c`` score higher for every clip (hubs).
        noise_rank: within-class variation lies mostly in a random subspace of this many
            directions shared by all classes (smaller: more confusion between classes); the
            text anchors' offsets point partly into it.
        seed: random seed; same arguments -> same arrays.

    Returns:
        :class:`SimulatedEmbeddings` (audio (N, D), text (C, D), labels (N,), folds (N,)).

    Used by: benchmarks/label_free_defaults.py, tests/unit/evaluation/test_label_free.py.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    counts = (
        [int(class_counts)] * n_classes
        if np.isscalar(class_counts)
        else [int(c) for c in class_counts]
    )
    if len(counts) != n_classes or min(counts) < 1:
        raise ValueError(f"class_counts must be one int >= 1 or {n_classes} ints >= 1")
    if 2 * n_confusable > n_classes:
        raise ValueError(f"n_confusable={n_confusable} pairs need {2 * n_confusable} classes")
    rng = np.random.default_rng(seed)

    # Orthonormal shared directions for the two modalities, then class directions orthogonal to
    # neither in particular (random in the remaining space is close enough in high dimension).
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    g_a, g_t = basis[:, 0], basis[:, 1]
    mu = _unit(rng.normal(size=(n_classes, dim)))
    for k in range(n_confusable):
        a, b = 2 * k, 2 * k + 1
        ortho = _unit(mu[b] - (mu[b] @ mu[a]) * mu[a])
        mu[b] = confusable_cos * mu[a] + np.sqrt(1 - confusable_cos**2) * ortho

    labels = np.repeat(np.arange(n_classes), counts)
    sigma = rng.uniform(spread[0], spread[1], size=n_classes)
    # Within-class variation lives mostly in a low-rank "sound space" of noise_rank directions
    # (a clip of a dog can resemble other sounds), plus a little isotropic noise.
    nuisance = _unit(rng.normal(size=(noise_rank, dim)))
    low = rng.normal(size=(labels.size, noise_rank)) @ nuisance / np.sqrt(noise_rank)
    iso = rng.normal(size=(labels.size, dim)) / np.sqrt(dim)
    audio = gap * g_a + signal * mu[labels] + sigma[labels, None] * (low + 0.5 * iso)

    bias = rng.uniform(0.0, anchor_bias, size=n_classes)
    # Off-centre anchors: part of the displacement points towards the low-rank sound space
    # (so it changes which clips score high), the rest is text-only (orthogonal to audio).
    towards = _unit(rng.normal(size=(n_classes, noise_rank)) @ nuisance)
    away = _unit(rng.normal(size=(n_classes, dim)))
    text = (
        gap * g_t
        + signal * mu
        + anchor_offset * (0.6 * towards + 0.8 * away)
        + bias[:, None] * gap * g_a
    )

    folds = np.empty(labels.size, dtype=np.int64)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        folds[idx] = rng.permutation(np.arange(idx.size) % n_folds) + 1
    order = rng.permutation(labels.size)  # clips in random order, as a real collection
    params = {
        "n_classes": n_classes,
        "class_counts": counts,
        "dim": dim,
        "n_folds": n_folds,
        "gap": gap,
        "signal": signal,
        "spread": tuple(spread),
        "n_confusable": n_confusable,
        "confusable_cos": confusable_cos,
        "anchor_offset": anchor_offset,
        "anchor_bias": anchor_bias,
        "noise_rank": noise_rank,
        "seed": seed,
    }
    return SimulatedEmbeddings(
        audio=_unit(audio[order]).astype(np.float32),
        text=_unit(text).astype(np.float32),
        labels=labels[order].astype(np.int64),
        folds=folds[order],
        params=params,
    )


SETTINGS: dict[str, dict[str, Any]] = {
    "esc50-like": {"n_classes": 50, "class_counts": 40},
    "esc50-hard": {"n_classes": 50, "class_counts": 40, "anchor_offset": 1.3, "n_confusable": 10},
    "esc50-narrow-gap": {"n_classes": 50, "class_counts": 40, "gap": 0.5, "anchor_bias": 0.1},
    "us8k-like": {"n_classes": 10, "class_counts": us8k_counts(10, 200), "n_folds": 10},
    "us8k-hard": {
        "n_classes": 10,
        "class_counts": us8k_counts(10, 200),
        "n_folds": 10,
        "anchor_offset": 1.3,
        "n_confusable": 3,
    },
    "us8k-noisy": {
        "n_classes": 10,
        "class_counts": us8k_counts(10, 200),
        "n_folds": 10,
        "spread": (1.8, 2.8),
    },
    "skewed-10": {
        "n_classes": 10,
        "class_counts": [200, 200, 150, 150, 100, 100, 60, 60, 30, 30],
        "n_folds": 5,
    },
}
"""Named simulator settings (keyword arguments of :func:`simulate`) swept by the benchmark."""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
