"""Decode any audio file to mono float32 at the rate a model wants.

One function, :func:`load_audio`, reads WAV (any PCM or float subtype), FLAC, OGG and MP3 with
soundfile (libsndfile >= 1.1 decodes MP3, so no ffmpeg is needed) and resamples with soxr.
Bad input raises :class:`AudioError`, which names the file and the reason; a silent clip or one with
NaN/inf samples is reported with an :class:`AudioWarning` (NaN/inf samples are zeroed), so a bad
sample never turns into a NaN embedding later.

Memory: files are decoded in blocks of about 1 M frames and resampled with a streaming resampler,
so peak memory is the output waveform plus a few blocks; decoding stops at ``max_seconds``
(default :data:`DEFAULT_MAX_SECONDS`, 30 min: 345 MB of 48 kHz float32) with an
:class:`AudioWarning`, so a 2 h file (or a header that claims one) cannot exhaust memory.

libmpg123 (libsndfile's MP3 decoder) prints notes and errors from C straight to file
descriptor 2; they are captured while a file is decoded: known chatter (Xing size notes) is
dropped, stream errors become part of the :class:`AudioError` or :class:`AudioWarning` naming the
file, and any other captured text (e.g. another thread's output) is written back to stderr.

Used by: clap_helpers.embedding.encoder (every notebook that embeds audio), clap_helpers.data.soundscapes and
clap_helpers.supervised (notebooks 08, 09), and notebook 01_download (durations, example clip).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..diagnostics import ClapWarning

__all__ = [
    "AUDIO_EXTENSIONS",
    "audio_info",
    "AudioError",
    "AudioWarning",
    "CLAP_SAMPLE_RATE",
    "DEFAULT_MAX_SECONDS",
    "inspect_waveform",
    "list_audio_files",
    "load_audio",
    "load_audio_with_rate",
]

CLAP_SAMPLE_RATE = 48_000
"""Sampling rate (Hz) every CLAP checkpoint expects."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

DEFAULT_MAX_SECONDS = 1800.0
"""Decoding stops after this many seconds (30 min) unless ``max_seconds`` says otherwise."""

_BLOCK_FRAMES = 1 << 20  # frames read per block (24 s at 44.1 kHz; 8 MB for stereo float32)

# A decoded stream shorter than this fraction of the length its header declares is truncated.
# MP3 headers without a Xing/Info frame only estimate the length, hence the margin.
_MIN_DECODED_FRACTION = 0.9
_SILENCE_PEAK = 1e-6


class AudioError(RuntimeError):
    """A file that cannot be used as audio: missing, empty, truncated, not recognisable as audio,
    undecodable, or too large for the memory left.

    Attributes: ``path`` (str) and ``reason`` (short text, e.g. ``"file not found"``,
    ``"not a recognisable audio file (WAV, FLAC, OGG or MP3)"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioWarning(ClapWarning):
    """A clip that decodes but is suspicious: silent, NaN/inf samples (zeroed), longer than
    ``max_seconds`` (cut), or MP3 frames libmpg123 had to skip."""


def load_audio(
    path: str | os.PathLike,
    sr: int | None = CLAP_SAMPLE_RATE,
    *,
    warn: bool = True,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform at ``sr`` Hz.

    Args:
        path: WAV/FLAC/OGG/MP3 file.
        sr: target rate in Hz (48 000 for CLAP); ``None`` keeps the file's own rate.
        warn: emit an :class:`AudioWarning` for silent clips, non-finite samples, clips cut at
            ``max_seconds`` and MP3 streams with corrupt frames that were skipped.
        max_seconds: decode at most this many seconds from the start (default 30 min); a longer
            file gives its first ``max_seconds`` and a warning. ``None``: no limit (a 2 h file
            then needs 1.4 GB at 48 kHz).

    Returns:
        waveform, shape (n_samples,), float32, nominally in [-1, 1]; channels are averaged.

    Raises:
        AudioError: the file is missing, empty, truncated, not recognisable as audio, cannot be
            decoded, or decoding it ran out of memory.
    """
    waveform, _, notes = _decode(path, sr, max_seconds)
    for problem in inspect_waveform(waveform):
        if problem == "non-finite samples":
            np.nan_to_num(waveform, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            problem += " (set to 0)"
        notes.append(problem)
    if warn:
        for note in notes:
            warnings.warn(f"{path}: {note}", AudioWarning, stacklevel=2)
    return waveform


def load_audio_with_rate(
    path: str | os.PathLike, max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> tuple[np.ndarray, int]:
    """Decode ``path`` at its own rate: (waveform (n_samples,) float32 mono, rate in Hz).

    Stops at ``max_seconds`` like :func:`load_audio`, with the same warnings (silence excepted).
    """
    waveform, rate, notes = _decode(path, None, max_seconds)
    for note in notes:
        warnings.warn(f"{path}: {note}", AudioWarning, stacklevel=2)
    return waveform, rate


def _decode(
    path: str | os.PathLike, sr: int | None, max_seconds: float | None
) -> tuple[np.ndarray, int, list[str]]:
    """-> (waveform (n,) float32 mono at ``sr`` or the file's rate, that rate, warning notes)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found" if not path.exists() else "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path, "empty file (0 bytes): not a recognisable audio file")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds!r}")
    notes: list[str] = []
    with _capture_c_stderr() as captured:
        try:
            f = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            # libsndfile says "File does not exist" for a file it cannot identify: say what it is.
            raise AudioError(path, _unrecognised(exc, captured)) from exc
        try:
            with f:
                file_rate, declared, file_format = f.samplerate, f.frames, f.format
                limit = None if max_seconds is None else int(round(max_seconds * file_rate))
                waveform, frames_read, rate, cut = _read_blocks(f, sr, limit)
        except MemoryError as exc:
            raise AudioError(
                path,
                f"out of memory while decoding; pass a smaller max_seconds (now {max_seconds})",
            ) from exc
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(path, f"cannot decode ({_mpeg_detail(exc, captured)})") from exc
    if file_format == "WAV":
        _check_wav_length(path, size)
    if frames_read == 0:
        raise AudioError(path, "no audio samples")
    expected = declared if limit is None else min(declared, limit)
    if expected > 0 and frames_read < _MIN_DECODED_FRACTION * expected:
        raise AudioError(path, f"truncated: decoded {frames_read} of {declared} declared frames")
    if captured.problems:
        notes.append(f"corrupt MP3 frames skipped (libmpg123: {captured.problems[0]})")
    if cut:
        length = f"{declared / file_rate:.0f} s" if declared > frames_read else "longer"
        notes.append(
            f"{length} long: only its first {max_seconds:g} s are used (max_seconds={max_seconds:g})"
        )
    return waveform, rate, notes


def _read_blocks(
    f: sf.SoundFile, sr: int | None, limit: int | None
) -> tuple[np.ndarray, int, int, bool]:
    """Read at most ``limit`` frames of an open file in blocks, averaging channels and resampling
    each block with a streaming soxr resampler, into one preallocated output.

    Returns (waveform (n,) float32 at ``sr`` or the file's rate, frames read, that rate, whether
    the file goes on past ``limit``). Peak memory: the output plus about two blocks.
    """
    file_rate = f.samplerate
    rate = file_rate if sr is None else int(sr)
    stream = None if rate == file_rate else soxr.ResampleStream(file_rate, rate, 1, "float32", "HQ")
    # Headers (MP3 above all) can claim any length: trust them only up to the limit.
    expected = f.frames if f.frames > 0 else _BLOCK_FRAMES
    expected = min(expected, limit if limit is not None else int(DEFAULT_MAX_SECONDS * file_rate))
    out = _Growing(int(np.ceil(expected * rate / file_rate)) + 16)
    frames_read = 0
    while limit is None or frames_read < limit:
        want = _BLOCK_FRAMES if limit is None else min(_BLOCK_FRAMES, limit - frames_read)
        block = f.read(want, dtype="float32", always_2d=True)
        frames_read += block.shape[0]
        done = block.shape[0] < want or (limit is not None and frames_read >= limit)
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        out.append(mono if stream is None else stream.resample_chunk(mono, last=done))
        if done:
            break
    cut = limit is not None and frames_read >= limit and f.read(1, dtype="float32").shape[0] > 0
    return out.result(), frames_read, rate, cut


class _Growing:
    """A float32 buffer filled block by block; grows by half when a header under-declared."""

    def __init__(self, capacity: int):
        self.data = np.empty(max(capacity, 1), dtype=np.float32)
        self.size = 0

    def append(self, x: np.ndarray) -> None:
        end = self.size + x.shape[0]
        if end > self.data.shape[0]:
            bigger = np.empty(max(end, self.data.shape[0] * 3 // 2), dtype=np.float32)
            bigger[: self.size] = self.data[: self.size]
            self.data = bigger
        self.data[self.size : end] = x
        self.size = end

    def result(self) -> np.ndarray:
        if self.size < 0.9 * self.data.shape[0]:
            return self.data[: self.size].copy()  # free an over-declared buffer
        return self.data[: self.size]


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


# -- libmpg123's stderr ------------------------------------------------------------------------
# libmpg123 lines: "Note: ...", "Warning: ...", "[src/libmpg123/parse.c:wetwork():1349] error: ...".
_MPG123_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)?(?:note|warning|error):\s*(.*)$", re.IGNORECASE)
# Chatter about headers or resync bookkeeping, harmless on its own: a truncated stream is caught by
# its frame count, a stream that cannot be decoded by libsndfile's own error.
_HARMLESS = re.compile(
    r"Xing stream size|fuzzy seeking|Trying to resync|Hit end of \(available\) data", re.IGNORECASE
)
_capture_lock = threading.Lock()
_capture_file: dict[int, int] = {}  # pid -> fd of this process's capture file


def _reset_after_fork() -> None:
    global _capture_lock
    _capture_lock = threading.Lock()  # a lock held by another thread at fork time stays held


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class _CapturedStderr:
    """What C code wrote to file descriptor 2 during :func:`_capture_c_stderr`."""

    def __init__(self, fd: int | None):
        self.fd = fd
        self.final: str | None = None  # the text, kept when the capture ends

    def text(self) -> str:
        if self.final is not None or self.fd is None:
            return self.final or ""
        # pread: the write offset, shared with fd 2, must not move.
        return os.pread(self.fd, os.fstat(self.fd).st_size, 0).decode("utf-8", "replace")

    @property
    def problems(self) -> list[str]:
        """libmpg123 notes, warnings and errors other than known chatter, prefixes removed."""
        found = []
        for line in self.text().splitlines():
            m = _MPG123_LINE.match(line.strip())
            if m and not _HARMLESS.search(line) and m.group(1).strip():
                found.append(m.group(1).strip())
        return found

    def others(self) -> str:
        """Captured lines that are not libmpg123's (another thread's output): to write back."""
        lines = self.text().splitlines(keepends=True)
        return "".join(line for line in lines if not _MPG123_LINE.match(line.strip()))


@contextlib.contextmanager
def _capture_c_stderr():
    """Point file descriptor 2 at a temporary file while libsndfile/libmpg123 run.

    Per process (DataLoader workers get their own file) and one thread at a time (fd 2 is
    shared by all threads). Lines that are not libmpg123's are written back to the real fd 2
    afterwards, so no other output is lost. If fd 2 cannot be duplicated, nothing is captured.
    """
    with _capture_lock:
        try:
            saved = os.dup(2)
        except OSError:
            yield _CapturedStderr(None)
            return
        pid = os.getpid()
        if pid not in _capture_file:
            handle, name = tempfile.mkstemp(prefix="clap_helpers_stderr_")
            os.unlink(name)
            _capture_file[pid] = handle
        fd = _capture_file[pid]
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        if sys.stderr is not None:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
        os.dup2(fd, 2)
        captured = _CapturedStderr(fd)
        try:
            yield captured
        finally:
            if sys.stderr is not None:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.final = captured.text()  # the file is reused by the next capture
            other = captured.others()
            if other:
                os.write(2, other.encode("utf-8", "replace"))


def _libsndfile_text(exc: BaseException) -> str:
    return str(getattr(exc, "error_string", None) or exc).strip()


def _unrecognised(exc: BaseException, captured: _CapturedStderr) -> str:
    """Reason for a file libsndfile cannot open."""
    text = _libsndfile_text(exc)
    if "System error" in text:  # e.g. permission denied: the file may be fine
        return f"cannot open ({text})"
    reason = "not a recognisable audio file (WAV, FLAC, OGG or MP3)"
    # For a file it cannot identify libsndfile says "File does not exist or is not a regular
    # file": wrong and confusing, so it is left out (the file was checked to exist).
    if "does not exist" not in text and "not a regular file" not in text:
        reason += f"; libsndfile: {text}"
    return reason


def _mpeg_detail(exc: BaseException, captured: _CapturedStderr) -> str:
    """libsndfile's error, with libmpg123's last complaint when there is one."""
    text = _libsndfile_text(exc)
    problems = captured.problems
    return f"{text}; libmpg123: {problems[-1]}" if problems else text


def inspect_waveform(waveform: np.ndarray) -> list[str]:
    """Problems of a decoded waveform (n_samples,): ``"non-finite samples"``, ``"silent"``."""
    all_finite, peak = True, 0.0
    for start in range(0, waveform.shape[0], _BLOCK_FRAMES):  # blocks: no full-length temporaries
        block = waveform[start : start + _BLOCK_FRAMES]
        finite = np.isfinite(block)
        if not finite.all():
            all_finite = False
            block = block[finite]
        peak = max(peak, float(np.max(np.abs(block), initial=0.0)))
    problems = [] if all_finite else ["non-finite samples"]
    if peak < _SILENCE_PEAK:
        problems.append("silent")
    return problems


def audio_info(path: str | os.PathLike) -> dict:
    """Header facts without decoding: samplerate (Hz), channels, frames, duration (s), format, subtype.

    Raises AudioError for a missing, empty or unrecognisable file. libmpg123's stderr chatter is
    captured as in :func:`load_audio`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes): not a recognisable audio file")
    with _capture_c_stderr() as captured:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(path, _unrecognised(exc, captured)) from exc
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
