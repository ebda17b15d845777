"""Safe, atomic extraction of verified dataset archives.

Owns one archive's life after its URL is known: download (through :mod:`.http`), checksum, unpack
into a temporary folder inside the destination, refuse unsafe or damaged members, write the marker
file and rename the folder into place. A folder holding its key file and the marker is "present
and verified"; a refused archive is deleted; the temporary folder never survives.

Used by: notebook 01_download (through :func:`clap_helpers.data.download.fetch`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..registry import Archive
from .http import DownloadError, digest, download_to_part, ensure_space, parse_checksum

__all__ = ["MARKER", "is_present", "fetch_archive", "check_members"]

MARKER = ".clap_helpers_ok"
"""Marker file written into a final folder just before its atomic rename: checksum, then URL."""

_TMP_PREFIX = ".clap_tmp_"  # temporary extraction folders inside dest: .clap_tmp_<folder>_XXXX


def is_present(folder: str | os.PathLike[str], key_file: str) -> bool:
    """True if ``folder`` holds ``key_file`` and a MARKER whose first line is a valid checksum."""
    folder = Path(folder)
    marker = folder / MARKER
    if not (folder / key_file).is_file() or not marker.is_file():
        return False
    lines = marker.read_text(encoding="utf-8").splitlines()
    try:
        parse_checksum(lines[0] if lines else "")
    except ValueError:
        return False
    return True


def fetch_archive(
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
        algo, expected = parse_checksum(checksum)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / archive.filename
    if path.is_file() and digest(path, algo) != expected:
        print(f"{label}: {path} does not match its checksum, downloading it again")
        path.unlink()
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        download_to_part(label, url, part, progress)
        actual = digest(part, algo)
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
                members = check_members(_zip_members(zf), archive.folder)
                ensure_space(dest, sum(m.size for m in members), f"unpacking {label}")
                for info in zf.infolist():
                    zf.extract(info, tmp)
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                tar_members = tf.getmembers()
                members = check_members([_tar_member(m) for m in tar_members], archive.folder)
                ensure_space(dest, sum(m.size for m in members), f"unpacking {label}")
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


def check_members(members: list[_Member], folder: str) -> list[_Member]:
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
