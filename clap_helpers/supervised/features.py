"""Log-mel features for the supervised baselines, computed once and cached on disk.

The CLAP log-mel front-end (:class:`clap_helpers.embedding.frontend.LogMelFrontend`,
``rand_trunc``: 48 kHz, 1024-sample Hann window, hop 480 = 10 ms, 64 Slaney mel bands 50 Hz-14 kHz
as in the LAION checkpoints' parameter files,
dB) on a **5 s** window with **zero padding** (``padding="pad"``): ESC-50 clips are exactly 5 s, so
nothing is padded or cut; shorter clips (UrbanSound8K) keep silence after the sound instead of
CLAP's repetitions; longer clips are centre-cropped. One clip -> (1, 501, 64) float32. Features are
cached under ``<cache_dir>/logmel/<settings hash>/`` through
:class:`clap_helpers.embedding.cache.EmbeddingStore` (keyed by file path, size, mtime; atomic chunk
files; a corrupt chunk is reported, deleted and recomputed). Files that cannot be decoded are named
in a warning, skipped and counted.

Used by: notebook 09_cnn_baseline.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.audio import CLAP_SAMPLE_RATE, AudioError, load_audio
from ..diagnostics import ClapWarning, bars_off
from ..embedding.cache import EmbeddingStore, default_cache_dir, file_key
from ..embedding.frontend import CHECKPOINT_F_MIN, LogMelFrontend, batch_from_list

__all__ = [
    "FEATURE_VERSION",
    "FeatureWarning",
    "LogMelSet",
    "feature_settings",
    "logmel_features",
    "make_frontend",
]


FEATURE_VERSION = 1
"""Bump when the feature code changes its output: old cache entries then land elsewhere."""


class FeatureWarning(ClapWarning):
    """An audio file could not be decoded; it is skipped (its feature row is NaN, ok=False)."""


def make_frontend(max_length_s: float = 5.0, padding: str = "pad") -> LogMelFrontend:
    """The CLAP ``rand_trunc`` log-mel front-end of the unfused checkpoints (f_min 50 Hz) on a
    ``max_length_s`` window (48 kHz input):
    (B, T) waveforms -> (B, 1, 1 + max_length_s * 100, 64) dB (501 frames for 5 s)."""
    return LogMelFrontend(
        truncation="rand_trunc",
        max_length_s=max_length_s,
        padding=padding,
        f_min=CHECKPOINT_F_MIN,
    )


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
        paths: audio files (anything :func:`clap_helpers.data.audio.load_audio` reads); decoded to mono
            48 kHz.
        name: dataset name, part of the cache namespace (keeps one dataset's cache small).
        cache_dir: cache root (``None``: :func:`clap_helpers.embedding.cache.default_cache_dir`; ``False``:
            no cache). Files live in ``<cache_dir>/logmel/<hash of settings and name>/``.
        max_length_s, padding: the front-end window (s) and padding rule (see module docstring).
        batch_size: clips per front-end call. progress: tqdm bar.

    Returns:
        :class:`LogMelSet`. A file that fails to decode raises no error: a :class:`FeatureWarning`
        names it, its row is NaN and ``ok`` False. Cached rows are keyed by
        :func:`clap_helpers.embedding.cache.file_key`, so an edited file is recomputed.

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
        disable=bars_off(progress),
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
