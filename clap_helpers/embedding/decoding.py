"""Turning audio files into model inputs, in worker processes: decoding, windows and (on a CPU)
the front-end; one file per item, failures as notes.

:class:`DecodeDataset` turns file paths into mono waveforms at the model family's rate
(default 48 kHz) through
:func:`clap_helpers.data.audio.load_audio`; a file that cannot be decoded (or runs out of memory)
gives ``None`` and its reason instead of an exception, so one bad file never stops a run. The
single-process encoder and the Ray pipeline (:mod:`.distributed`) decode with this same code.

:func:`window_plan` says which windows of a clip the model sees (the encoder's one windowing
rule). :class:`WindowFeatures` computes a clip's window features right after decoding, for
families whose front-end gives every window the same shape whatever its batch
(:attr:`clap_helpers.embedding.families.base.ModelFamily.window_frontend`): on a CPU the encoder
hands it to :class:`DecodeDataset`, so the log-mel runs in the decode worker, in parallel with
the model, and the worker sends features (256 kB per 10 s LAION window) instead of waveforms
(1.9 MB). The features are bit-identical to those computed in the main process per model batch
(the front-end is row-independent and thread-count independent): this changes speed, not
features.

Used by: every notebook that embeds audio (02-11), through :class:`~clap_helpers.ClapEncoder`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..data.audio import CLAP_SAMPLE_RATE, DEFAULT_MAX_SECONDS, AudioError, load_audio
from .frontend import split_windows

__all__ = [
    "DecodeDataset",
    "WINDOW_CHUNK",
    "WindowFeatures",
    "collate",
    "window_batch",
    "window_plan",
    "worker_init",
]

WINDOW_CHUNK = 8  # windows of one clip featurised together (bounds memory for very long clips)


def window_plan(
    n_samples: int, window_samples: int | None, sample_rate: int, mode: str
) -> list[tuple[int, int]]:
    """The model inputs of a clip of ``n_samples``: ``[(start, length)]`` in samples.

    A clip that fits one window (or a family without a window, ``window_samples=None``, or
    ``mode="fusion"``) is one input of its own length: the front-end fills it by its padding
    rule, so a short clip is never padded to a full window here. A longer clip is cut into
    consecutive windows by :func:`clap_helpers.embedding.frontend.split_windows`'s rule (a
    partial tail is kept when it holds at least one second, or one window if that is shorter);
    ``mode="first"`` keeps the first window only.
    """
    size = window_samples
    if size is None or mode == "fusion" or n_samples <= size:
        return [(0, n_samples)]
    # split_windows' rule, run on torch's meta device: only the plan, no samples copied
    _, lengths = split_windows(
        torch.empty(n_samples, device="meta"), size, min_last=min(sample_rate, size)
    )
    plan = [(i * size, int(n)) for i, n in enumerate(lengths.tolist())]
    return plan[:1] if mode == "first" else plan


def window_batch(
    items: Sequence[tuple[torch.Tensor, int, int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``[(clip (T,), start, length)]`` copied into one zero-padded batch:
    -> waveforms (B, longest length) float32, lengths (B,) int64."""
    batch = torch.zeros((len(items), max(n for _, _, n in items)))
    for j, (clip, start, n) in enumerate(items):
        batch[j, :n] = clip[start : start + n]
    return batch, torch.tensor([n for _, _, n in items])


class WindowFeatures:
    """A clip's window features, computed where it is decoded: ``(T,) -> tuple of (W, ...)``
    tensors, W = its windows (:func:`window_plan`), fp32 on the CPU.

    Args:
        frontend: ``frontend(waveforms (B, T), lengths (B,)) -> tuple`` of the audio tower's
            inputs, row-independent and the same shape for every window (a family's
            ``window_frontend``), on the CPU and picklable.
        window_samples, sample_rate, mode: the encoder's windowing (see :func:`window_plan`).
    """

    def __init__(self, frontend, window_samples: int | None, sample_rate: int, mode: str):
        self.frontend = frontend
        self.window_samples = window_samples
        self.sample_rate = int(sample_rate)
        self.mode = mode

    @torch.inference_mode()
    def __call__(self, waveform: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
        x = torch.as_tensor(waveform).reshape(-1)
        plan = window_plan(len(x), self.window_samples, self.sample_rate, self.mode)
        parts = []
        for first in range(0, len(plan), WINDOW_CHUNK):
            chunk = [(x, start, n) for start, n in plan[first : first + WINDOW_CHUNK]]
            parts.append(tuple(self.frontend(*window_batch(chunk))))
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))


class DecodeDataset(torch.utils.data.Dataset):
    """Decodes one file per item in a worker: -> (row, waveform (T,) float32 tensor or None, notes),
    resampled to ``sample_rate``; with ``featurize`` (a :class:`WindowFeatures`), the clip's
    window features (a tuple of (W, ...) tensors) instead of its waveform.

    A file that raises :class:`AudioError` or ``MemoryError`` gives ``None`` and the reason.
    """

    def __init__(
        self,
        paths: Sequence[str],
        rows: Sequence[int],
        int16_roundtrip: bool,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        sample_rate: int = CLAP_SAMPLE_RATE,
        featurize: WindowFeatures | None = None,
    ):
        self.paths = list(paths)
        self.featurize = featurize
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
            if self.featurize is not None:
                try:
                    payload = self.featurize(x)
                except MemoryError:
                    seconds = len(x) / self.sample_rate
                    return row, None, [f"out of memory while computing features of {seconds:.0f} s"]
        # load_audio's warnings start with the path: keep only the reason, re-emitted in the parent.
        # A tensor (not an array) travels to the parent through shared memory instead of a pipe.
        notes = [str(w.message).removeprefix(f"{path}: ") for w in caught]
        return row, torch.from_numpy(x) if self.featurize is None else payload, notes


def collate(items):
    return items


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is numpy/soxr; leave the cores to the model
