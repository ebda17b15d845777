"""On-disk cache of embeddings, so nothing is ever computed twice.

Layout: ``<cache_dir>/<kind>/<namespace hash>/`` holds ``namespace.json`` (what the embeddings
depend on: model id and revision, precision, front-end settings, ...) and chunk files
``chunk-*.npz``, each with ``keys`` (n,) str, ``embeddings`` (n, D) float32 and the namespace hash.
A key names one input: :func:`file_key` (path, size and mtime of an audio file) or
:func:`text_key`.

Chunks are written atomically (temporary file, then ``os.replace``) every ``flush_every`` new
rows, so an interrupted run keeps all finished chunks and resumes from them. npz files are zip
archives with a CRC per member: a chunk that fails to load, fails its CRC, has the wrong shape,
a foreign namespace or non-finite values is reported, deleted and recomputed, never returned.

Several processes may share a cache (two notebooks embedding at once): chunk names are unique,
and merging chunks (:meth:`EmbeddingStore.compact`) holds a lock file (``.lock``, via
``filelock``) and merges every chunk on disk before deleting exactly those it merged, so no
process loses another's rows. Temporary files left by killed processes are swept once they are
older than ``_STALE_TMP_S``.

Used by: clap_helpers.embedding.encoder (every notebook that embeds audio or text) and clap_helpers.apps.search.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..diagnostics import ClapWarning

__all__ = [
    "CACHE_VERSION",
    "CacheWarning",
    "check_cache_dir",
    "default_cache_dir",
    "EmbeddingStore",
    "file_key",
    "namespace_hash",
    "text_key",
]

CACHE_VERSION = 1
"""Bump when the embedding code changes results: old entries then land in another namespace."""

_COMPACT_AFTER = 32  # chunk files in a namespace before they are merged into one
_STALE_TMP_S = 15 * 60  # a .tmp-* file this old is left over from a killed process


class CacheWarning(ClapWarning):
    """A cache chunk was unusable (corrupt, foreign or mismatched) and will be recomputed."""


def default_cache_dir() -> Path:
    """``$CLAP_HELPERS_CACHE``, else ``$XDG_CACHE_HOME/clap_helpers``, else ``~/.cache/clap_helpers``."""
    if os.environ.get("CLAP_HELPERS_CACHE"):
        return Path(os.environ["CLAP_HELPERS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "clap_helpers"


def check_cache_dir(path: str | os.PathLike) -> Path:
    """``path`` expanded, if it can be a cache folder: it, or its nearest existing parent, must
    be a writable folder. Raises NotADirectoryError / PermissionError naming it otherwise.

    Checked when a store (or ``load_clap``) is created, not at the first write after many clips.
    """
    root = Path(path).expanduser()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == root else f" (its parent {probe} is a file)"
        raise NotADirectoryError(
            f"embedding cache_dir {root} is not a folder{where}: pass another cache_dir "
            "(or cache_dir=False for no cache), or remove that file"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            f"embedding cache_dir {root} is not writable ({probe}): pass another cache_dir "
            "(or cache_dir=False for no cache)"
        )
    return root


def file_key(path: str | os.PathLike) -> str:
    """Key of an audio file: its absolute path, size and modification time (ns).

    Editing, replacing or touching the file changes the key. A missing file gets a key that never
    matches a stored one (it is never cached anyway: failed files are not stored).
    """
    p = Path(path).expanduser().absolute()
    try:
        st = p.stat()
        ident = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = f"{p}|missing"
    return hashlib.sha1(ident.encode()).hexdigest()


def text_key(text: str) -> str:
    """Key of a text prompt (exact string, case and punctuation included)."""
    return hashlib.sha1(text.encode()).hexdigest()


def namespace_hash(namespace: dict) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable dict."""
    blob = json.dumps({**namespace, "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class EmbeddingStore:
    """Embeddings of one namespace (one model, precision and front-end), keyed by input.

    Args:
        root: cache directory (see :func:`default_cache_dir`).
        kind: ``"audio"`` or ``"text"`` (a sub-folder).
        namespace: everything the embeddings depend on; a different dict is a different store.
        dim: embedding size D.
        flush_every: rows buffered before a chunk is written.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        kind: str,
        namespace: dict,
        dim: int,
        flush_every: int = 256,
    ):
        self.hash = namespace_hash(namespace)
        self.dir = check_cache_dir(Path(check_cache_dir(root)) / kind / self.hash)
        self.namespace = namespace
        self.dim = int(dim)
        self.flush_every = int(flush_every)
        self._index: dict[str, np.ndarray] | None = None
        self._pending_keys: list[str] = []
        self._pending_rows: list[np.ndarray] = []

    # -- reading ------------------------------------------------------------------------------
    def _chunks(self) -> list[Path]:
        """Chunk files on disk now (a folder named like a chunk is not one)."""
        return sorted(p for p in self.dir.glob("chunk-*.npz") if p.is_file())

    def _sweep_tmp(self) -> None:
        """Delete ``.tmp-*`` files older than ``_STALE_TMP_S`` (a live write is younger)."""
        cutoff = time.time() - _STALE_TMP_S
        for tmp in self.dir.glob(".tmp-*"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:  # another process swept it first
                pass

    def _load(self) -> dict[str, np.ndarray]:
        if self._index is None:
            self._index = {}
            self._sweep_tmp()
            seen: set[Path] = set()
            for _ in range(3):  # a chunk merged away meanwhile: its rows are in a newer chunk
                todo = [c for c in self._chunks() if c not in seen]
                vanished = False
                for chunk in todo:
                    seen.add(chunk)
                    if not chunk.exists():
                        vanished = True
                        continue
                    loaded = self._read_chunk(chunk)
                    if loaded is not None:
                        self._index.update(zip(*loaded, strict=True))
                    else:
                        vanished = vanished or not chunk.exists()
                if not vanished:
                    break
        return self._index

    def _read_chunk(self, chunk: Path) -> tuple[list[str], np.ndarray] | None:
        try:
            with np.load(chunk, allow_pickle=False) as data:
                keys = [str(k) for k in data["keys"]]
                rows = np.asarray(data["embeddings"])
                owner = str(data["namespace"])
        except FileNotFoundError:  # merged and deleted by another process meanwhile
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            return self._reject(chunk, f"unreadable ({type(exc).__name__}: {exc})")
        if owner != self.hash:
            return self._reject(chunk, f"belongs to namespace {owner}, not {self.hash}")
        if rows.dtype != np.float32 or rows.shape != (len(keys), self.dim):
            return self._reject(
                chunk, f"shape {rows.shape} {rows.dtype}, expected ({len(keys)}, {self.dim})"
            )
        if not np.isfinite(rows).all():
            return self._reject(chunk, "holds non-finite values")
        return keys, rows

    def _reject(self, chunk: Path, reason: str) -> None:
        warnings.warn(
            f"embedding cache chunk {chunk} is {reason}; deleting it, its rows will be recomputed",
            CacheWarning,
            stacklevel=4,
        )
        chunk.unlink(missing_ok=True)
        return None

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``keys``: (found (N,) bool, rows (N, D) float32 with NaN where not found)."""
        index = self._load()
        found = np.zeros(len(keys), dtype=bool)
        rows = np.full((len(keys), self.dim), np.nan, dtype=np.float32)
        for i, key in enumerate(keys):
            row = index.get(key)
            if row is not None:
                rows[i] = row
                found[i] = True
        return found, rows

    def __len__(self) -> int:
        return len(self._load())

    # -- writing ------------------------------------------------------------------------------
    def add(self, keys: Iterable[str], rows: np.ndarray) -> None:
        """Queue rows (n, D) for ``keys``; written once ``flush_every`` rows are pending."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, self.dim)
        keys = list(keys)
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        good = np.isfinite(rows).all(axis=1)  # failed inputs (NaN rows) are never stored
        self._pending_keys.extend(k for k, g in zip(keys, good, strict=True) if g)
        self._pending_rows.append(rows[good])
        index = self._load()
        index.update((k, r) for k, r, g in zip(keys, rows, good, strict=True) if g)
        if len(self._pending_keys) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write pending rows as one chunk file, atomically."""
        if not self._pending_keys:
            return
        rows = np.concatenate(self._pending_rows)
        self._write_chunk(self._pending_keys, rows)
        self._pending_keys, self._pending_rows = [], []
        if len(self._chunks()) > _COMPACT_AFTER:
            self.compact()

    def _write_chunk(self, keys: Sequence[str], rows: np.ndarray) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "namespace.json"
        if not meta.exists():
            _atomic_write_bytes(meta, json.dumps(self.namespace, indent=1, default=str).encode())
        target = self.dir / f"chunk-{uuid.uuid4().hex}.npz"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    keys=np.asarray(keys, dtype=str),
                    embeddings=rows,
                    namespace=np.asarray(self.hash),
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def compact(self) -> None:
        """Merge all chunk files into one (after a flush; keeps directory listings short).

        Safe with other processes using the same store: under a lock file, every chunk on disk
        (other processes' included) is read and merged, and only the chunks merged are deleted.
        """
        self.flush()
        if not self.dir.is_dir():
            return
        with FileLock(str(self.dir / ".lock")):
            self._sweep_tmp()
            chunks = self._chunks()
            if len(chunks) < 2:
                return
            merged: dict[str, np.ndarray] = {}
            for chunk in chunks:
                loaded = self._read_chunk(chunk)
                if loaded is not None:
                    merged.update(zip(*loaded, strict=True))
            index = self._load()
            index.update(merged)  # rows other processes wrote are now known here too
            keys = list(index)
            self._write_chunk(keys, np.stack([index[k] for k in keys]))
            for chunk in chunks:
                chunk.unlink(missing_ok=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
