"""Download the datasets the notebooks use (notebook 01_download): verified, resumable, idempotent.

Usage (``bash dataset.sh`` takes the same arguments)::

    python -m clap_helpers.data.download esc50 --dest downloads
    python -m clap_helpers.data.download urbansound8k fma_small
    python -m clap_helpers.data.download audioset --classes "Dog,Cat,Baby cry, infant cry" --per-class 20
    python -m clap_helpers.data.download all

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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..registry import RECORDS
from .archives import fetch_archive
from .audioset import ClipFetcher, fetch_audioset
from .http import DownloadError

__all__ = ["fetch", "main"]


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
    """Download, verify and unpack dataset ``name`` (a key of the registry, :data:`clap_helpers.data.registry.RECORDS`) under ``dest``.

    Used by notebook 01_download and by ``main``. Skips what is already present and verified;
    returns the final folder (dest/ESC-50-master, dest/UrbanSound8K, dest/fma_small,
    dest/audioset). ``url``/``checksum`` ("md5:HEX", "sha1:HEX") point a single-archive dataset
    at a mirror (for audioset ``url`` is the CSV base URL); the CLAP_MIRROR_* / CLAP_CHECKSUM_*
    variables do the same when they are not given. The remaining keywords apply to audioset
    only (see ``fetch_audioset``). Raises DownloadError.
    """
    if name not in RECORDS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(RECORDS)}")
    spec = RECORDS[name]
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
        fetch_archive(label, archive, dest, url, checksum, keep_archive, progress)
    return dest / spec.folder


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry (``python -m clap_helpers.data.download``, ``bash dataset.sh``): exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): report it as a status
        return int(exc.code or 0)
    names = list(RECORDS) if "all" in args.datasets else list(dict.fromkeys(args.datasets))
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clap_helpers.data.download",
        description="Download the datasets used by the clap_helpers notebooks.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "datasets",
        nargs="+",
        choices=[*RECORDS, "all"],
        metavar="DATASET",
        help=f"one or more of: {', '.join(RECORDS)}, all",
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
