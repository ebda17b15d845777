"""Soundscapes for robustness experiments: a foreground clip mixed into a background at a given SNR.

Definitions used throughout (all deterministic given ``seed``):

- **Length**: every soundscape is ``round(duration_s * sr)`` samples (10 s at 48 kHz by default).
- **Background**: a background longer than that is cropped at a seeded start; a shorter one is
  looped (repeated end to end, no cross-fade) from a seeded phase.
- **Foreground placement**: at a seeded offset drawn uniformly so that it fits inside the
  soundscape (``position="random"``), or centred (``position="center"``). A foreground longer than
  the soundscape is cropped at a seeded start.
- **Active samples**: the foreground is cut into 10 ms frames; a frame is active when its RMS is
  within ``ACTIVE_RANGE_DB`` (60 dB) of the loudest frame. This drops the digital-silence padding
  of ESC-50 / UrbanSound8K clips.
- **SNR**: ``10 * log10(P_fg / P_bg)`` with both powers (mean squared amplitude) taken over the
  active samples only, i.e. the background where the event sounds. The background keeps its level;
  the foreground is scaled.
- **Clipping**: if the mix peaks above 1.0 it is scaled down (foreground and background together,
  so the SNR is kept) to a peak of ``PEAK_TARGET`` (0.99); otherwise it is left untouched.

Used by: notebook 08_adaptation.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..diagnostics import ClapWarning
from .audio import AudioError, list_audio_files, load_audio

ACTIVE_RANGE_DB = 60.0
FRAME_S = 0.010
PEAK_TARGET = 0.99

__all__ = [
    "build_soundscapes",
    "condition_label",
    "foreground_subset",
    "Soundscape",
    "active_mask",
    "iter_soundscapes",
    "list_audio_files",
    "make_soundscapes",
    "mix_at_snr",
]


class Soundscape(NamedTuple):
    """One mixed soundscape: ``audio`` is (duration_s * sr,) float32, ``snr_db`` in dB."""

    name: str
    audio: np.ndarray
    snr_db: float
    foreground: str
    background: str


def active_mask(
    x: np.ndarray, sr: int = 48000, range_db: float = ACTIVE_RANGE_DB, frame_s: float = FRAME_S
) -> np.ndarray:
    """Boolean (T,) mask of the active samples of ``x`` (T,): 10 ms frames whose RMS is within
    ``range_db`` dB of the loudest frame (the last, partial frame included). All False if silent.
    """
    x = np.asarray(x, dtype=np.float64)
    hop = max(1, round(frame_s * sr))
    n_frames = -(-x.size // hop)
    padded = np.zeros(n_frames * hop)
    padded[: x.size] = x
    sq = (padded**2).reshape(n_frames, hop).sum(axis=1)
    counts = np.full(n_frames, hop, dtype=float)
    counts[-1] = x.size - hop * (n_frames - 1)
    power = sq / counts
    peak = power.max() if n_frames else 0.0
    if peak <= 0.0:
        return np.zeros(x.size, dtype=bool)
    frames = power >= peak * 10.0 ** (-range_db / 10.0)
    return np.repeat(frames, hop)[: x.size]


def mix_at_snr(
    foreground: np.ndarray,
    background: np.ndarray,
    snr_db: float,
    seed: int = 0,
    duration_s: float = 10.0,
    sr: int = 48000,
    position: str = "random",
    return_parts: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mix ``foreground`` into ``background`` at ``snr_db`` dB (definitions in the module docstring).

    Args:
        foreground: (T,) mono waveform at ``sr`` Hz.
        background: (T2,) mono waveform at ``sr`` Hz, any length (looped or cropped).
        snr_db: target SNR in dB over the foreground's active samples.
        seed: seeds the background crop/phase and the foreground offset.
        duration_s, sr: output length in seconds and rate in Hz.
        position: ``"random"`` (seeded offset) or ``"center"``.
        return_parts: also return the scaled foreground and background tracks (same scaling as
            the mix, so ``mix == fg + bg``) to measure the SNR.

    Returns:
        (round(duration_s * sr),) float32 mix, peak <= 1; or ``(mix, fg, bg)`` if ``return_parts``.

    Raises:
        ValueError: empty or silent foreground, background silent where the foreground sounds,
            non-1-D inputs or an unknown ``position``.

    Used by: notebook 08_adaptation (via :func:`make_soundscapes`).
    """
    fg = _mono(foreground, "foreground")
    bg = _mono(background, "background")
    if position not in ("random", "center"):
        raise ValueError(f"position must be 'random' or 'center', got {position!r}")
    n = round(duration_s * sr)
    if n <= 0:
        raise ValueError(f"duration_s * sr must be positive, got {duration_s} * {sr}")
    rng = np.random.default_rng(seed)

    # Background: seeded crop of a long one, seeded loop phase of a short one.
    if bg.size >= n:
        start = int(rng.integers(0, bg.size - n + 1))
        bg_track = bg[start : start + n].copy()
    else:
        phase = int(rng.integers(0, bg.size))
        bg_track = bg[(phase + np.arange(n)) % bg.size]

    # Foreground: seeded crop if too long, then placement.
    if fg.size > n:
        start = int(rng.integers(0, fg.size - n + 1))
        fg = fg[start : start + n]
    active = active_mask(fg, sr)
    if not active.any():
        raise ValueError("foreground is silent")
    room = n - fg.size
    offset = int(rng.integers(0, room + 1)) if position == "random" else room // 2

    p_fg = float(np.mean(fg[active] ** 2))
    p_bg = float(np.mean(bg_track[offset : offset + fg.size][active] ** 2))
    if p_bg <= 0.0:
        raise ValueError("background is silent where the foreground sounds")
    gain = np.sqrt(p_bg / p_fg * 10.0 ** (snr_db / 10.0))
    fg_track = np.zeros(n, dtype=np.float64)
    fg_track[offset : offset + fg.size] = gain * fg

    mix = fg_track + bg_track
    peak = float(np.max(np.abs(mix)))
    if peak > 1.0:
        scale = PEAK_TARGET / peak
        mix, fg_track, bg_track = mix * scale, fg_track * scale, bg_track * scale
    mix = mix.astype(np.float32)
    if return_parts:
        return mix, fg_track.astype(np.float32), bg_track.astype(np.float32)
    return mix


def iter_soundscapes(
    fg_paths: Sequence[str | os.PathLike],
    bg_paths: Sequence[str | os.PathLike],
    snr_db: float | tuple[float, float],
    seed: int = 0,
    sr: int = 48000,
    duration_s: float = 10.0,
    failures: list[tuple[str, str]] | None = None,
) -> Iterator[Soundscape]:
    """Yield one :class:`Soundscape` per usable foreground (see :func:`make_soundscapes`).

    A foreground or background that cannot be decoded (``clap_helpers.data.audio.AudioError``) or is
    silent is skipped with a warning naming it, and ``(path, reason)`` is appended to ``failures``
    if given. Soundscape ``i`` uses its own generator seeded by ``(seed, i)``, so a skipped file
    does not change the others.
    """
    if not len(bg_paths):
        raise ValueError("no background files")
    lo, hi = _snr_range(snr_db)
    failures = [] if failures is None else failures
    candidates = list(range(len(bg_paths)))  # indices of backgrounds not known to be bad
    cache: dict[int, np.ndarray] = {}
    used_names: set[str] = set()

    def fail(path, reason: str) -> None:
        warnings.warn(f"soundscape: skipping {path}: {reason}", ClapWarning, stacklevel=2)
        failures.append((str(path), reason))

    for i, fg_path in enumerate(fg_paths):
        rng = np.random.default_rng([seed, i])
        snr = float(rng.uniform(lo, hi)) if hi > lo else lo
        mix_seed = int(rng.integers(0, 2**32))
        try:
            fg = load_audio(fg_path, sr=sr)
        except AudioError as exc:
            fail(fg_path, getattr(exc, "reason", str(exc)))
            continue
        bg = None
        while bg is None:
            if not candidates:
                raise RuntimeError("every background file failed to decode; see warnings")
            j = candidates[int(rng.integers(0, len(candidates)))]
            bg = cache.get(j)
            if bg is None:
                try:
                    bg = load_audio(bg_paths[j], sr=sr)
                except AudioError as exc:
                    fail(bg_paths[j], getattr(exc, "reason", str(exc)))
                    candidates.remove(j)
                    continue
                if not np.any(bg):
                    fail(bg_paths[j], "silent background")
                    candidates.remove(j)
                    bg = None
                    continue
                if len(cache) >= 16:  # keep a few decoded backgrounds, not a whole folder
                    cache.pop(next(iter(cache)))
                cache[j] = bg
        try:
            mix = mix_at_snr(fg, bg, snr, seed=mix_seed, duration_s=duration_s, sr=sr)
        except ValueError as exc:
            fail(fg_path, f"{exc} (background {bg_paths[j]})")
            continue
        name = f"{Path(fg_path).stem}__{Path(bg_paths[j]).stem}"
        if name in used_names:
            name = f"{name}__{i}"
        used_names.add(name)
        yield Soundscape(name, mix, snr, str(fg_path), str(bg_paths[j]))


def make_soundscapes(
    fg_paths: Sequence[str | os.PathLike],
    bg_paths: Sequence[str | os.PathLike],
    snr_db: float | tuple[float, float],
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    sr: int = 48000,
    duration_s: float = 10.0,
    subtype: str = "PCM_16",
    failures: list[tuple[str, str]] | None = None,
) -> pd.DataFrame | Iterator[Soundscape]:
    """Mix every foreground into a seeded choice of background at a constant or random SNR.

    Args:
        fg_paths: foreground clips (each used once, in order).
        bg_paths: background recordings (e.g. ``list_audio_files(folder)``); one is drawn per
            foreground, uniformly and seeded.
        snr_db: constant SNR in dB, or ``(lo, hi)``: uniform in [lo, hi] per soundscape (seeded).
        out_dir: ``None`` -> return an iterator of :class:`Soundscape` ``(name, audio, snr_db,
            foreground, background)`` without writing; else write ``out_dir/{name}.wav``.
        seed: everything (background, SNR, placement) is a function of ``seed`` and the inputs.
        sr, duration_s: output rate (Hz) and length (s); decoding resamples to ``sr``.
        subtype: soundfile WAV subtype, ``"PCM_16"`` or ``"FLOAT"``.
        failures: optional list receiving ``(path, reason)`` for each skipped file.

    Returns:
        With ``out_dir``: DataFrame with columns ``path``, ``foreground``, ``background``,
        ``snr_db`` (one row per written file); the skipped files are also in
        ``df.attrs["failures"]`` and their count in ``df.attrs["n_failed"]``.

    Bad files (decoding errors, silent clips) are skipped with a warning naming them; never fatal
    unless every background is bad.

    Used by: notebook 08_adaptation.
    """
    if out_dir is None:
        return iter_soundscapes(fg_paths, bg_paths, snr_db, seed, sr, duration_s, failures)
    import soundfile as sf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures = [] if failures is None else failures
    rows = []
    for sc in iter_soundscapes(fg_paths, bg_paths, snr_db, seed, sr, duration_s, failures):
        path = out / f"{sc.name}.wav"
        sf.write(path, sc.audio, sr, subtype=subtype)
        rows.append((str(path), sc.foreground, sc.background, sc.snr_db))
    df = pd.DataFrame(rows, columns=["path", "foreground", "background", "snr_db"])
    df.attrs["failures"] = list(failures)
    df.attrs["n_failed"] = len(failures)
    return df


def _snr_range(snr_db) -> tuple[float, float]:
    if np.ndim(snr_db) == 0:
        value = float(snr_db)
        return value, value
    lo, hi = (float(v) for v in snr_db)
    if lo > hi:
        raise ValueError(f"snr_db range must be (lo, hi) with lo <= hi, got {snr_db}")
    return lo, hi


def _mono(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (mono), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN/inf samples")
    return arr


SOUNDSCAPE_VERSION = 1  # part of the soundscape folder key: bump when the mixing changes


_MANIFEST = "soundscapes.csv"


def foreground_subset(
    clips: pd.DataFrame,
    n: int | None = None,
    exclude_classes: Sequence[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """A deterministic subset of ``n`` clips (all if None), spread evenly over class and fold.

    Clips of ``exclude_classes`` (the background classes) are left out first. The clips of each
    (class, fold) cell are shuffled; round r takes the r-th clip of every cell. Within a round,
    pick t (0, 1, ...) goes to class ``t mod C`` and fold ``(t + t // lcm(C, F)) mod F`` (classes
    and folds in seeded orders), which visits every cell once while classes and folds take
    turns. So any prefix of this order has class counts, and fold counts, within one of each
    other (up to cells that run out of clips): e.g. 4 clips of 4 classes come from 4 different
    folds. The same ``seed`` gives the same clips, a smaller ``n`` a subset of a larger one.
    Rows keep the index and order of ``clips`` (to pick their embeddings).

    Used by: notebook 08_adaptation.
    """
    pool = clips[~clips["label"].isin(list(exclude_classes))]
    if pool.empty:
        raise ValueError("no foreground clip left after excluding the background classes")
    if n is None or n >= len(pool):
        return pool.copy()
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    classes = sorted(pd.unique(pool["label"]).tolist())
    fold_values = sorted(pd.unique(pool["fold"]).tolist())
    class_order = [classes[i] for i in rng.permutation(len(classes))]
    fold_order = [fold_values[i] for i in rng.permutation(len(fold_values))]
    n_c, n_f = len(class_order), len(fold_order)
    period = np.lcm(n_c, n_f)
    turn = {
        (class_order[t % n_c], fold_order[(t + t // period) % n_f]): t for t in range(n_c * n_f)
    }
    order = rng.permutation(len(pool))
    shuffled = pool.iloc[order]
    rank = shuffled.groupby(["label", "fold"], sort=False).cumcount().to_numpy()
    t = np.array([turn[cell] for cell in zip(shuffled["label"], shuffled["fold"], strict=True)])
    picked = order[np.lexsort((t, rank))[: int(n)]]  # by round, then turn within the round
    return pool.iloc[np.sort(picked)].copy()


def build_soundscapes(
    foregrounds: pd.DataFrame,
    backgrounds: pd.DataFrame,
    snrs: Sequence[float],
    out_dir: str | os.PathLike,
    seed: int = 0,
    duration_s: float = 10.0,
    include_clean: bool = True,
) -> pd.DataFrame:
    """Mix every foreground into a ``"mix"`` background at each SNR; reuse earlier WAVs.

    Args:
        foregrounds: rows of the dataset table (:func:`foreground_subset`): ``path``, ``label``,
            ``target``, ``fold``.
        backgrounds: :func:`background_table`; only rows with role ``"mix"`` are used.
        snrs: SNRs in dB (constant per set).
        out_dir: root folder; the WAVs go to ``out_dir/<key>/snr_<snr>dB/`` where ``key`` hashes
            the inputs (paths, seed, duration, mixing version). A set whose manifest exists is
            read back instead of re-mixed, so files (and their cache keys) stay the same.
        seed: mixing seed, the same for every SNR (paired design, see module docstring).
        duration_s: soundscape length in seconds (48 kHz, 16-bit WAV: about 1 MB per 10 s).
        include_clean: add one row per foreground with its original clip (``snr_db = inf``).

    Returns:
        DataFrame with one row per test item: ``path``, ``foreground``, ``label``, ``target``,
        ``fold``, ``background`` (name), ``background_path``, ``snr_db`` (inf for clean) and
        ``condition`` (:func:`condition_label`). Foregrounds the mixer skipped (undecodable or
        silent) are missing from every condition. ``attrs["failures"]`` lists ``(snr, path,
        reason)`` for each file skipped while mixing (foreground or background),
        ``attrs["n_failed"]`` counts them and ``attrs["folder"]`` is the key folder.

    Used by: notebook 08_adaptation.
    """
    from ..data.soundscapes import make_soundscapes

    mix_bg = backgrounds[backgrounds["role"] == "mix"]
    if mix_bg.empty:
        raise ValueError("no background with role 'mix'")
    snrs = list(dict.fromkeys(float(v) for v in np.atleast_1d(snrs)))
    if not snrs or not all(np.isfinite(snrs)):
        raise ValueError(f"snrs must be finite numbers in dB, got {snrs}")
    fg_paths = [str(p) for p in foregrounds["path"]]
    bg_paths = [str(p) for p in mix_bg["path"]]
    key = _hash(
        {
            "version": SOUNDSCAPE_VERSION,
            "fg": fg_paths,
            "bg": bg_paths,
            "seed": int(seed),
            "duration_s": float(duration_s),
        }
    )
    folder = Path(out_dir).expanduser() / key
    bg_name = dict(zip(bg_paths, mix_bg["background"].astype(str), strict=True))
    fg_info = foregrounds.assign(foreground=fg_paths).set_index("foreground")[
        ["label", "target", "fold"]
    ]

    parts, failures = [], []
    for snr in snrs:
        sub = folder / f"snr_{snr:g}dB"
        manifest = sub / _MANIFEST
        df = _read_manifest(manifest)
        if df is None:
            fails: list[tuple[str, str]] = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                df = make_soundscapes(
                    fg_paths,
                    bg_paths,
                    snr,
                    out_dir=sub,
                    seed=seed,
                    duration_s=duration_s,
                    failures=fails,
                )
            for w in caught:  # re-emit anything other than the per-file skips we summarise
                if not str(w.message).startswith("soundscape: skipping"):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            df = df.assign(failure="")
            if fails:
                extra = pd.DataFrame(
                    {
                        "path": "",
                        "foreground": [f[0] for f in fails],
                        "background": "",
                        "snr_db": snr,
                        "failure": [f[1] for f in fails],
                    }
                )
                df = pd.concat([df, extra], ignore_index=True)
            tmp = manifest.with_suffix(".tmp")
            df.to_csv(tmp, index=False)
            os.replace(tmp, manifest)
        failed = df["failure"].fillna("").astype(str) != ""
        failures += [
            (snr, f, r)
            for f, r in zip(df.loc[failed, "foreground"], df.loc[failed, "failure"], strict=True)
        ]
        ok = df[~failed]
        parts.append(
            pd.DataFrame(
                {
                    "path": ok["path"].astype(str).to_numpy(),
                    "foreground": ok["foreground"].astype(str).to_numpy(),
                    "background_path": ok["background"].astype(str).to_numpy(),
                    "snr_db": snr,
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["background"] = out["background_path"].map(bg_name)
    if include_clean:
        first = out.drop_duplicates("foreground")[["foreground", "background_path", "background"]]
        clean = first.assign(path=first["foreground"], snr_db=np.inf)
        out = pd.concat([clean, out], ignore_index=True)
    out = out.join(fg_info, on="foreground")
    out["condition"] = [condition_label(s) for s in out["snr_db"]]
    out = out[
        [
            "path",
            "foreground",
            "label",
            "target",
            "fold",
            "background",
            "background_path",
            "snr_db",
            "condition",
        ]
    ].reset_index(drop=True)
    out["target"] = out["target"].astype(int)
    out.attrs["failures"] = failures
    out.attrs["n_failed"] = len(failures)
    out.attrs["folder"] = str(folder)
    if failures:
        warnings.warn(
            f"{len(failures)} files were skipped while mixing (see attrs['failures'])",
            ClapWarning,
            stacklevel=2,
        )
    return out


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> pd.DataFrame | None:
    """A finished set's manifest, or None if missing or any listed WAV is gone."""
    if not path.is_file():
        return None
    df = pd.read_csv(path, keep_default_na=False)
    if "failure" not in df.columns:
        return None
    made = df[df["failure"].astype(str) == ""]
    if not all(Path(p).is_file() for p in made["path"]):
        return None
    df["snr_db"] = df["snr_db"].astype(float)
    return df


def condition_label(snr_db: float) -> str:
    """``"clean"`` for inf (no background), else ``"{snr:g} dB"``."""
    return "clean" if np.isinf(snr_db) and snr_db > 0 else f"{float(snr_db):g} dB"
