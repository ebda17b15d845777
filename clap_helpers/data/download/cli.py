"""Download the datasets the notebooks use (notebook 01_download): verified, resumable, idempotent.

Usage (``bash dataset.sh`` takes the same arguments)::

    python -m clap_helpers.download esc50 --dest downloads
    python -m clap_helpers.download urbansound8k fma_small
    python -m clap_helpers.download audioset --classes "Dog,Cat,Baby cry, infant cry" --per-class 20
    python -m clap_helpers.download all

Final layout under DEST (what the dataset loaders read)::

    ESC-50-master/{audio/*.wav, meta/esc50.csv}
    UrbanSound8K/{audio/fold1..fold10/*.wav, metadata/UrbanSound8K.csv}
    fma_small/NNN/NNNNNN.mp3   and   fma_metadata/{tracks.csv, genres.csv, ...}
    audioset/{csv/*.csv, audio/YTID_STARTMS.wav, manifest.csv, unavailable.csv}

Archives are downloaded into DEST/NAME.part with HTTP Range resume, checked against their
md5/sha1, then unpacked into a temporary folder inside DEST that is renamed to its final name only
when complete. Just before that rename the marker file .clap_helpers_ok (the verified checksum, then
the URL) is written into the folder: a final folder holding its key file and that marker is
"present and verified" and is skipped. Members with absolute paths, ".." components, links leading
outside the archive, or special files are refused, and so is damaged data (a bad CRC, a cut
stream); a refused archive is deleted, so the next run downloads it again. The archive is deleted after extraction unless
--keep-archive is given.

Mirrors (an option wins over its environment variable; a mirror given without a checksum is checked
against the official checksum; a checksum is written md5:HEX, sha1:HEX or sha256:HEX):

    --url URL --checksum ALGO:HEX    for one single-archive dataset (esc50, urbansound8k);
                                     for audioset, --url is the base URL of the segment CSVs
    CLAP_MIRROR_ESC50         CLAP_CHECKSUM_ESC50
    CLAP_MIRROR_URBANSOUND8K  CLAP_CHECKSUM_URBANSOUND8K
    CLAP_MIRROR_FMA_SMALL     CLAP_CHECKSUM_FMA_SMALL       (fma_small.zip)
    CLAP_MIRROR_FMA_METADATA  CLAP_CHECKSUM_FMA_METADATA    (fma_metadata.zip)
    CLAP_MIRROR_AUDIOSET      base URL of the AudioSet CSVs

AudioSet: the segment CSVs and class_labels_indices.csv are saved in DEST/audioset/csv/. For each
class of the list (default: 22 everyday classes; --classes takes AudioSet display names separated by
commas or by ';'), and for each split (balanced_train and eval; --unbalanced adds
unbalanced_train), segments carrying the class are taken in file order until --per-class clips
(default 20) are on disk. Each is fetched with yt-dlp and ffmpeg (both must be on PATH) as a 10 s,
48 kHz mono WAV, DEST/audioset/audio/{YTID}_{start_ms}.wav. Videos that are gone are skipped,
counted and listed in unavailable.csv (not retried unless --retry-unavailable). manifest.csv has
the columns path,YTID,start_seconds,end_seconds,labels,split: path is relative to DEST/audioset,
labels joins with ';' the clip's positive labels that are in the class list. A segment row whose
YTID is not an 11-character YouTube id (A-Z, a-z, 0-9, _, -) is skipped, with one warning that
counts and names them.

Exit status: 0 on success; 1 on any failure, with one line on stderr naming the dataset, the URL and
what to do; 2 on a usage error; 130 when interrupted (run again to resume).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import gzip
import hashlib
import http.client
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

try:
    from tqdm.auto import tqdm
except ImportError:  # a bare python3 (dataset.sh before `make venv`): downloads without bars
    tqdm = None

MARKER = ".clap_helpers_ok"
"""Marker file written into a final folder just before its atomic rename: checksum, then URL."""

CHUNK = 1 << 20  # bytes per read while downloading and hashing
TIMEOUT_S = 60  # socket timeout of each HTTP request
USER_AGENT = "clap_helpers-download/0.1"
_TMP_PREFIX = ".clap_tmp_"  # temporary extraction folders inside dest: .clap_tmp_<folder>_XXXX


class DownloadError(Exception):
    """A download, verification or extraction failed; the message says what to do."""


class ClipUnavailable(Exception):
    """Raised by an AudioSet clip fetcher when the video is gone (private, removed, blocked)."""


ClipFetcher = Callable[[str, float, float, Path], None]
"""fetch_clip(ytid, start_seconds, end_seconds, out_path): write that segment of the YouTube video
as 48 kHz mono audio at out_path (a .wav path); raise ClipUnavailable when the video is gone."""


@dataclass(frozen=True)
class Archive:
    """One downloadable archive and the top-level folder it unpacks to (its final name in dest)."""

    env_key: str  # mirror variables: CLAP_MIRROR_<env_key>, CLAP_CHECKSUM_<env_key>
    url: str
    checksum: str  # "md5:<hex>" or "sha1:<hex>"
    filename: str  # name of the archive in dest while it is downloaded / kept
    folder: str
    key_file: str  # path inside folder that must exist for the folder to count as present


@dataclass(frozen=True)
class Dataset:
    """A dataset: ``fetch`` returns dest/folder. AudioSet has no archive (per-clip download)."""

    name: str
    folder: str
    archives: tuple[Archive, ...]
    description: str


DATASETS: dict[str, Dataset] = {
    "esc50": Dataset(
        "esc50",
        "ESC-50-master",
        (
            Archive(
                "ESC50",
                "https://github.com/karoldvl/ESC-50/archive/master.zip",
                "md5:7771e4b9d86d0945acce719c7a59305a",
                "ESC-50-master.zip",
                "ESC-50-master",
                "meta/esc50.csv",
            ),
        ),
        "ESC-50: 2000 clips of 5 s, 50 classes (about 600 MB)",
    ),
    "urbansound8k": Dataset(
        "urbansound8k",
        "UrbanSound8K",
        (
            Archive(
                "URBANSOUND8K",
                "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz",
                "md5:9aa69802bbf37fb986f71ec1483a196e",
                "UrbanSound8K.tar.gz",
                "UrbanSound8K",
                "metadata/UrbanSound8K.csv",
            ),
        ),
        "UrbanSound8K: 8732 clips of at most 4 s, 10 classes (about 6 GB)",
    ),
    "fma_small": Dataset(
        "fma_small",
        "fma_small",
        (
            Archive(
                "FMA_SMALL",
                "https://os.unil.cloud.switch.ch/fma/fma_small.zip",
                "sha1:ade154f733639d52e35e32f5593efe5be76c6d70",
                "fma_small.zip",
                "fma_small",
                "000/000002.mp3",
            ),
            Archive(
                "FMA_METADATA",
                "https://os.unil.cloud.switch.ch/fma/fma_metadata.zip",
                "sha1:f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
                "fma_metadata.zip",
                "fma_metadata",
                "tracks.csv",
            ),
        ),
        "FMA-small: 8000 tracks of 30 s, 8 genres (7.2 GB) + fma_metadata (342 MB)",
    ),
    "audioset": Dataset(
        "audioset",
        "audioset",
        (),
        "AudioSet subset: N clips of 10 s per class from YouTube (needs yt-dlp and ffmpeg)",
    ),
}

AUDIOSET_CSV_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/"
AUDIOSET_CLASSES: tuple[str, ...] = (
    "Aircraft",
    "Baby cry, infant cry",
    "Bird",
    "Car",
    "Cat",
    "Child speech, kid speaking",
    "Dog",
    "Drum",
    "Electric guitar",
    "Explosion",
    "Fart",
    "Female speech, woman speaking",
    "Glass",
    "Guitar",
    "Helicopter",
    "Male speech, man speaking",
    "Pigeon, dove",
    "Ringtone",
    "Siren",
    "Telephone",
    "Walk, footsteps",
    "Water",
)
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


# ----------------------------------------------------------------------------- public API


def fetch(
    name: str,
    dest: str | os.PathLike[str] = "downloads",
    url: str | None = None,
    checksum: str | None = None,
    *,
    keep_archive: bool = False,
    progress: bool = True,
    classes: Sequence[str] | str | None = None,
    per_class: int = 20,
    unbalanced: bool = False,
    retry_unavailable: bool = False,
    fetch_clip: ClipFetcher | None = None,
) -> Path:
    """Download, verify and unpack dataset ``name`` (a key of DATASETS) under ``dest``.

    Used by notebook 01_download and by ``main``. Skips what is already present and verified;
    returns the final folder (dest/ESC-50-master, dest/UrbanSound8K, dest/fma_small,
    dest/audioset). ``url``/``checksum`` ("md5:HEX", "sha1:HEX") point a single-archive dataset
    at a mirror (for audioset ``url`` is the CSV base URL); the CLAP_MIRROR_* / CLAP_CHECKSUM_*
    variables do the same when they are not given. The remaining keywords apply to audioset
    only (see ``fetch_audioset``). Raises DownloadError.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    dest = Path(dest)
    if name == "audioset":
        if checksum is not None:
            raise ValueError("audioset has no archive checksum; --checksum is for archives")
        return fetch_audioset(
            dest,
            base_url=url,
            classes=classes,
            per_class=per_class,
            unbalanced=unbalanced,
            retry_unavailable=retry_unavailable,
            fetch_clip=fetch_clip,
            progress=progress,
        ).folder
    if (url or checksum) and len(spec.archives) != 1:
        keys = ", ".join(
            f"CLAP_MIRROR_{a.env_key}/CLAP_CHECKSUM_{a.env_key}" for a in spec.archives
        )
        raise ValueError(f"{name} has {len(spec.archives)} archives: set {keys} instead of url")
    for archive in spec.archives:
        label = name if len(spec.archives) == 1 else f"{name} ({archive.filename})"
        _fetch_archive(label, archive, dest, url, checksum, keep_archive, progress)
    return dest / spec.folder


def is_present(folder: str | os.PathLike[str], key_file: str) -> bool:
    """True if ``folder`` holds ``key_file`` and a MARKER whose first line is a valid checksum."""
    folder = Path(folder)
    marker = folder / MARKER
    if not (folder / key_file).is_file() or not marker.is_file():
        return False
    lines = marker.read_text(encoding="utf-8").splitlines()
    try:
        _parse_checksum(lines[0] if lines else "")
    except ValueError:
        return False
    return True


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
    root = Path(dest) / DATASETS["audioset"].folder
    csv_dir, audio_dir = root / "csv", root / "audio"
    base = base_url or os.environ.get("CLAP_MIRROR_AUDIOSET") or AUDIOSET_CSV_URL
    base = base if base.endswith("/") else base + "/"
    splits = ["balanced_train", "eval"] + (["unbalanced_train"] if unbalanced else [])
    csv_dir.mkdir(parents=True, exist_ok=True)
    for filename in ["class_labels_indices.csv"] + [f"{s}_segments.csv" for s in splits]:
        target = csv_dir / filename
        if not target.is_file():
            part = target.with_name(target.name + ".part")
            _download_to_part(f"audioset ({filename})", base + filename, part, progress)
            os.replace(part, target)
    name_to_mid = read_class_labels(csv_dir / "class_labels_indices.csv")
    chosen = _resolve_classes(AUDIOSET_CLASSES if classes is None else classes, name_to_mid)
    audio_dir.mkdir(exist_ok=True)
    audio_real = audio_dir.resolve()

    unavailable_path, manifest_path = root / "unavailable.csv", root / "manifest.csv"
    unavailable = {(r["YTID"], r["start_seconds"]): r for r in _read_csv(unavailable_path)}
    rows: list[dict[str, str]] = []
    fetched = skipped = failed = 0
    first_error = ""
    invalid: list[str] = []  # YTIDs of segment rows skipped because they are not video ids
    try:
        for split in splits:
            need = dict.fromkeys(chosen, per_class)
            with _bar(progress, desc=f"audioset {split}", unit="clip") as bar:
                for seg in read_segments(csv_dir / f"{split}_segments.csv"):
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
                            "path": f"audio/{path.name}",
                            "YTID": seg.ytid,
                            "start_seconds": seg.start_seconds,
                            "end_seconds": seg.end_seconds,
                            "labels": ";".join(labels),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry (``python -m clap_helpers.download``, ``bash dataset.sh``): exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): report it as a status
        return int(exc.code or 0)
    names = list(DATASETS) if "all" in args.datasets else list(dict.fromkeys(args.datasets))
    if (args.url or args.checksum) and len(names) != 1:
        print("error: --url/--checksum need exactly one dataset", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        try:
            folder = fetch(
                name,
                args.dest,
                url=args.url,
                checksum=args.checksum,
                keep_archive=args.keep_archive,
                classes=args.classes,
                per_class=args.per_class,
                unbalanced=args.unbalanced,
                retry_unavailable=args.retry_unavailable,
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except DownloadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print(f"\ninterrupted while fetching {name}; run again to resume", file=sys.stderr)
            return 130
        else:
            print(f"{name}: ready in {folder}")
    return status


# ----------------------------------------------------------------------------- archives


def _fetch_archive(
    label: str,
    archive: Archive,
    dest: Path,
    url: str | None,
    checksum: str | None,
    keep_archive: bool,
    progress: bool,
) -> None:
    final = dest / archive.folder
    if is_present(final, archive.key_file):
        print(f"{label}: {final} already present and verified, skipping")
        return
    if final.exists():
        raise DownloadError(
            f"{label}: {final} exists but is not a verified download (no {archive.key_file} or "
            f"no {MARKER}); delete it and run again"
        )
    url = url or os.environ.get(f"CLAP_MIRROR_{archive.env_key}") or archive.url
    checksum = checksum or os.environ.get(f"CLAP_CHECKSUM_{archive.env_key}") or archive.checksum
    try:
        algo, expected = _parse_checksum(checksum)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / archive.filename
    if path.is_file() and _digest(path, algo) != expected:
        print(f"{label}: {path} does not match its checksum, downloading it again")
        path.unlink()
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        _download_to_part(label, url, part, progress)
        actual = _digest(part, algo)
        if actual != expected:
            part.unlink()
            raise DownloadError(
                f"checksum mismatch for {label}: expected {algo} {expected} got {actual} from "
                f"{url}; the archive was deleted, run again or check your mirror "
                f"(--url/--checksum or CLAP_MIRROR_{archive.env_key}/"
                f"CLAP_CHECKSUM_{archive.env_key})"
            )
        os.replace(part, path)
    try:
        _extract(label, path, dest, archive, f"{algo}:{expected}\n{url}\n")
    except _BadArchive as exc:
        path.unlink()
        raise DownloadError(
            f"{label}: refused the archive from {url}: {exc}; the archive was deleted, "
            "check the URL or your mirror"
        ) from None
    if not keep_archive:
        path.unlink()
    print(f"{label}: unpacked into {final}")


class _BadArchive(Exception):
    """The archive is unsafe (a member would land or point outside) or lacks the expected files."""


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    size: int = 0
    link: str = ""  # target of a link, as stored


def _extract(label: str, path: Path, dest: Path, archive: Archive, marker: str) -> None:
    """Unpack ``path`` into a temporary folder in ``dest``, then rename archive.folder into place.

    The temporary folder is removed whatever happens (errors, KeyboardInterrupt).
    """
    for stale in dest.glob(f"{_TMP_PREFIX}{archive.folder}_*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{archive.folder}_", dir=dest))
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = _check_members(_zip_members(zf), archive.folder)
                _ensure_space(dest, sum(m.size for m in members), f"unpacking {label}")
                for info in zf.infolist():
                    zf.extract(info, tmp)
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                tar_members = tf.getmembers()
                members = _check_members([_tar_member(m) for m in tar_members], archive.folder)
                _ensure_space(dest, sum(m.size for m in members), f"unpacking {label}")
                # The "data" filter (Python >= 3.10.12) re-checks each member on the real disk.
                data_filter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(tmp, members=tar_members, **data_filter)
        else:
            raise _BadArchive("it is neither a zip nor a tar archive")
        unpacked = tmp / archive.folder
        if not (unpacked / archive.key_file).is_file():
            raise _BadArchive(f"it has no {archive.folder}/{archive.key_file}")
        (unpacked / MARKER).write_text(marker, encoding="utf-8")
        os.rename(unpacked, dest / archive.folder)
    except (zipfile.BadZipFile, tarfile.ReadError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        # damaged data (a bad CRC, a cut stream) that passed the checksum: the mirror's fault
        raise _BadArchive(f"it is corrupt ({exc})") from None
    except (OSError, tarfile.TarError) as exc:
        raise DownloadError(
            f"{label}: unpacking {path} failed ({exc}); the verified archive is kept, "
            "fix the cause (disk space, permissions) and run again"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _zip_members(zf: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in zf.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            link = zf.read(info).decode("utf-8", "replace")
            members.append(_Member(info.filename, "symlink", 0, link))
        else:
            members.append(
                _Member(info.filename, "dir" if info.is_dir() else "file", info.file_size)
            )
    return members


def _tar_member(m: tarfile.TarInfo) -> _Member:
    if m.isdir():
        return _Member(m.name, "dir")
    if m.issym():
        return _Member(m.name, "symlink", 0, m.linkname)
    if m.islnk():
        return _Member(m.name, "hardlink", 0, m.linkname)
    return _Member(m.name, "file" if m.isfile() else "special", m.size)


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _is_absolute(name: str) -> bool:
    return (
        name.startswith(("/", "\\"))
        or PurePosixPath(name).is_absolute()
        or bool(PureWindowsPath(name).drive)
    )


def _check_members(members: list[_Member], folder: str) -> list[_Member]:
    """Raise _BadArchive unless every member stays inside the extraction folder.

    Links are allowed when their target, resolved from where they lie, stays inside and never
    passes through another link; no member may lie under a link. Returns ``members``.
    """
    links = {"/".join(_parts(m.name)) for m in members if m.kind in ("symlink", "hardlink")}
    files = {"/".join(_parts(m.name)) for m in members if m.kind == "file"}
    for m in members:
        parts = _parts(m.name)
        if _is_absolute(m.name):
            raise _BadArchive(f"member {m.name!r} has an absolute path")
        if ".." in parts:
            raise _BadArchive(f"member {m.name!r} has a '..' component")
        if m.kind == "special":
            raise _BadArchive(f"member {m.name!r} is a device or special file")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise _BadArchive(f"member {m.name!r} lies under a link")
        if m.kind not in ("symlink", "hardlink"):
            continue
        if _is_absolute(m.link):
            raise _BadArchive(f"link {m.name!r} points to the absolute path {m.link!r}")
        where = parts[:-1] if m.kind == "symlink" else []
        for part in _parts(m.link):
            if part != "..":
                where.append(part)
                if "/".join(where) in links:
                    raise _BadArchive(f"link {m.name!r} points through another link")
            elif where:
                where.pop()
            else:
                raise _BadArchive(f"link {m.name!r} points outside the archive ({m.link!r})")
        if m.kind == "hardlink" and "/".join(where) not in files:
            raise _BadArchive(f"hard link {m.name!r} points to a missing file {m.link!r}")
    if not any(_parts(m.name)[:1] == [folder] for m in members):
        raise _BadArchive(f"it has no top-level folder {folder!r}")
    return members


# ----------------------------------------------------------------------------- HTTP


def _download_to_part(label: str, url: str, part: Path, progress: bool) -> None:
    """Complete ``part`` from ``url``, resuming with an HTTP Range request when it exists.

    On a network error the partial file is kept for the next run; a server that ignores Range
    makes the download start over.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S
        )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the partial file is complete
            return
        raise DownloadError(
            f"{label}: HTTP {exc.code} {exc.reason} from {url}; check the URL or your mirror"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(
            f"{label}: cannot reach {url} ({exc}); check the network or your mirror, then run again"
        ) from None
    with response:
        if response.status != 206:
            offset = 0  # a full response: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None:
            _ensure_space(part.parent, total - offset, f"downloading {label}")
        done, error = offset, "connection closed early"
        try:
            with (
                open(part, "ab" if offset else "wb") as fh,
                _bar(
                    progress, desc=part.name[: -len(".part")], total=total, initial=offset, unit="B"
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            error, total = repr(exc), total or -1
        if total is not None and done != total:  # http.client does not flag a short body itself
            raise DownloadError(
                f"{label}: download from {url} interrupted after {done} bytes ({error}); "
                "run again to resume"
            )


def _ensure_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"not enough disk space for {what}: {needed / 1e9:.2f} GB needed, "
            f"{free / 1e9:.2f} GB free in {folder}; free some space or choose another --dest"
        )


def _parse_checksum(text: str) -> tuple[str, str]:
    """ "md5:HEX" -> ("md5", "hex"); ValueError if the algorithm or the length is wrong."""
    algo, _, value = text.strip().partition(":")
    algo, value = algo.lower(), value.lower()
    sizes = {"md5": 32, "sha1": 40, "sha256": 64}
    if (
        algo not in sizes
        or len(value) != sizes[algo]
        or not all(c in "0123456789abcdef" for c in value)
    ):
        raise ValueError(
            f"bad checksum {text!r}: expected md5:<32 hex>, sha1:<40 hex> or sha256:<64 hex>"
        )
    return algo, value


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo, usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _NoBar:
    """Stand-in for tqdm when it is not installed."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _bar(enabled: bool, **kwargs: Any) -> Any:
    if tqdm is None:
        return _NoBar()
    if kwargs.get("unit") == "B":
        kwargs.update(unit_scale=True, unit_divisor=1024)
    return tqdm(disable=not enabled, **kwargs)


# ----------------------------------------------------------------------------- AudioSet


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


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clap_helpers.download",
        description="Download the datasets used by the clap_helpers notebooks.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "datasets",
        nargs="+",
        choices=[*DATASETS, "all"],
        metavar="DATASET",
        help=f"one or more of: {', '.join(DATASETS)}, all",
    )
    parser.add_argument("--dest", default="downloads", help="target folder (default: downloads)")
    parser.add_argument("--url", help="mirror URL of the archive (audioset: base URL of its CSVs)")
    parser.add_argument(
        "--checksum", help="checksum of that archive: md5:HEX, sha1:HEX, sha256:HEX"
    )
    parser.add_argument(
        "--keep-archive", action="store_true", help="keep the archive after extraction"
    )
    parser.add_argument(
        "--classes", help="audioset: display names, comma- or ';'-separated (default: 22 classes)"
    )
    parser.add_argument(
        "--per-class", type=int, default=20, help="audioset: clips per class and split (default 20)"
    )
    parser.add_argument(
        "--unbalanced", action="store_true", help="audioset: also use unbalanced_train_segments"
    )
    parser.add_argument(
        "--retry-unavailable",
        action="store_true",
        help="audioset: try again the videos listed in unavailable.csv",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
