"""The Parquet shard store of a distributed embedding run: paths and URIs, schema, reading back.

A run writes rows ``path, embedding (D float32), error, warning`` into Parquet shards under one
output folder (local or any pyarrow filesystem URI), with the run's settings (model, revision,
precision, window, front-end) in each shard's metadata under ``clap_helpers``.
:func:`read_embeddings` returns them in the order of any list of paths, NaN rows where missing.

Used by: notebook 02 (``embeddings_dir``) and :mod:`.distributed`.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..data.audio import AUDIO_EXTENSIONS, list_audio_files

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "SHARD_SUFFIX",
    "DistributedError",
    "expand_files",
    "filesystem",
    "is_uri",
    "model_name",
    "open_local",
    "written_paths",
    "normalize_path",
    "output_schema",
    "read_embeddings",
    "read_metadata",
    "read_reasons",
    "read_table",
]

METADATA_KEY = b"clap_helpers"


FORMAT_VERSION = 1


SHARD_SUFFIX = ".parquet"


_SAME_RUN_KEYS = ("model", "revision", "precision", "window", "int16_roundtrip", "frontend", "dim")


class DistributedError(RuntimeError):
    """A distributed run cannot start (bad output folder, mixed models, too few resources)."""


def is_uri(path: str) -> bool:
    return "://" in path


def normalize_path(path: str | os.PathLike) -> str:
    """How a clip is named in the output: URIs as given, local paths made absolute."""
    path = str(path)
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def filesystem(uri: str):
    """(pyarrow filesystem, path within it) of a local path or a URI."""
    import pyarrow.fs as pafs

    if is_uri(uri):
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def expand_files(spec: str) -> list[str]:
    """The clips named by ``--files``: a folder (all audio under it), a text file (one path per
    line; ``#`` comments), a glob (``**`` recurses), a URI folder, or a single audio file."""
    if is_uri(spec):
        import pyarrow.fs as pafs

        fs, root = filesystem(spec)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            return [spec]
        scheme = spec.split("://", 1)[0]
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        return sorted(
            f"{scheme}://{f.path}"
            for f in found
            if f.type == pafs.FileType.File and f.path.lower().endswith(AUDIO_EXTENSIONS)
        )
    p = Path(spec).expanduser()
    if p.is_dir():
        return [str(x) for x in list_audio_files(p)]
    if p.is_file() and not p.name.lower().endswith(AUDIO_EXTENSIONS):
        lines = (line.strip() for line in p.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    if p.is_file():
        return [str(p)]
    matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
    files = [m for m in matches if os.path.isfile(m)]
    if not files:
        raise FileNotFoundError(f"--files {spec!r}: no such folder, list file or matching files")
    return files


def open_local(path: str):
    """A local file path for ``path``; URIs are copied to a temporary file (caller deletes it)."""
    if not is_uri(path):
        return path, None
    fs, inner = filesystem(path)
    suffix = os.path.splitext(inner)[1]
    with (
        fs.open_input_stream(inner) as src,
        tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as dst,
    ):
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    return dst.name, dst.name


def output_schema(meta: dict):
    """The shards' pyarrow schema, the run metadata stored under key ``clap_helpers``."""
    import pyarrow as pa

    fields = [
        ("path", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("error", pa.string()),
        ("warning", pa.string()),
    ]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def _shards(out_dir: str) -> tuple[object, list[str]]:
    import pyarrow.fs as pafs

    fs, root = filesystem(out_dir)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return fs, []
    if info.type != pafs.FileType.Directory:
        raise DistributedError(f"{out_dir}: not a folder (the output of a distributed run)")
    found = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    files = sorted(
        f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(SHARD_SUFFIX)
    )
    return fs, files


def _read_shards(out_dir: str, columns: Sequence[str]):
    """(table of ``columns`` over all readable shards, metadata dicts). Unreadable shards (a run
    killed while writing) are skipped with a warning naming them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, files = _shards(out_dir)
    tables, metas = [], []
    for f in files:
        try:
            pf = pq.ParquetFile(f, filesystem=fs)
            table = pf.read(columns=list(columns))
        except (OSError, pa.ArrowException) as exc:
            warnings.warn(
                f"{f}: unreadable shard skipped ({exc}); delete it, its clips are redone",
                stacklevel=3,
            )
            continue
        raw = (pf.schema_arrow.metadata or {}).get(METADATA_KEY)
        metas.append(json.loads(raw) if raw else {})
        tables.append(table)
    return tables, metas


def _one_run(metas: list[dict], out_dir: str) -> dict | None:
    if not metas:
        return None
    first = metas[0]
    for m in metas[1:]:
        diff = [k for k in _SAME_RUN_KEYS if m.get(k) != first.get(k)]
        if diff:
            raise DistributedError(
                f"{out_dir}: shards from different runs disagree on {diff}; use one output "
                "folder per model and settings"
            )
    return first


def read_metadata(out_dir: str | os.PathLike) -> dict | None:
    """The run metadata of an output folder (model, revision, precision, window, frontend, dim);
    None if it holds no shards yet."""
    _, metas = _read_shards(str(out_dir), ["path"])
    return _one_run(metas, str(out_dir))


def read_table(out_dir: str | os.PathLike):
    """All rows of an output folder as a DataFrame (path, embedding (D,) arrays or None, error,
    warning), one row per path: an embedded row wins over a failed one (e.g. after a re-run)."""
    import pandas as pd
    import pyarrow as pa

    tables, metas = _read_shards(str(out_dir), ["path", "embedding", "error", "warning"])
    _one_run(metas, str(out_dir))
    if not tables:
        return pd.DataFrame(columns=["path", "embedding", "error", "warning"])
    df = pa.concat_tables(tables).to_pandas()
    df["_ok"] = df["error"].isna()
    df = df.sort_values("_ok", kind="stable").drop_duplicates("path", keep="last")
    return df.drop(columns="_ok").sort_index().reset_index(drop=True)


def model_name(model) -> str:
    """A hub id as it is; a local model folder as its resolved path."""
    model = str(model)
    folder = Path(model).expanduser()
    return str(folder.resolve()) if not is_uri(model) and folder.is_dir() else model


def read_embeddings(
    out_dir: str | os.PathLike,
    paths: Iterable[str | os.PathLike],
    *,
    encoder=None,
    return_errors: bool = False,
):
    """Embeddings of a distributed run aligned to ``paths``: (N, D) float32, L2-normalised rows,
    NaN for a path that is missing from the output or failed.

    Args:
        out_dir: the run's ``--out`` folder (local path or pyarrow-filesystem URI).
        paths: the clips, e.g. ``clips["path"]`` (local paths are compared made absolute).
        encoder: a :class:`~clap_helpers.embedding.encoder.ClapEncoder`; if given, the run must have used the
            same model and revision (so its text embeddings fit), else ``DistributedError``.
        return_errors: also return a list of N reasons (None where embedded; ``"not in the
            output"`` for missing paths).

    Used by: notebook 02_esc50_zeroshot (``embeddings_dir``); the search index
    (``ch.search.SoundIndex(clips, read_embeddings(out_dir, clips.path), enc)``).
    """
    keys = [normalize_path(p) for p in paths]
    tables, metas = _read_shards(str(out_dir), ["path", "embedding", "error"])
    meta = _one_run(metas, str(out_dir))
    if meta is None:
        raise DistributedError(f"{out_dir}: no embeddings found (no readable .parquet shards)")
    if encoder is not None:
        ours = (model_name(encoder.model_id), str(encoder.revision))
        theirs = (model_name(meta.get("model")), str(meta.get("revision")))
        if ours != theirs:
            raise DistributedError(
                f"{out_dir} was embedded with model {theirs[0]} (revision {theirs[1]}), not "
                f"{ours[0]} (revision {ours[1]}): load_clap the run's model"
            )
    out = np.full((len(keys), int(meta["dim"])), np.nan, dtype=np.float32)
    reasons = _align(tables, keys, out)
    return (out, reasons) if return_errors else out


def read_reasons(out_dir: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> list:
    """Why each of ``paths`` has no embedding in the run (None where it has one), reading only
    the path and error columns: what :func:`read_embeddings` returns with ``return_errors=True``
    without loading the vectors. Used by :func:`clap_helpers.embedding.distributed.embed_distributed`."""
    keys = [normalize_path(p) for p in paths]
    tables, metas = _read_shards(str(out_dir), ["path", "error"])
    _one_run(metas, str(out_dir))
    return _align(tables, keys, None)


def _align(tables, keys: list[str], out: np.ndarray | None) -> list[str | None]:
    """Reasons aligned to ``keys`` ("not in the output", an error, or None when embedded); an
    embedded row wins over a failed one. With ``out`` (N, D), embedded vectors are copied in."""
    reasons: list[str | None] = ["not in the output"] * len(keys)
    where: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        where.setdefault(k, []).append(i)
    for table in tables:
        col_path = table.column("path").to_pylist()
        col_err = table.column("error").to_pylist()
        emb = table.column("embedding").combine_chunks() if out is not None else None
        for j, (p, err) in enumerate(zip(col_path, col_err, strict=True)):
            rows = where.get(p)
            if rows is None:
                continue
            if err is None:
                if emb is not None:
                    out[rows] = np.asarray(emb[j].values.to_numpy(zero_copy_only=False), np.float32)
                for r in rows:
                    reasons[r] = None
            elif reasons[rows[0]] is not None:  # never overwrite an embedded row
                for r in rows:
                    reasons[r] = err
    return reasons


def written_paths(out_dir: str, meta: dict, retry_failed: bool) -> set[str]:
    tables, metas = _read_shards(out_dir, ["path", "error"])
    old = _one_run(metas, out_dir)
    if old is not None:
        diff = [k for k in _SAME_RUN_KEYS if old.get(k) != meta.get(k)]
        if diff:
            show = {k: (old.get(k), meta.get(k)) for k in diff}
            raise DistributedError(
                f"{out_dir} holds embeddings made with other settings (old, new): {show}; "
                "choose a new --out folder or the same settings"
            )
    done: set[str] = set()
    for t in tables:
        if retry_failed:
            t = t.filter(t.column("error").is_null())
        done.update(t.column("path").to_pylist())
    return done
