"""Decoding audio files for the encoder, in worker processes: one file per item, failures as notes.

:class:`DecodeDataset` turns file paths into mono waveforms at the model family's rate
(default 48 kHz) through
:func:`clap_helpers.data.audio.load_audio`; a file that cannot be decoded (or runs out of memory)
gives ``None`` and its reason instead of an exception, so one bad file never stops a run. The
single-process encoder and the Ray pipeline (:mod:`.distributed`) decode with this same code.

Used by: every notebook that embeds audio (02-11), through :class:`~clap_helpers.ClapEncoder`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..data.audio import CLAP_SAMPLE_RATE, DEFAULT_MAX_SECONDS, AudioError, load_audio

__all__ = ["DecodeDataset", "collate", "worker_init"]


class DecodeDataset(torch.utils.data.Dataset):
    """Decodes one file per item in a worker: -> (row, waveform (T,) float32 tensor or None, notes),
    resampled to ``sample_rate``.

    A file that raises :class:`AudioError` or ``MemoryError`` gives ``None`` and the reason.
    """

    def __init__(
        self,
        paths: Sequence[str],
        rows: Sequence[int],
        int16_roundtrip: bool,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        sample_rate: int = CLAP_SAMPLE_RATE,
    ):
        self.paths = list(paths)
        self.rows = list(rows)
        self.int16_roundtrip = int16_roundtrip
        self.max_seconds = max_seconds
        self.sample_rate = int(sample_rate)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        path = self.paths[row]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                x = load_audio(path, self.sample_rate, max_seconds=self.max_seconds)
                if self.int16_roundtrip:
                    x = np.clip(x, -1.0, 1.0) * 32767.0
                    x = x.astype(np.int16).astype(np.float32) / 32767.0
            except AudioError as exc:
                return row, None, [exc.reason]
            except MemoryError:
                return row, None, [f"out of memory while decoding (max_seconds={self.max_seconds})"]
        # load_audio's warnings start with the path: keep only the reason, re-emitted in the parent.
        # A tensor (not an array) travels to the parent through shared memory instead of a pipe.
        notes = [str(w.message).removeprefix(f"{path}: ") for w in caught]
        return row, torch.from_numpy(x), notes


def collate(items):
    return items


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is numpy/soxr; leave the cores to the model
