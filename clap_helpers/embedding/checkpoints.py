"""Checkpoint files given as a release URL: downloaded once into a local cache, then a local path.

Owns turning a ``load_clap`` checkpoint argument into a local file. A local path or a hub id is
returned as it is (hub ids stay with ``huggingface_hub``); an ``http(s)://`` URL is fetched once
into the checkpoint cache and its local path returned::

    path = resolve_checkpoint(
        "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/AudioCLIP-Full-Training.pt",
        checksum="sha256:<64 hex>",   # optional; md5:/sha1: too
    )

Cache layout (like the Hugging Face cache: one folder per source, never half-written)::

    <root>/<sha256(url)[:16]>/AudioCLIP-Full-Training.pt
    <root>/<sha256(url)[:16]>/m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth  (a zip)
    <root>/<sha256(url)[:16]>/.clap_helpers_ok   (JSON: url, file, md5/sha1/sha256; written last)

``root``: the ``cache_dir`` argument, else ``$CLAP_HELPERS_CHECKPOINTS``, else
``$XDG_CACHE_HOME/clap_helpers/checkpoints``, else ``~/.cache/clap_helpers/checkpoints``.

A download goes to ``<name>.part`` (resumed with HTTP Range after an interruption, as dataset
downloads are) and is renamed only after its checksum matched; a mismatch deletes it and leaves
nothing in the cache. A zip or tar archive is checked member by member (no absolute paths,
``..`` or links out), unpacked into a temporary folder and renamed into place; its single
top-level folder keeps its name (M2D-CLAP's folder name is its configuration), an archive without
one is unpacked into a folder named after it. Archives are recognised by their name (``.zip``,
``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``): a torch ``.pt`` file is a zip too. The archive itself is then deleted. The marker file
is written last: a folder without it is an unfinished download and is started over.

Offline (``HF_HUB_OFFLINE=1``, or no network) a cached URL loads without any request; an uncached
one is a :class:`CheckpointUnavailable` (an ``OSError``) naming the URL and the manual fix.

The download, checksum and archive checks are the dataset downloader's
(:mod:`clap_helpers.data.download.http`, :mod:`~clap_helpers.data.download.archives`).

Used by: clap_helpers.embedding.families.registry (``load_family``, hence ``load_clap``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..data.download.archives import _BadArchive, _tar_member, _zip_members, check_members
from ..data.download.http import DownloadError, digest, download_to_part, parse_checksum

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "MARKER",
    "RELEASE_URLS",
    "CheckpointUnavailable",
    "checkpoint_cache_dir",
    "fetch_checkpoint",
    "is_url",
    "resolve_checkpoint",
]

#: Official release files (from the projects' READMEs); checksums are not published, so none is
#: checked unless you pass one.
RELEASE_URLS = {
    "audioclip": "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/"
    "AudioCLIP-Full-Training.pt",
    "audioclip-bpe": "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/"
    "bpe_simple_vocab_16e6.txt.gz",
    "m2d-clap": "https://github.com/nttcslab/m2d/releases/download/v0.1.0/"
    "m2d_clap_vit_base-80x608p16x16-240128.zip",
}

#: File names a checkpoint inside an unpacked archive may have.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
MARKER = ".clap_helpers_ok"
_TMP_PREFIX = ".clap_tmp_"
_ALGOS = ("md5", "sha1", "sha256")
_EPOCH = re.compile(r"checkpoint-(\d+)\.\w+")
_ARCHIVE = re.compile(r"\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$", re.IGNORECASE)


class CheckpointUnavailable(OSError):
    """A checkpoint URL is not cached and cannot be downloaded (offline, network, HTTP error)."""


def is_url(model: object) -> bool:
    """True for an ``http://`` or ``https://`` string."""
    return isinstance(model, str) and model.lower().startswith(("http://", "https://"))


def checkpoint_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Root of the checkpoint cache (see the module doc)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("CLAP_HELPERS_CHECKPOINTS"):
        return Path(os.environ["CLAP_HELPERS_CHECKPOINTS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "clap_helpers" / "checkpoints"


def resolve_checkpoint(
    model: str | os.PathLike,
    *,
    checksum: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> str | os.PathLike:
    """``model`` itself unless it is a URL; a URL: :func:`fetch_checkpoint`'s local path."""
    if not is_url(model):
        return model
    return str(
        fetch_checkpoint(str(model), checksum=checksum, cache_dir=cache_dir, progress=progress)
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _filename(url: str) -> str:
    name = unquote(Path(urlparse(url).path).name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{url}: the URL does not end with a file name")
    return name


def _manual_fix(url: str) -> str:
    return (
        f"download {url} yourself (browser, curl -LO), unpack it if it is an archive, and pass "
        "the local checkpoint path to load_clap; or connect once so that it is cached"
    )


def fetch_checkpoint(
    url: str,
    *,
    checksum: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The local checkpoint file of ``url``, downloaded (and unpacked) once into the cache.

    Args:
        url: an ``http(s)://`` URL of a checkpoint file or of a zip/tar archive holding one.
        checksum: ``"sha256:<hex>"``, ``"md5:<hex>"`` or ``"sha1:<hex>"`` of the downloaded file;
            checked before anything is written to the cache, and against a cached copy's record.
        cache_dir: cache root (default :func:`checkpoint_cache_dir`).

    Raises:
        CheckpointUnavailable: not cached and offline, unreachable or an HTTP error.
        DownloadError: checksum mismatch (nothing is kept), a refused archive, an archive with
            no checkpoint or several candidates.
        ValueError: a malformed ``checksum`` or a URL without a file name.
    """
    expected = parse_checksum(checksum) if checksum else None
    name = _filename(url)
    folder = checkpoint_cache_dir(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:16]
    cached = _cached(folder, url, expected)
    if cached is not None:
        return cached
    if _offline():
        raise CheckpointUnavailable(
            f"checkpoint {url} is not in the cache ({folder}) and HF_HUB_OFFLINE=1 forbids "
            f"downloading it; {_manual_fix(url)}"
        )
    if folder.exists():  # an unfinished earlier attempt: keep only a resumable .part
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name != name + ".part":
                child.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / (name + ".part")
    try:
        download_to_part(name, url, part, progress)
    except DownloadError as exc:
        _remove_if_empty(folder)
        raise CheckpointUnavailable(f"{exc}; {_manual_fix(url)}") from None
    digests = {algo: digest(part, algo) for algo in _ALGOS}
    if expected is not None and digests[expected[0]] != expected[1]:
        part.unlink()
        _remove_if_empty(folder)
        raise DownloadError(
            f"checksum mismatch for {url}: expected {expected[0]} {expected[1]}, got "
            f"{digests[expected[0]]}; the download was deleted, check the URL and the checksum"
        )
    downloaded = folder / name
    os.replace(part, downloaded)
    if _ARCHIVE.search(name):  # by name: a torch .pt file is a zip too
        try:
            result = _unpack(downloaded, folder, url)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        downloaded.unlink()
    else:
        result = downloaded
    record = {"url": url, "file": result.relative_to(folder).as_posix(), **digests}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MARKER)
    return result


def _cached(folder: Path, url: str, expected: tuple[str, str] | None) -> Path | None:
    """The cached checkpoint of ``url`` if its marker and file are there, else None."""
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        path = folder / record["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("url") != url or not path.exists():
        return None
    if expected is not None and record.get(expected[0]) != expected[1]:
        raise DownloadError(
            f"the cached copy of {url} ({folder}) has {expected[0]} {record.get(expected[0])}, "
            f"not the {expected[1]} asked for; delete {folder} to download it again, or check "
            "the checksum"
        )
    return path


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _members(path: Path) -> list:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return _zip_members(zf)
    with tarfile.open(path) as tf:
        return [_tar_member(m) for m in tf.getmembers()]


def _unpack(archive: Path, folder: Path, url: str) -> Path:
    """Unpack ``archive`` into ``folder`` (see the module doc); the checkpoint file inside."""
    try:
        members = _members(archive)
        tops = {m.name.replace("\\", "/").strip("/").split("/")[0] for m in members}
        tops.discard(".")
        top = next(iter(tops)) if len(tops) == 1 else None
        single = top is not None and any(
            "/" in m.name.replace("\\", "/").strip("/") for m in members
        )
        check_members(members, top if single else next(iter(tops), ""))
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=folder))
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tf:
                    data_filter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tf.extractall(tmp, **data_filter)
            if single:
                final = folder / top
                os.rename(tmp / top, final)
            else:
                stem = _ARCHIVE.sub("", archive.name)
                final = folder / stem
                os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except _BadArchive as exc:
        raise DownloadError(f"refused the archive from {url}: {exc}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"the archive from {url} is corrupt ({exc})") from None
    return _pick_checkpoint(final, url)


def _pick_checkpoint(root: Path, url: str) -> Path:
    """The one checkpoint file under ``root`` (``checkpoint-<N>``: the highest N)."""
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(found) > 1 and all(_EPOCH.fullmatch(p.name) for p in found):
        found = [max(found, key=lambda p: int(_EPOCH.fullmatch(p.name).group(1)))]
    if len(found) != 1:
        names = ", ".join(p.relative_to(root).as_posix() for p in found) or "none"
        raise DownloadError(
            f"the archive from {url} should hold one checkpoint file ({'/'.join(CHECKPOINT_SUFFIXES)}),"
            f" found: {names}; unpack it yourself and pass the file's path"
        )
    return found[0]
