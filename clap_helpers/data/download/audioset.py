"""The AudioSet subset: segment lists, class names, clip fetching with yt-dlp, the manifest.

Owns the per-clip download of AudioSet (there is no archive): which segments to take for a class
list, fetching each as 10 s of 48 kHz mono WAV, resuming, skipping and recording videos that are
gone, and writing ``manifest.csv`` / ``unavailable.csv`` atomically. The folder layout comes from
the registry record's :class:`~clap_helpers.data.registry.AudioSetLayout`.

Used by: notebook 01_download (through :func:`clap_helpers.data.download.fetch`).
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..registry import RECORDS
from .http import DownloadError, download_to_part, progress_bar

__all__ = [
    "AUDIOSET_CLASSES",
    "MANIFEST_COLUMNS",
    "UNAVAILABLE_COLUMNS",
    "YTID_PATTERN",
    "AudioSetSummary",
    "ClipFetcher",
    "ClipUnavailable",
    "Segment",
    "fetch_audioset",
    "read_class_labels",
    "read_segments",
]

_RECORD = RECORDS["audioset"]
LAYOUT = _RECORD.audioset
AUDIOSET_CLASSES: tuple[str, ...] = LAYOUT.default_classes
"""Default AudioSet class list (display names of class_labels_indices.csv)."""
AUDIOSET_SAMPLE_RATE = 48_000  # Hz, mono: what the CLAP feature extractor takes
MANIFEST_COLUMNS = ("path", "YTID", "start_seconds", "end_seconds", "labels", "split")
UNAVAILABLE_COLUMNS = ("YTID", "start_seconds", "reason")
YTID_PATTERN = re.compile(r"[A-Za-z0-9_-]{11}")
"""A YouTube video id: 11 characters of A-Z, a-z, 0-9, '_' and '-'. Segment rows with any other
YTID are skipped (it names the clip file, so it must not hold '/' or '..')."""
# Lower-case fragments of yt-dlp errors meaning the video is gone for good (not a network error).
_GONE = (
    "video unavailable",
    "private video",
    "video is private",
    "has been removed",
    "account associated with this video has been terminated",
    "not available",
    "members-only",
    "confirm your age",
    "copyright",
)


class ClipUnavailable(Exception):
    """Raised by an AudioSet clip fetcher when the video is gone (private, removed, blocked)."""


ClipFetcher = Callable[[str, float, float, Path], None]
"""fetch_clip(ytid, start_seconds, end_seconds, out_path): write that segment of the YouTube video
as 48 kHz mono audio at out_path (a .wav path); raise ClipUnavailable when the video is gone."""


@dataclass(frozen=True)
class Segment:
    """One row of an AudioSet segment CSV; times in seconds as written in the file."""

    ytid: str
    start_seconds: str
    end_seconds: str
    mids: tuple[str, ...]  # positive labels, e.g. ("/m/09x0r", "/m/05zppz")

    @property
    def clip_name(self) -> str:
        """File stem of the clip: {YTID}_{start in integer milliseconds}."""
        return f"{self.ytid}_{round(float(self.start_seconds) * 1000)}"


def read_segments(path: str | os.PathLike[str]) -> Iterator[Segment]:
    """Rows of an AudioSet segment CSV (``#`` comment lines skipped), in file order."""
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh, skipinitialspace=True):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 4 or not all(_is_number(t) for t in row[1:3]):
                raise DownloadError(f"malformed AudioSet segment row in {path}: {row!r}")
            mids = tuple(m.strip() for m in row[3].split(",") if m.strip())
            yield Segment(row[0], row[1], row[2], mids)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_class_labels(path: str | os.PathLike[str]) -> dict[str, str]:
    """class_labels_indices.csv as {display_name: mid}, in index order."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["display_name"]: row["mid"] for row in csv.DictReader(fh)}


@dataclass(frozen=True)
class AudioSetSummary:
    """Outcome of ``fetch_audioset``: clip counts of this run and where the manifest is."""

    folder: Path
    manifest: Path
    clips: int  # rows of the manifest
    fetched: int  # clips downloaded by this run (the others were already on disk)
    unavailable: int  # segments skipped because their video is gone (new + already recorded)
    failed: int  # segments whose fetch failed for another reason (retried on the next run)


def fetch_audioset(
    dest: str | os.PathLike[str] = "downloads",
    *,
    base_url: str | None = None,
    classes: Sequence[str] | str | None = None,
    per_class: int = 20,
    unbalanced: bool = False,
    retry_unavailable: bool = False,
    fetch_clip: ClipFetcher | None = None,
    progress: bool = True,
) -> AudioSetSummary:
    """Fetch an AudioSet subset into dest/audioset and write its manifest.csv (notebook 01_download).

    ``classes``: display names (a list, or one string separated by commas or ';'); default
    AUDIOSET_CLASSES. For each split, segments with a class still short of ``per_class`` clips
    are taken in file order; a clip counts for every listed class it carries. ``fetch_clip``
    replaces yt-dlp + ffmpeg (see ClipFetcher). Resumable: clips on disk and videos listed in
    unavailable.csv are not fetched again. Raises DownloadError (after the CSVs are written) when
    yt-dlp or ffmpeg is missing, and at the end when some clips failed.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    root = Path(dest) / _RECORD.folder
    csv_dir, audio_dir = root / LAYOUT.csv_folder, root / LAYOUT.audio_folder
    base = base_url or os.environ.get("CLAP_MIRROR_AUDIOSET") or LAYOUT.csv_url
    base = base if base.endswith("/") else base + "/"
    splits = [*LAYOUT.splits] + ([LAYOUT.extra_split] if unbalanced else [])
    csv_dir.mkdir(parents=True, exist_ok=True)
    for filename in [LAYOUT.class_labels] + [LAYOUT.segments_file(s) for s in splits]:
        target = csv_dir / filename
        if not target.is_file():
            part = target.with_name(target.name + ".part")
            download_to_part(f"audioset ({filename})", base + filename, part, progress)
            os.replace(part, target)
    name_to_mid = read_class_labels(csv_dir / LAYOUT.class_labels)
    chosen = _resolve_classes(AUDIOSET_CLASSES if classes is None else classes, name_to_mid)
    audio_dir.mkdir(exist_ok=True)
    audio_real = audio_dir.resolve()

    unavailable_path, manifest_path = root / LAYOUT.unavailable, root / LAYOUT.manifest
    unavailable = {(r["YTID"], r["start_seconds"]): r for r in _read_csv(unavailable_path)}
    rows: list[dict[str, str]] = []
    fetched = skipped = failed = 0
    first_error = ""
    invalid: list[str] = []  # YTIDs of segment rows skipped because they are not video ids
    try:
        for split in splits:
            need = dict.fromkeys(chosen, per_class)
            with progress_bar(progress, desc=f"audioset {split}", unit="clip") as bar:
                for seg in read_segments(csv_dir / LAYOUT.segments_file(split)):
                    if not any(need.values()):
                        break
                    labels = [c for c in chosen if name_to_mid[c] in seg.mids]
                    if not any(need[c] for c in labels):
                        continue
                    path = audio_dir / f"{seg.clip_name}.wav"
                    if not YTID_PATTERN.fullmatch(seg.ytid) or not _inside(path, audio_real):
                        invalid.append(seg.ytid)
                        continue
                    key = (seg.ytid, seg.start_seconds)
                    new_clip = not path.is_file()
                    if new_clip:
                        if key in unavailable and not retry_unavailable:
                            skipped += 1
                            continue
                        if fetch_clip is None:  # looked for only once a clip must be fetched
                            fetch_clip = _yt_dlp_fetcher(csv_dir)
                        error = _fetch_one(fetch_clip, seg, path)
                        if isinstance(error, ClipUnavailable):
                            reason = " ".join(str(error).split())[:200]
                            unavailable[key] = {
                                "YTID": seg.ytid,
                                "start_seconds": seg.start_seconds,
                                "reason": reason,
                            }
                            _write_csv_atomic(
                                unavailable_path, UNAVAILABLE_COLUMNS, unavailable.values()
                            )
                            skipped += 1
                            continue
                        if error is not None:
                            failed += 1
                            first_error = first_error or f"{seg.ytid}: {error}"
                            continue
                        unavailable.pop(key, None)
                        fetched += 1
                    for c in labels:
                        need[c] = max(need[c] - 1, 0)
                    rows.append(
                        {
                            "path": f"{LAYOUT.audio_folder}/{path.name}",
                            "YTID": seg.ytid,
                            "start_seconds": seg.start_seconds,
                            "end_seconds": seg.end_seconds,
                            "labels": LAYOUT.label_sep.join(labels),
                            "split": split,
                        }
                    )
                    if new_clip:  # an interrupt must not lose a fetched clip
                        _write_csv_atomic(manifest_path, MANIFEST_COLUMNS, rows)
                    bar.update(1)
            short = [f"{c} ({per_class - n} of {per_class})" for c, n in need.items() if n]
            if short:
                print(f"audioset {split}: too few clips available for {', '.join(short)}")
    finally:
        _write_csv_atomic(manifest_path, MANIFEST_COLUMNS, rows)
        _write_csv_atomic(unavailable_path, UNAVAILABLE_COLUMNS, unavailable.values())
        if invalid:
            shown = ", ".join(repr(y) for y in invalid[:5]) + (" ..." if len(invalid) > 5 else "")
            print(
                f"warning: audioset: skipped {len(invalid)} segment rows in {csv_dir} whose YTID "
                f"is not an 11-character YouTube id (A-Z, a-z, 0-9, _ or -): {shown}",
                file=sys.stderr,
            )
    print(
        f"audioset: {len(rows)} clips in {manifest_path} ({fetched} fetched now), "
        f"{skipped} unavailable videos skipped, {failed} failed"
    )
    if failed:
        raise DownloadError(
            f"audioset: {failed} clips failed to download (first: {first_error}); "
            "they are not marked unavailable: run again to retry"
        )
    return AudioSetSummary(root, manifest_path, len(rows), fetched, skipped, failed)


def _resolve_classes(classes: Sequence[str] | str, name_to_mid: dict[str, str]) -> list[str]:
    """Canonical display names of ``classes``; a string is split on ';' or on commas."""
    if isinstance(classes, str):
        classes = _split_class_list(classes, name_to_mid)
    by_lower = {n.lower(): n for n in name_to_mid}
    chosen, unknown = [], []
    for c in classes:
        name = by_lower.get(c.strip().lower())
        if name is None:
            unknown.append(c)
        elif name not in chosen:
            chosen.append(name)
    if unknown:
        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, name_to_mid, n=3)
            hints.append(
                f"{u!r} (did you mean {' or '.join(map(repr, close))}?)" if close else repr(u)
            )
        raise DownloadError(
            f"audioset: unknown class names {'; '.join(hints)}: use display names of "
            "class_labels_indices.csv"
        )
    if not chosen:
        raise DownloadError("audioset: the class list is empty")
    return chosen


def _split_class_list(text: str, known: dict[str, str]) -> list[str]:
    """Split "Dog,Baby cry, infant cry" into names, keeping commas that belong to a known name."""
    if ";" in text:
        return [s.strip() for s in text.split(";") if s.strip()]
    pieces = [s.strip() for s in text.split(",") if s.strip()]
    lower = {n.lower() for n in known}
    names, i = [], 0
    while i < len(pieces):
        j = next(
            (j for j in range(len(pieces), i, -1) if ", ".join(pieces[i:j]).lower() in lower),
            i + 1,
        )
        names.append(", ".join(pieces[i:j]))
        i = j
    return names


def _fetch_one(fetch_clip: ClipFetcher, seg: Segment, path: Path) -> Exception | None:
    """Run the fetcher into a temporary file renamed to ``path``; return its error, if any."""
    tmp = path.with_name(f"{path.stem}.part{path.suffix}")
    try:
        fetch_clip(seg.ytid, float(seg.start_seconds), float(seg.end_seconds), tmp)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError("the fetcher wrote no audio")
        os.replace(tmp, path)
    except Exception as exc:  # any fetcher failure is counted, the run goes on
        tmp.unlink(missing_ok=True)
        return exc
    return None


def _inside(path: Path, folder: Path) -> bool:
    """True if ``path``, resolved (links followed), lies inside the resolved ``folder``."""
    return Path(os.path.realpath(path)).is_relative_to(folder)


def _tool(name: str) -> str | None:
    """``name`` on PATH or next to the running python (a venv's bin folder)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _yt_dlp_fetcher(csv_dir: Path) -> ClipFetcher:
    """The default fetcher (yt-dlp cuts the section, ffmpeg makes 48 kHz mono WAV)."""
    yt_dlp, ffmpeg = _tool("yt-dlp"), _tool("ffmpeg")
    if yt_dlp is None or ffmpeg is None:
        missing = " and ".join(n for n, p in (("yt-dlp", yt_dlp), ("ffmpeg", ffmpeg)) if p is None)
        raise DownloadError(
            f"audioset: the segment CSVs are in {csv_dir}, but fetching the clips needs {missing} "
            "on PATH: install them (`pip install yt-dlp`, `apt-get install ffmpeg` or "
            "`brew install ffmpeg`) and run again"
        )

    def fetch_clip(ytid: str, start: float, end: float, out_path: Path) -> None:
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".yt_") as tmp:
            cmd = [
                yt_dlp,
                "--quiet",
                "--no-warnings",
                "--no-playlist",
                "--format",
                "bestaudio/best",
                "--download-sections",
                f"*{start}-{end}",
                "--output",
                str(Path(tmp) / "clip.%(ext)s"),
                f"https://www.youtube.com/watch?v={ytid}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                message = (proc.stderr.strip().splitlines() or ["yt-dlp failed"])[-1]
                if any(g in proc.stderr.lower() for g in _GONE):
                    raise ClipUnavailable(message)
                raise RuntimeError(message)
            source = next(Path(tmp).glob("clip.*"))
            cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(source)]
            cmd += ["-t", f"{end - start}", "-ac", "1", "-ar", str(AUDIOSET_SAMPLE_RATE)]
            subprocess.run([*cmd, str(out_path)], check=True, capture_output=True, timeout=600)

    return fetch_clip


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """Write ``rows`` to ``path`` through a temporary file, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
