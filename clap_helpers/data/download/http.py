"""HTTP downloads for the dataset downloader: resume, checksums, disk space, progress bars.

Owns getting bytes from a URL into a ``.part`` file (HTTP Range resume, short-body detection) and
checking them (md5/sha1/sha256). Standard library only (tqdm when installed), so ``dataset.sh`` runs
it with a bare ``python3``.

Used by: notebook 01_download (through :func:`clap_helpers.data.download.fetch`).
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

try:
    from tqdm.auto import tqdm
except ImportError:  # a bare python3 (dataset.sh before `make venv`): downloads without bars
    tqdm = None

__all__ = [
    "CHUNK",
    "TIMEOUT_S",
    "USER_AGENT",
    "DownloadError",
    "download_to_part",
    "ensure_space",
    "parse_checksum",
    "digest",
    "progress_bar",
]

CHUNK = 1 << 20  # bytes per read while downloading and hashing
TIMEOUT_S = 60  # socket timeout of each HTTP request
USER_AGENT = "clap_helpers-download/0.1"


class DownloadError(Exception):
    """A download, verification or extraction failed; the message says what to do."""


def download_to_part(label: str, url: str, part: Path, progress: bool) -> None:
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
            ensure_space(part.parent, total - offset, f"downloading {label}")
        done, error = offset, "connection closed early"
        try:
            with (
                open(part, "ab" if offset else "wb") as fh,
                progress_bar(
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


def ensure_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"not enough disk space for {what}: {needed / 1e9:.2f} GB needed, "
            f"{free / 1e9:.2f} GB free in {folder}; free some space or choose another --dest"
        )


def parse_checksum(text: str) -> tuple[str, str]:
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


def digest(path: Path, algo: str) -> str:
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


def progress_bar(enabled: bool, **kwargs: Any) -> Any:
    if tqdm is None:
        return _NoBar()
    if kwargs.get("unit") == "B":
        kwargs.update(unit_scale=True, unit_divisor=1024)
    return tqdm(disable=not enabled, **kwargs)
