"""Batched, deterministic torch log-mel front-end for CLAP (drop-in for ``ClapFeatureExtractor``).

transformers' ``ClapFeatureExtractor`` computes features one clip at a time in float64 numpy
(about 30 ms per 10 s clip on a CPU) and draws random numbers for clips longer than the 10 s window.
:class:`LogMelFrontend` reproduces its maths in torch (float32 STFT by default, float64 on request)
for a whole batch, on any device, with no randomness::

    fe = ClapFeatureExtractor.from_pretrained("laion/clap-htsat-unfused")
    frontend = LogMelFrontend.from_feature_extractor(fe).to(device)
    out = frontend(waveforms, lengths)          # waveforms (B, T) float at 48 kHz, lengths (B,)
    emb = model.get_audio_features(input_features=out.input_features, is_longer=out.is_longer)

What it computes (per 10 s window, exactly as the extractor does)
    1. short clips are filled to ``max_length_s * sampling_rate`` samples by ``padding``:
       ``"repeatpad"`` tiles the clip ``N // L`` times, then zero-pads; ``"repeat"`` tiles
       ``N // L + 1`` times and cuts to ``N``; ``"pad"`` zero-pads;
    2. STFT: periodic Hann window of ``n_fft`` samples, hop ``hop_length``, centred frames with
       reflect padding of ``n_fft // 2`` at both ends -> ``1 + N // hop`` frames (1001);
    3. power spectrum ``|X|**2`` times a triangular mel filter bank: Slaney mel scale with Slaney
       (area) norm for ``truncation="rand_trunc"`` (unfused checkpoints), HTK mel scale without
       norm for ``"fusion"`` (fused checkpoints);
    4. ``10 * log10(max(mel, 1e-10))`` in dB, reference 1.0, no ``top_db`` clipping (the
       extractor stores ``top_db`` but never uses it).

Where it deliberately differs from the extractor (everything else matches: < 1e-4 dB for broadband
audio; pure tones in float32 differ in their near-silent bands, see ``stft_dtype``)
    * ``rand_trunc``, clip longer than the window: the extractor takes a *random* 10 s crop; here
      the *centred* crop is used. To cover a long clip, split it with :func:`split_windows` and
      pool the window embeddings.
    * ``fusion``, clip with more frames than the window: channels 1-3 are 1001-frame chunks of the
      full-clip log-mel starting at the *middle* candidate of each third of the possible starts
      (:func:`fusion_chunk_starts`) instead of a random one in each third; channel 0 (the full
      clip's log-mel shrunk to 1001 frames by bilinear interpolation) is the same as the
      extractor's.
    * ``is_longer`` depends only on the clip length (``L > N`` and more than 1001 frames). When no
      clip of a batch is longer, the extractor sets a *random* item's ``is_longer`` to True (so a
      short clip alone always gets True there): this front-end never does.

Used by: clap_helpers.embedding.encoder (every notebook that embeds audio), clap_helpers.supervised (notebook 09).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CHECKPOINT_F_MIN",
    "FrontendOutput",
    "LogMelFrontend",
    "batch_from_list",
    "fusion_chunk_starts",
    "hann_window",
    "mel_filter_bank",
    "pad_or_repeat",
    "split_windows",
]

TRUNCATIONS = ("rand_trunc", "fusion")
PADDINGS = ("repeatpad", "repeat", "pad")
MEL_FLOOR = 1e-10  # power floor before the log: -100 dB
#: Lowest mel band edge (Hz) in the parameter files of all five LAION hub checkpoints
#: (``frequency_min`` 50); ``ClapFeatureExtractor()`` and :class:`LogMelFrontend` default to 0.
CHECKPOINT_F_MIN = 50.0


class FrontendOutput(NamedTuple):
    """Output of :meth:`LogMelFrontend.forward`; unpacks as ``features, is_longer``.

    ``input_features``: (B, C, frames, n_mels) float32 log-mel in dB, C = 1 (``rand_trunc``) or
    4 (``fusion``), frames = 1001 for the default 10 s window. ``is_longer``: (B, 1) bool, the
    shape of the extractor's ``is_longer``. Field names match ``ClapModel`` keyword arguments.
    """

    input_features: torch.Tensor
    is_longer: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Window and mel filter bank (float64 numpy, built once per front-end)
# ----------------------------------------------------------------------------------------------
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, (n_fft,) float64: ``0.5 - 0.5 cos(2 pi n / n_fft)``."""
    n = np.arange(n_fft, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)


_SLANEY_F_BREAK = 1000.0  # Hz; the Slaney scale is linear below, logarithmic above
_SLANEY_M_BREAK = 15.0  # mel value at the break (3 * 1000 / 200)
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # log-Hz per mel above the break


def _hz_to_mel(hz: np.ndarray, scale: str) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = 3.0 * hz / 200.0
    with np.errstate(divide="ignore"):
        log = _SLANEY_M_BREAK + np.log(hz / _SLANEY_F_BREAK) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_F_BREAK, log, linear)


def _mel_to_hz(mel: np.ndarray, scale: str) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = 200.0 * mel / 3.0
    log = _SLANEY_F_BREAK * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_M_BREAK))
    return np.where(mel >= _SLANEY_M_BREAK, log, linear)


def mel_filter_bank(
    n_freqs: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    sampling_rate: int,
    scale: str = "slaney",
    slaney_norm: bool = True,
) -> np.ndarray:
    """Triangular mel filter bank, (n_freqs, n_mels) float64 (power spectrum -> mel).

    ``n_freqs`` linearly spaced FFT bins from 0 to ``sampling_rate // 2`` Hz; ``n_mels`` triangles
    whose edges are ``n_mels + 2`` points equally spaced on the ``scale`` (``"slaney"`` or
    ``"htk"``) mel axis between ``f_min`` and ``f_max`` Hz. ``slaney_norm`` divides each triangle
    by half its width in Hz (constant area). Same values as ``transformers.audio_utils``.
    """
    if scale not in ("slaney", "htk"):
        raise ValueError(f"scale must be 'slaney' or 'htk', got {scale!r}")
    if not 0 <= f_min <= f_max:
        raise ValueError(f"need 0 <= f_min <= f_max, got {f_min}, {f_max}")
    mels = np.linspace(_hz_to_mel(f_min, scale), _hz_to_mel(f_max, scale), n_mels + 2)
    edges = _mel_to_hz(mels, scale)  # (n_mels + 2,) Hz
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    freqs = np.linspace(0, sampling_rate // 2, n_freqs)[:, None]  # (n_freqs, 1) Hz
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if slaney_norm:
        fb = fb * (2.0 / (hi - lo))
    return fb


# ----------------------------------------------------------------------------------------------
# Waveform helpers
# ----------------------------------------------------------------------------------------------
def _as_lengths(lengths: Any, batch: int, total: int) -> list[int]:
    if lengths is None:
        return [total] * batch
    out = [int(n) for n in torch.as_tensor(lengths).reshape(-1).tolist()]
    if len(out) != batch:
        raise ValueError(f"got {len(out)} lengths for a batch of {batch}")
    bad = [n for n in out if not 0 < n <= total]
    if bad:
        raise ValueError(f"lengths must be in 1..{total} (the padded length), got {bad[:5]}")
    return out


def _fill(dst: torch.Tensor, clip: torch.Tensor, padding: str) -> None:
    """Write one clip (L,) into ``dst`` (N,) (a contiguous row) by the padding rule."""
    n, length = dst.shape[0], clip.shape[0]
    if length >= n:  # exact fit, or the centred crop of a longer clip
        offset = (length - n) // 2
        dst.copy_(clip[offset : offset + n])
        return
    if padding == "pad":
        reps = 1
    else:  # "repeatpad" and "repeat" tile the clip N // L times ...
        reps = n // length
    dst[: reps * length].view(reps, length).copy_(clip.expand(reps, length))
    rest = dst[reps * length :]
    if padding == "repeat":  # ... "repeat" fills the rest with the clip's start
        rest.copy_(clip[: rest.shape[0]])
    else:
        rest.zero_()


def pad_or_repeat(
    waveforms: torch.Tensor,
    lengths: Any = None,
    max_length: int = 480_000,
    padding: str = "repeatpad",
) -> torch.Tensor:
    """Fill each clip to exactly ``max_length`` samples with the extractor's padding rule.

    waveforms: (B, T) samples, zero-padded on the right; lengths: (B,) true lengths in samples
    (default T). Clips with ``L <= max_length``: ``"repeatpad"`` tiles the first L samples
    ``max_length // L`` times then zero-pads, ``"repeat"`` tiles ``max_length // L + 1`` times and
    cuts, ``"pad"`` zero-pads. Longer clips: the centred ``max_length`` crop (deterministic; the
    extractor crops at random). Returns (B, max_length), same dtype and device.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if waveforms.ndim != 2:
        raise ValueError(f"waveforms must be (B, T), got shape {tuple(waveforms.shape)}")
    lens = _as_lengths(lengths, *waveforms.shape)
    out = waveforms.new_empty((len(lens), max_length))
    for i, length in enumerate(lens):
        _fill(out[i], waveforms[i, :length], padding)
    return out


def split_windows(
    waveform: torch.Tensor,
    window: int = 480_000,
    hop: int | None = None,
    min_last: int = 48_000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut one clip into consecutive windows for :class:`LogMelFrontend`.

    waveform: (T,) samples. Windows start every ``hop`` samples (default ``window``: no overlap).
    A last, partial window is kept when it holds at least ``min_last`` samples (default 1 s at
    48 kHz) or when it is the only window; a shorter tail is dropped. Returns ``windows``
    (W, window), zero-padded on the right, and ``lengths`` (W,) int64, the real samples in each,
    to pass straight to the front-end (which fills partial windows with its padding rule).
    """
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D, got shape {tuple(waveform.shape)}")
    hop = window if hop is None else int(hop)
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    total = waveform.shape[0]
    if total == 0:
        raise ValueError("empty waveform")
    starts = list(range(0, max(total - window, 0) + 1, hop))
    last_end = starts[-1] + window
    if last_end < total and total - (starts[-1] + hop) >= min_last:
        starts.append(starts[-1] + hop)  # partial tail window
    lengths = torch.tensor([min(window, total - s) for s in starts], dtype=torch.int64)
    windows = waveform.new_zeros((len(starts), window))
    for i, (s, n) in enumerate(zip(starts, lengths.tolist(), strict=True)):
        windows[i, :n] = waveform[s : s + n]
    return windows, lengths


def fusion_chunk_starts(total_frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """Deterministic start frames of the 3 local ``fusion`` chunks (front, middle, back).

    The extractor splits the ``total_frames - chunk_frames + 1`` possible starts into 3 nearly
    equal consecutive parts (``np.array_split``) and picks a random start in each (an empty part
    gives 0). Here: the middle element of each part, ``part[(len(part) - 1) // 2]``.
    """
    n = total_frames - chunk_frames + 1
    if n < 1:
        raise ValueError(f"total_frames {total_frames} < chunk_frames {chunk_frames}")
    q, r = divmod(n, 3)
    starts, begin = [], 0
    for part in range(3):
        size = q + (1 if part < r else 0)
        starts.append(begin + (size - 1) // 2 if size > 0 else 0)
        begin += size
    return starts[0], starts[1], starts[2]


def _autocast_off(device: torch.device):
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # pragma: no cover - device type without autocast
        return contextlib.nullcontext()


def _fp32_matmul_is_reduced(device: torch.device) -> bool:
    """True where float32 matmuls may run in TF32/bf16 (global flags set by the user)."""
    if device.type not in ("cpu", "cuda"):
        return False
    exact = ("none", "ieee")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = torch.backends.cuda.matmul if device.type == "cuda" else None
            if device.type == "cpu":
                backend = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
            if getattr(backend, "fp32_precision", "none") not in exact:
                return True
            if getattr(torch.backends, "fp32_precision", "none") not in exact:
                return True
            if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
                return True
            return torch.get_float32_matmul_precision() != "highest"
    except (RuntimeError, AttributeError):  # mixed legacy/new precision APIs: play safe
        return True


# ----------------------------------------------------------------------------------------------
# The front-end
# ----------------------------------------------------------------------------------------------
class LogMelFrontend(torch.nn.Module):
    """Batched CLAP log-mel features; numerically the ``ClapFeatureExtractor`` (see module doc).

    Args:
        truncation: ``"rand_trunc"`` (unfused checkpoints: 1 channel, Slaney mel) or ``"fusion"``
            (fused checkpoints: 4 channels, HTK mel).
        sampling_rate: input rate in Hz (48 000 for every CLAP checkpoint).
        n_fft: FFT size = Hann window length, samples. hop_length: frame step, samples.
        n_mels: mel bands. f_min, f_max: band edges of the filter bank, Hz.
        max_length_s: window length in seconds (10); ``N = max_length_s * sampling_rate``.
        padding: ``"repeatpad"``, ``"repeat"`` or ``"pad"`` for clips shorter than the window.
        chunk_size: clips transformed at once; None = 4 on CPU (small enough for the STFT to stay
            in cache, large enough for multi-threaded ops), 64 elsewhere (~1.5 GB of GPU memory).
        stft_dtype: ``torch.float32`` (default; fast, works on MPS) or ``torch.float64``. A
            float32 FFT's rounding noise sits ~140 dB below each frame's energy: broadband audio
            matches the extractor to ~5e-5 dB, but pure tones show up to ~1e-2 dB in bands 60-80
            dB below the frame's loudest band and up to ~2 dB in near-silent bands (close to the
            -100 dB floor). float64 matches everywhere (< 1e-5 dB) at ~1.5-2x the CPU cost. The
            output is float32 either way.

    Buffers ``window`` (n_fft,) and ``mel_fb`` (n_bins, n_mels) float32 follow ``.to(device)``
    (do not ``.half()`` the module); ``mel_fb`` keeps only the FFT bins up to ``f_max`` (the
    others have zero weight). Inputs are moved to the buffers' device.
    """

    def __init__(
        self,
        truncation: str = "rand_trunc",
        sampling_rate: int = 48_000,
        n_fft: int = 1024,
        hop_length: int = 480,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float = 14_000.0,
        max_length_s: float = 10,
        padding: str = "repeatpad",
        chunk_size: int | None = None,
        stft_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.truncation = truncation
        self.padding = padding
        self.sampling_rate = int(sampling_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = float(f_max)
        self.max_length_s = max_length_s
        self.max_length = int(max_length_s * sampling_rate)  # N, samples per window
        self.n_frames = self.max_length // self.hop_length + 1  # frames per window (1001)
        self.chunk_size = chunk_size
        if stft_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"stft_dtype must be torch.float32 or torch.float64, got {stft_dtype}")
        self.stft_dtype = stft_dtype
        fusion = truncation == "fusion"
        fb = mel_filter_bank(
            self.n_fft // 2 + 1,
            self.n_mels,
            self.f_min,
            self.f_max,
            self.sampling_rate,
            scale="htk" if fusion else "slaney",
            slaney_norm=not fusion,
        )
        used = np.flatnonzero(fb.any(axis=1))
        n_bins = int(used[-1]) + 1 if used.size else 1
        self._window64 = hann_window(self.n_fft)  # float64 originals for stft_dtype=float64
        self._mel_fb64 = np.ascontiguousarray(fb[:n_bins])
        # Derived from the config, so not part of a state_dict.
        self.register_buffer("window", torch.from_numpy(self._window64).float(), persistent=False)
        self.register_buffer("mel_fb", torch.from_numpy(self._mel_fb64).float(), persistent=False)

    @classmethod
    def from_feature_extractor(cls, fe: Any, **overrides: Any) -> LogMelFrontend:
        """Build from a loaded ``ClapFeatureExtractor`` (its ``preprocessor_config.json``).

        Reads truncation, padding, sampling_rate, fft_window_size, hop_length, feature_size,
        frequency_min/max and max_length_s; keyword ``overrides`` replace any of them
        (e.g. ``truncation="rand_trunc"``).
        """
        kwargs = dict(
            truncation=fe.truncation,
            sampling_rate=fe.sampling_rate,
            n_fft=fe.fft_window_size,
            hop_length=fe.hop_length,
            n_mels=fe.feature_size,
            f_min=fe.frequency_min,
            f_max=fe.frequency_max,
            max_length_s=fe.max_length_s,
            padding=fe.padding,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return (
            f"truncation={self.truncation!r}, padding={self.padding!r}, "
            f"sampling_rate={self.sampling_rate}, n_fft={self.n_fft}, hop={self.hop_length}, "
            f"n_mels={self.n_mels}, f=({self.f_min}, {self.f_max}) Hz, window={self.max_length}"
        )

    @property
    def n_channels(self) -> int:
        """Feature channels: 1 (``rand_trunc``) or 4 (``fusion``)."""
        return 4 if self.truncation == "fusion" else 1

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Log-mel of whole signals, no padding rule: (B, T) -> (B, 1 + T // hop, n_mels) dB.

        Centred frames (reflect padding of ``n_fft // 2`` at both ends, T > ``n_fft // 2``),
        ``stft_dtype`` STFT, power, mel filter bank, ``10 log10`` with a 1e-10 floor; float32.
        """
        x = waveforms.to(device=self.window.device, dtype=self.stft_dtype)
        pad = self.n_fft // 2
        return self._log_mel_padded(F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0])

    def _log_mel_padded(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T + n_fft) already reflect-padded, ``stft_dtype`` -> (B, 1 + T // hop, n_mels)."""
        device = self.window.device
        exact = self.stft_dtype == torch.float64
        if exact:
            window = torch.from_numpy(self._window64).to(device)
            fb = torch.from_numpy(self._mel_fb64).to(device)
        else:
            window, fb = self.window.float(), self.mel_fb.float()
        with _autocast_off(device), torch.no_grad():
            spec = torch.stft(
                x, self.n_fft, self.hop_length, window=window, center=False, return_complex=True
            )  # (B, n_fft // 2 + 1, frames) complex
            spec = torch.view_as_real(spec.transpose(1, 2)[..., : fb.shape[0]])  # > f_max: unused
            power = spec[..., 0].square() + spec[..., 1].square()  # (B, frames, bins)
            if not exact and device.type != "mps" and _fp32_matmul_is_reduced(device):
                mel = (power.double() @ fb.double()).float()  # dodge TF32 / bf16 matmuls
            else:
                mel = power @ fb
            return mel.clamp_min_(MEL_FLOOR).log10_().mul_(10.0).float()

    def _windows(self, waveforms: torch.Tensor, lens: list[int]) -> torch.Tensor:
        """Clips (b, T) -> padding rule + reflect padding: (b, N + n_fft) on device, stft_dtype."""
        pad, n = self.n_fft // 2, self.max_length
        x = waveforms.to(device=self.window.device, dtype=self.stft_dtype)
        buf = x.new_empty((len(lens), n + 2 * pad))
        for i, length in enumerate(lens):
            _fill(buf[i, pad : pad + n], x[i, :length], self.padding)
        buf[:, :pad] = buf[:, pad + 1 : 2 * pad + 1].flip(-1)
        buf[:, pad + n :] = buf[:, n - 1 : pad + n - 1].flip(-1)
        return buf

    def forward(self, waveforms: torch.Tensor, lengths: Any = None) -> FrontendOutput:
        """Features for a batch of clips.

        waveforms: (B, T) or (T,) float at ``sampling_rate``, zero-padded on the right;
        lengths: (B,) ints, the real samples of each clip (default: all T). Returns
        :class:`FrontendOutput` ``(input_features (B, C, n_frames, n_mels) float32 dB,
        is_longer (B, 1) bool)`` on the front-end's device, C = :attr:`n_channels`.
        Clips of up to ``max_length`` samples are filled by the padding rule; longer clips are
        centre-cropped (``rand_trunc``) or fused from the whole clip (``fusion``, see module doc).
        No gradients are tracked.
        """
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (B, T), got shape {tuple(waveforms.shape)}")
        device = self.window.device
        batch, total = waveforms.shape
        lens = _as_lengths(lengths, batch, total)
        n_max = self.max_length
        feats = torch.empty(
            (batch, self.n_channels, self.n_frames, self.n_mels), dtype=torch.float32, device=device
        )
        # is_longer: only clips beyond the window (rand_trunc: cropped, as in the extractor,
        # ignored by unfused models; fusion: fused, unless within one hop of the window).
        longer = [n > n_max for n in lens]
        fused_long = [i for i in range(batch) if self.truncation == "fusion" and longer[i]]
        skip = set(fused_long)
        windowed = [i for i in range(batch) if i not in skip]
        chunk = self.chunk_size or (4 if device.type == "cpu" else 64)
        with torch.no_grad(), _autocast_off(device):
            for start in range(0, len(windowed), chunk):
                rows = windowed[start : start + chunk]
                sub_lens = [lens[i] for i in rows]
                if rows[-1] - rows[0] == len(rows) - 1:  # consecutive: a view, no gather
                    clips = waveforms[rows[0] : rows[-1] + 1, : max(sub_lens)]
                else:
                    clips = waveforms[rows, : max(sub_lens)]
                mel = self._log_mel_padded(self._windows(clips, sub_lens))
                feats[rows] = mel[:, None]  # broadcasts over the 4 fusion channels
            for i in fused_long:
                feats[i], longer[i] = self._fuse(waveforms[i, : lens[i]])
        is_longer = torch.tensor(longer, dtype=torch.bool).reshape(batch, 1).to(device)
        return FrontendOutput(feats, is_longer)

    def _fuse(self, waveform: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """4-channel fusion features of one clip longer than the window: (4, n_frames, n_mels)."""
        mel = self.log_mel(waveform[None])[0]  # (total_frames, n_mels)
        total = mel.shape[0]
        if total == self.n_frames:  # longer by less than one hop: the whole mel, not "longer"
            return mel.expand(4, -1, -1), False
        shrunk = F.interpolate(
            mel[None, None], size=(self.n_frames, self.n_mels), mode="bilinear", align_corners=False
        )[0, 0]
        chunks = [mel[s : s + self.n_frames] for s in fusion_chunk_starts(total, self.n_frames)]
        return torch.stack([shrunk, *chunks]), True


def batch_from_list(clips: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D clips of any lengths: -> waveforms (B, max T) float32 zero-padded, lengths (B,)."""
    tensors = [torch.as_tensor(np.asarray(c, dtype=np.float32)).reshape(-1) for c in clips]
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    out = torch.zeros((len(tensors), int(lengths.max())), dtype=torch.float32)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out, lengths
