"""Figures of audio: waveform and the log-mel spectrogram the model sees.

Used by: notebook 01_download (example clip), 09_cnn_baseline (augmentation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .core import root_figure

__all__ = [
    "augmentation",
    "compute_logmel",
    "waveform_and_logmel",
]


def compute_logmel(
    waveform: Any,
    sr: int,
    n_fft: int = 1024,
    hop_length: int = 480,
    n_mels: int = 64,
    fmax: float = 14000.0,
    model_window: bool = False,
    fmin: float | None = None,
) -> np.ndarray:
    """Log-mel spectrogram of a clip for display, (frames, n_mels) in dB (floor -100 dB).

    The CLAP front-end's own maths (:meth:`clap_helpers.embedding.frontend.LogMelFrontend.log_mel`:
    Hann STFT, Slaney mel filters from ``fmin`` to min(fmax, sr / 2) Hz; ``fmin`` defaults to
    the 50 Hz of the LAION checkpoints' parameter files, :data:`CHECKPOINT_F_MIN`). By default
    without the 10 s window or padding rule, so the picture shows the clip as it is.
    ``model_window=True``: what the unfused checkpoints see instead, (1001, 64): a 10 s window,
    a shorter clip repeated to fill it, then zero-padded, a longer one centre-cropped (48 kHz
    input only; the other arguments except ``fmin`` are ignored)."""
    import torch

    from ..embedding.frontend import CHECKPOINT_F_MIN, LogMelFrontend

    f_min = CHECKPOINT_F_MIN if fmin is None else float(fmin)
    w = torch.as_tensor(np.asarray(waveform, dtype=np.float32).reshape(-1))
    if model_window:
        if sr != 48_000:
            raise ValueError(f"the CLAP front-end takes 48 kHz audio, got {sr} Hz")
        return LogMelFrontend(f_min=f_min)(w[None]).input_features[0, 0].cpu().numpy()
    if w.numel() <= n_fft // 2:  # reflect padding needs a little more than half a frame
        w = torch.nn.functional.pad(w, (0, n_fft // 2 + 1 - w.numel()))
    frontend = LogMelFrontend(
        sampling_rate=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        f_min=min(f_min, sr / 2),
        f_max=min(fmax, sr / 2),
    )
    return frontend.log_mel(w[None])[0].cpu().numpy()


def _mono(waveform: Any) -> np.ndarray:
    w = np.asarray(waveform, dtype=np.float64)
    if w.ndim == 2:  # average channels, whichever axis is the short one
        w = w.mean(axis=int(np.argmin(w.shape)))
    if w.ndim != 1:
        raise ValueError(f"waveform must be (T,) or (channels, T), got shape {w.shape}")
    return w


def waveform_and_logmel(
    waveform: Any,
    sr: int,
    logmel: Any = None,
    title: str | None = None,
    hop_length: int = 480,
    feature_sr: int = 48000,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Two stacked panels: the waveform over time (s) and a log-mel spectrogram with a dB
    colorbar (02_esc50_zeroshot, 05_fma).

    waveform (T,) at ``sr`` Hz (a (channels, T) array is averaged). ``logmel`` (frames, mels) in
    dB, e.g. the CLAP extractor's ``input_features[0, 0]``; its frames are placed at
    ``hop_length / feature_sr`` s each (480 / 48 kHz = 10 ms). If None, :func:`compute_logmel`
    makes one at ``sr`` (frames of ``hop_length / sr`` s). Long waveforms are drawn as a min/max
    envelope. When ``logmel`` (the model's window) runs past the end of the clip, that part is
    hatched in both panels: the repeat-padding the model sees, not the clip. ``axes``: an
    optional pair of axes to draw into."""
    w = _mono(waveform)
    if logmel is None:
        mel = compute_logmel(w, sr, hop_length=hop_length)
        frame_s = hop_length / sr
    else:
        mel = np.asarray(logmel, dtype=np.float64)
        while mel.ndim > 2 and mel.shape[0] == 1:
            mel = mel[0]
        if mel.ndim != 2:
            raise ValueError(f"logmel must be (frames, mels), got shape {np.shape(logmel)}")
        frame_s = hop_length / feature_sr
    cax = None
    if axes is None:  # a narrow second column holds the colorbar, so both panels align
        fig, grid = plt.subplots(2, 2, figsize=(9, 5.5), width_ratios=(40, 1), layout="constrained")
        ax_w, ax_m, cax = grid[0, 0], grid[1, 0], grid[1, 1]
        grid[0, 1].remove()
        ax_m.sharex(ax_w)
        ax_w.tick_params(labelbottom=False)
    else:
        ax_w, ax_m = axes
        fig = root_figure(ax_w)
    t_end = len(w) / sr
    if len(w) > 20000:
        bins = 4000
        per = len(w) // bins
        chunks = w[: per * bins].reshape(bins, per)
        t = (np.arange(bins) + 0.5) * per / sr
        ax_w.fill_between(t, chunks.min(axis=1), chunks.max(axis=1), color="tab:blue", lw=0)
    else:
        ax_w.plot(np.arange(len(w)) / sr, w, color="tab:blue", lw=0.6)
    ax_w.set_xlim(0, max(t_end, mel.shape[0] * frame_s))
    ax_w.set_ylabel("amplitude")
    im = ax_m.imshow(
        mel.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(0.0, mel.shape[0] * frame_s, 0.0, float(mel.shape[1])),
    )
    ax_m.set_xlabel("time (s)")
    ax_m.set_ylabel("mel bin")
    mel_end = mel.shape[0] * frame_s
    if logmel is not None and mel_end > t_end + 2 * frame_s:  # the model window outlasts the clip
        for ax in (ax_w, ax_m):
            ax.axvspan(t_end, mel_end, facecolor="white", alpha=0.25, hatch="//", edgecolor="0.6")
            ax.axvline(t_end, color="0.3", ls="--", lw=1)
        ax_w.text(
            (t_end + mel_end) / 2,
            0.5,
            f"clip ends at {t_end:.1f} s:\nrepeated (then silence)\nto fill the model's window",
            transform=ax_w.get_xaxis_transform(),
            ha="center",
            va="center",
            fontsize=8,
            color="0.25",
        )
    if cax is not None:
        fig.colorbar(im, cax=cax, label="dB")
    else:
        fig.colorbar(im, ax=ax_m, pad=0.01, label="dB")
    if title:
        ax_w.set_title(title)
    return fig


def augmentation(spectrogram: Any, augment: Any = None, n: int = 2) -> Figure:
    """One clip's log-mel ((1, frames, mels) or (frames, mels), dB) and ``n`` SpecAugment draws
    of it (default settings, fill = the clip's mean), time on x. Returns the Figure.
    Used by: notebook 09_cnn_baseline."""
    import matplotlib.pyplot as plt
    import torch

    from ..supervised.augment import SpecAugment

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
