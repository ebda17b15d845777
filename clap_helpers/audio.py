"""Decode any audio file to mono float32 at the rate a model wants.

One function, :func:`load_audio`, reads WAV (any PCM or float subtype), FLAC, OGG and MP3 with
soundfile (libsndfile >= 1.1 decodes MP3, so no ffmpeg is needed) and resamples with soxr.
Bad input raises :class:`AudioError`, which names the file and the reason; a silent clip or one with
NaN/inf samples is reported with an :class:`AudioWarning` (NaN/inf samples are zeroed), so a bad
sample never turns into a NaN embedding later.

Used by: clap_helpers.embed (every notebook that embeds audio), clap_helpers.soundscape and
clap_helpers.cnn (notebooks 08, 09), and notebook 01_download (durations, example clip).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

CLAP_SAMPLE_RATE = 48_000
"""Sampling rate (Hz) every CLAP checkpoint expects."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

# A decoded stream shorter than this fraction of the length its header declares is truncated.
# MP3 headers without a Xing/Info frame only estimate the length, hence the margin.
_MIN_DECODED_FRACTION = 0.9
_SILENCE_PEAK = 1e-6


class AudioError(RuntimeError):
    """A file that cannot be used as audio: missing, empty, truncated or undecodable.

    Attributes: ``path`` (str) and ``reason`` (short text, e.g. ``"file not found"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioWarning(UserWarning):
    """A clip that decodes but is suspicious (silent, or had NaN/inf samples that were zeroed)."""


def load_audio(
    path: str | os.PathLike, sr: int | None = CLAP_SAMPLE_RATE, *, warn: bool = True
) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform at ``sr`` Hz.

    Args:
        path: WAV/FLAC/OGG/MP3 file.
        sr: target rate in Hz (48 000 for CLAP); ``None`` keeps the file's own rate.
        warn: emit an :class:`AudioWarning` for silent clips and non-finite samples.

    Returns:
        waveform, shape (n_samples,), float32, nominally in [-1, 1]; channels are averaged.

    Raises:
        AudioError: the file is missing, empty, truncated or cannot be decoded.
    """
    waveform, _ = _decode(path, sr)
    for problem in inspect_waveform(waveform):
        if problem == "non-finite samples":
            waveform = np.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
            problem += " (set to 0)"
        if warn:
            warnings.warn(f"{path}: {problem}", AudioWarning, stacklevel=2)
    return waveform


def load_audio_with_rate(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` at its own rate: (waveform (n_samples,) float32 mono, rate in Hz)."""
    return _decode(path, None)


def _decode(path: str | os.PathLike, sr: int | None) -> tuple[np.ndarray, int]:
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found" if not path.exists() else "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with sf.SoundFile(path) as f:
            declared = f.frames
            file_rate = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
            file_format = f.format
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(path, f"cannot decode ({exc})") from exc
    if file_format == "WAV":
        _check_wav_length(path, size)
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples")
    if declared > 0 and data.shape[0] < _MIN_DECODED_FRACTION * declared:
        raise AudioError(path, f"truncated: decoded {data.shape[0]} of {declared} declared frames")
    waveform = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr is not None and sr != file_rate:
        waveform = soxr.resample(waveform, file_rate, sr, quality="HQ")
        file_rate = sr
    return np.ascontiguousarray(waveform, dtype=np.float32), file_rate


def _check_wav_length(path: Path, size: int) -> None:
    """Raise if a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds.

    Hand-written because libsndfile silently shortens such a chunk to what is on disk, so a cut
    download would otherwise pass as a shorter clip.
    """
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:12] != b"WAVE":
            return  # RF64, W64 and friends: trust libsndfile
        endian = "<" if header[:4] == b"RIFF" else ">"
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", f.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size != 0xFFFFFFFF and chunk_size > available:
                    raise AudioError(
                        path,
                        f"truncated: data chunk declares {chunk_size} bytes, "
                        f"file holds {available}",
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def inspect_waveform(waveform: np.ndarray) -> list[str]:
    """Problems of a decoded waveform (n_samples,): ``"non-finite samples"``, ``"silent"``."""
    problems = []
    finite = np.isfinite(waveform)
    if not finite.all():
        problems.append("non-finite samples")
    peak = float(np.max(np.abs(waveform[finite]), initial=0.0))
    if peak < _SILENCE_PEAK:
        problems.append("silent")
    return problems


def audio_info(path: str | os.PathLike) -> dict:
    """Header facts without decoding: samplerate (Hz), channels, frames, duration (s), format, subtype.

    Raises AudioError for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(path, f"cannot read header ({exc})") from exc
    return {
        "samplerate": info.samplerate,
        "channels": info.channels,
        "frames": info.frames,
        "duration": info.duration,
        "format": info.format,
        "subtype": info.subtype,
    }


def list_audio_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Audio files (WAV/FLAC/OGG/MP3, any case) under ``folder``, sorted; hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in candidates
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    )
