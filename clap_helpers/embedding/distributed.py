"""Embed large audio collections on a Ray cluster (Ray Data); read the result back.

::

    python -m clap_helpers.embedding.distributed --dataset esc50 --data-root downloads \\
        --model laion/clap-htsat-unfused --out runs/esc50_emb            # local Ray, all cores
    python -m clap_helpers.embedding.distributed --files "archive/**/*.flac" --out s3://bucket/emb \\
        --address auto --num-workers 8 --gpus-per-worker 1              # an existing cluster

    summary = ch.distributed.embed_distributed("runs/esc50_emb", paths, model=model)
    E = ch.distributed.read_embeddings("runs/esc50_emb", clips["path"])   # (N, D), NaN = missing

The pipeline: the clip list (paths already in the output are skipped) -> decode and resample to
the model family's rate (48 kHz LAION-CLAP, 44.1 kHz MS-CLAP and AudioCLIP, 16 kHz M2D-CLAP; in the
run metadata as ``sample_rate``) in CPU tasks (the single-process engine's decoder,
:func:`clap_helpers.data.audio.load_audio`)
-> embed in a pool of actors, each holding one :class:`~clap_helpers.embedding.encoder.ClapEncoder` (loaded
once, on its GPU when ``gpus_per_worker`` > 0) and calling its
:meth:`~clap_helpers.embedding.encoder.ClapEncoder.embed_waveforms` (same front-end, windowing, pooling and
precision as :meth:`~clap_helpers.embedding.encoder.ClapEncoder.embed_audio`) -> Parquet shards in the output
folder with columns ``path`` (str), ``embedding`` (list<float32>, null when failed), ``error``
(null or the reason, e.g. ``"file not found"``) and ``warning`` (null or e.g. ``"silent"``); the
file metadata (key ``clap_helpers``) holds the model, revision, precision, window and front-end
settings as JSON.

Fault tolerance: Ray restarts a killed actor and retries its batch, and retries failed tasks;
a file that cannot be decoded or embedded becomes a row with an ``error``, never a failed job; a
re-run with the same output folder skips every path already written (resume). Output folders and
input paths may be URIs of any pyarrow filesystem (``s3://``, ``gs://``, ``hdfs://``,
``file://``); remote audio is copied to a local temporary file for decoding.

Used by: notebook 02_esc50_zeroshot (``embeddings_dir`` parameter), benchmarks/bench_distributed.py
and usage.md ("Scale-out with Ray").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from ..data.audio import CLAP_SAMPLE_RATE, DEFAULT_MAX_SECONDS
from .encoder import DEFAULT_MODEL, WINDOW_MODES
from .shards import (
    FORMAT_VERSION,
    DistributedError,
    expand_files,
    filesystem,
    is_uri,
    model_name,
    normalize_path,
    open_local,
    output_schema,
    read_embeddings,
    read_metadata,
    read_reasons,
    read_table,
    written_paths,
)

__all__ = [
    "ClapEmbedder",
    "decode_batch",
    "DECODE_TASK_MEMORY",
    "embed_distributed",
    "init_local_ray",
    "main",
    "parse_args",
    # the shard store's reading side, re-exported: ch.distributed.read_embeddings(...)
    "DistributedError",
    "expand_files",
    "normalize_path",
    "output_schema",
    "read_embeddings",
    "read_metadata",
    "read_table",
]

DECODE_TASK_MEMORY = 512 * 2**20  # bytes: the worker (~300 MB with torch) + a decoded clip


# Keys of the run metadata that must agree between shards of one output folder.
# ----------------------------------------------------------------------------------------------
# Paths and filesystems
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# Pipeline stages (run in Ray tasks and actors)
# ----------------------------------------------------------------------------------------------
def decode_batch(
    batch: dict,
    int16_roundtrip: bool = False,
    sample_rate: int = CLAP_SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> dict:
    """Ray Data stage 1 (CPU tasks): ``{"path": (B,)}`` -> path, waveform (float32 at
    ``sample_rate``, the model family's rate; empty when failed), error, warning. Decoding is the
    single-process engine's own."""
    from .decoding import DecodeDataset

    paths = [str(p) for p in batch["path"]]
    waves, errors, notes = [], [], []
    for path in paths:
        tmp = None
        try:
            local, tmp = open_local(path)
            decoder = DecodeDataset([local], [0], int16_roundtrip, max_seconds, sample_rate)
            _, x, found = decoder[0]
            found = [n.removeprefix(f"{local}: ") for n in found]
        except FileNotFoundError:
            x, found = None, ["file not found"]
        except Exception as exc:  # noqa: BLE001 - a bad file is a row, never a failed task
            x, found = None, [f"cannot decode ({type(exc).__name__}: {exc})"]
        finally:
            if tmp is not None:
                os.unlink(tmp)
        if x is None:
            waves.append(np.zeros(0, np.float32))
            errors.append(found[0] if found else "cannot decode")
            notes.append(None)
        else:
            waves.append(x.numpy())
            errors.append(None)
            notes.append("; ".join(found) or None)
    wave_col = np.empty(len(waves), dtype=object)
    wave_col[:] = waves
    return {
        "path": np.array(paths, dtype=object),
        "waveform": wave_col,
        "error": np.array(errors, dtype=object),
        "warning": np.array(notes, dtype=object),
    }


def _text(value) -> str | None:
    """A text cell of a Ray batch: missing values arrive as None or NaN."""
    return value if isinstance(value, str) and value else None


class ClapEmbedder:
    """Ray Data stage 2 (actor pool): one :class:`~clap_helpers.embedding.encoder.ClapEncoder` per actor.

    Called on decoded batches; returns a pyarrow table (path, embedding list<float32>, error,
    warning). A batch the model fails on is retried clip by clip, so one bad clip only fails
    itself.
    """

    def __init__(self, model: str, settings: dict, threads: int | None = None):
        import torch

        from .loading import load_clap

        if threads:
            torch.set_num_threads(threads)
        self.enc = load_clap(
            model,
            device="auto",
            precision=settings["precision"],
            revision=settings.get("revision_arg"),
            window=settings["window"],
            num_workers=0,
            int16_roundtrip=settings["int16_roundtrip"],
            cache_dir=tempfile.gettempdir(),  # never used: embed_waveforms does not cache
            **settings.get("model_options", {}),
        )
        self.batch_size = settings["batch_size"]

    def __call__(self, batch: dict):
        import pyarrow as pa

        n = len(batch["path"])
        errors = [_text(e) for e in batch["error"]]
        rows: list[np.ndarray | None] = [None] * n
        good = [i for i in range(n) if errors[i] is None]
        waves = [np.array(batch["waveform"][i], np.float32) for i in good]  # writable copies
        try:
            emb = self.enc.embed_waveforms(waves, self.batch_size) if good else []
            for i, e in zip(good, emb, strict=True):
                rows[i] = e
        except Exception:  # noqa: BLE001 - find the clip that fails, embed the others
            for i, w in zip(good, waves, strict=True):
                try:
                    rows[i] = self.enc.embed_waveforms([w], 1)[0]
                except Exception as exc:  # noqa: BLE001
                    errors[i] = f"embedding failed ({type(exc).__name__}: {exc})"
        for i in good:
            if rows[i] is not None and not np.isfinite(rows[i]).all():
                rows[i], errors[i] = None, "embedding is not finite"
        dim = self.enc.dim
        values = np.concatenate([r for r in rows if r is not None] or [np.zeros(0, np.float32)])
        lengths = [dim if r is not None else 0 for r in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        mask = pa.array([r is None for r in rows])
        embedding = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(values.astype(np.float32)), mask=mask
        )
        return pa.table(
            {
                "path": pa.array([str(p) for p in batch["path"]], pa.string()),
                "embedding": embedding,
                "error": pa.array(errors, pa.string()),
                "warning": pa.array([_text(w) for w in batch["warning"]], pa.string()),
            }
        )


def _describe(
    model: str,
    precision: str,
    revision: str | None,
    window: str,
    int16: bool,
    options: dict | None = None,
) -> dict:
    """Load the model once where an actor would run: the run's metadata (precision resolved)."""
    from .loading import load_clap

    enc = load_clap(
        model,
        precision=precision,
        revision=revision,
        window=window,
        num_workers=0,
        int16_roundtrip=int16,
        cache_dir=tempfile.gettempdir(),
        **(options or {}),
    )
    meta = enc.audio_namespace()
    meta.update(dim=enc.dim, device=enc.device.type, format_version=FORMAT_VERSION)
    meta["sample_rate"] = enc.sample_rate  # the decoding stage's rate
    return meta


# ----------------------------------------------------------------------------------------------
# Reading an output folder
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
def init_local_ray(
    num_cpus: int | None = None, runtime_env: dict | None = None, attempts: int = 3
) -> None:
    """Start a local Ray (``num_cpus``: default all cores) without the dashboard.

    Retried ``attempts`` times: the raylet gives its agents a hard-coded 15 s to start and aborts
    otherwise, which happens on a heavily loaded machine (ray-project/ray#65983).
    """
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                address="local",  # a new cluster even where `ray start` left one running
                num_cpus=num_cpus,
                include_dashboard=False,
                runtime_env=runtime_env,
            )
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception here
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            warnings.warn(f"local Ray did not start ({exc}); retrying", stacklevel=2)
            ray.shutdown()


def embed_distributed(
    out_dir: str | os.PathLike,
    paths: Iterable[str | os.PathLike] | None = None,
    *,
    dataset: str | None = None,
    data_root: str | os.PathLike = "downloads",
    files: str | None = None,
    model: str | os.PathLike = DEFAULT_MODEL,
    revision: str | None = None,
    precision: str = "auto",
    window: str = "average",
    int16_roundtrip: bool = False,
    address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    decode_cpus: float = 0.5,
    batch_size: int = 32,
    rows_per_shard: int = 10_000,
    retry_failed: bool = False,
    runtime_env: dict | None = None,
    model_options: dict | None = None,
) -> dict:
    """Embed clips on a Ray cluster into Parquet shards under ``out_dir`` (see the module doc).

    Args:
        out_dir: output folder, local or a pyarrow-filesystem URI; re-runs resume into it.
        paths, dataset (+ data_root), files: the clips (exactly one): a list of paths/URIs, a
            dataset name for :func:`clap_helpers.data.loaders.load`, or a ``--files`` spec
            (:func:`expand_files`).
        model, revision, precision, window, int16_roundtrip: as :func:`clap_helpers.load_clap`;
            ``precision="auto"`` is resolved once, where the actors run, and used by all.
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``); None: an already
            initialised Ray, else a local one with this machine's cores.
        num_workers: embedding actors (one model each); gpus_per_worker / cpus_per_worker: the
            resources of each; decode_cpus: CPUs per decoding task.
        batch_size: clips per actor call (and windows per model call on GPUs).
        rows_per_shard: target rows per Parquet file (a hint to Ray Data).
        retry_failed: also redo paths written with an error (default: skip every written path).
        runtime_env: Ray runtime environment for the workers (e.g. ``{"pip": [...]}``).
        model_options: more :func:`clap_helpers.load_clap` options (JSON values), e.g.
            ``{"text_model": "/weights/gpt2"}`` for MS-CLAP (``--text-model``); the cluster's
            workers must see the paths.

    Returns:
        dict: n_paths, n_skipped (already written), n_embedded and n_failed (this run),
        n_missing (still not in the output), seconds, clips_per_s (this run) and metadata.
    """
    import ray

    if sum(x is not None for x in (paths, dataset, files)) != 1:
        raise ValueError("give exactly one of paths, dataset (with data_root) or files")
    if window not in WINDOW_MODES:
        raise ValueError(f"window must be one of {WINDOW_MODES}, got {window!r}")
    if dataset is not None:
        from ..data.loaders import load

        clips, _ = load(dataset, data_root)
        paths = clips["path"]
    elif files is not None:
        paths = expand_files(files)
    wanted = list(dict.fromkeys(normalize_path(p) for p in paths))
    out_dir = str(out_dir) if is_uri(str(out_dir)) else normalize_path(out_dir)
    model = model_name(model)

    started_ray = False
    if not ray.is_initialized():
        if address is None:
            init_local_ray(runtime_env=runtime_env)
        else:
            ray.init(address=address, runtime_env=runtime_env)
        started_ray = True
    try:
        total_cpus = ray.cluster_resources().get("CPU", 0)
        need = num_workers * cpus_per_worker + decode_cpus
        if need > total_cpus:
            raise DistributedError(
                f"{num_workers} workers x {cpus_per_worker} CPUs + {decode_cpus} for decoding "
                f"need {need} CPUs, the cluster has {total_cpus}: lower --num-workers or "
                "--cpus-per-worker"
            )
        remote_args = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker or 0}
        request = {
            "model": model,
            "precision": precision,
            "revision": revision,
            "window": window,
            "int16_roundtrip": int16_roundtrip,
            "device": "gpu" if gpus_per_worker else "cpu",
        }
        options = {
            k: str(v) if isinstance(v, os.PathLike) else v for k, v in (model_options or {}).items()
        }
        if options:  # (absent when empty: the request of runs made before the option matches)
            request["model_options"] = options
        old = read_metadata(out_dir)
        # (metadata written before sample_rate was recorded: load the model once to know it)
        if old is not None and old.get("request") == request and "sample_rate" in old:
            meta = old  # a re-run with the same request: no need to load the model to know
        else:
            describe = ray.remote(**remote_args)(_describe)
            meta = ray.get(
                describe.remote(model, precision, revision, window, int16_roundtrip, options)
            )
            meta["request"] = request
        done = written_paths(out_dir, meta, retry_failed)
        todo = [p for p in wanted if p not in done]
        t0 = time.perf_counter()
        if todo:
            _run(
                todo,
                out_dir,
                model,
                meta,
                revision,
                batch_size,
                num_workers,
                remote_args,
                decode_cpus,
                rows_per_shard,
                runtime_env,
            )
        seconds = time.perf_counter() - t0
    finally:
        if started_ray:
            ray.shutdown()
    reasons = read_reasons(out_dir, todo) if todo else []  # path and error columns only
    n_failed = sum(r is not None and r != "not in the output" for r in reasons)
    n_missing = sum(r == "not in the output" for r in reasons)
    return {
        "out_dir": out_dir,
        "n_paths": len(wanted),
        "n_skipped": len(wanted) - len(todo),
        "n_embedded": len(todo) - n_failed - n_missing,
        "n_failed": n_failed,
        "n_missing": n_missing,
        "seconds": seconds,
        "clips_per_s": len(todo) / seconds if todo and seconds > 0 else float("nan"),
        "metadata": meta,
    }


def _run(
    todo,
    out_dir,
    model,
    meta,
    revision,
    batch_size,
    num_workers,
    remote_args,
    decode_cpus,
    rows_per_shard,
    runtime_env,
) -> None:
    import pyarrow as pa
    import ray

    settings = {
        "precision": meta["precision"],
        "revision_arg": revision,
        "window": meta["window"],
        "int16_roundtrip": meta["int16_roundtrip"],
        "batch_size": batch_size,
        "model_options": meta["request"].get("model_options", {}),
    }
    block = max(1, min(4 * batch_size, -(-len(todo) // max(1, 4 * num_workers))))
    table = pa.table({"path": pa.array(todo, pa.string())})
    blocks = [table.slice(i, block) for i in range(0, len(todo), block)]
    fs, root = filesystem(out_dir)
    fs.create_dir(root, recursive=True)
    threads = max(1, int(remote_args["num_cpus"])) if not remote_args["num_gpus"] else None
    ds = (
        ray.data.from_arrow(blocks)
        .map_batches(
            decode_batch,
            fn_kwargs={
                "int16_roundtrip": meta["int16_roundtrip"],
                "sample_rate": meta["sample_rate"],
                "max_seconds": meta.get("max_seconds", DEFAULT_MAX_SECONDS),
            },
            batch_size=None,
            batch_format="numpy",
            num_cpus=decode_cpus,
            # A memory hint per decoding task; it also keeps Ray Data from fusing decoding into
            # the embedding actors (stages with different resources are not fused). Ray Data
            # retries lost tasks (max_retries=-1) by default.
            memory=DECODE_TASK_MEMORY,
        )
        .map_batches(
            ClapEmbedder,
            fn_constructor_args=(model, settings, threads),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            runtime_env=runtime_env,
            # Ray Data's defaults for actors: max_restarts=-1 (a killed actor is restarted and
            # loads the model again) and max_task_retries=-1 (its unfinished batches are redone).
            **remote_args,
        )
    )
    ds.write_parquet(
        root,
        filesystem=fs,
        min_rows_per_file=rows_per_shard,
        # Writing is light; a whole CPU per write task could wait forever behind the actors.
        ray_remote_args={"num_cpus": decode_cpus},
        schema=output_schema(meta),
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m clap_helpers.embedding.distributed",
        description="Embed audio on a Ray cluster into Parquet shards (resumable).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="esc50, urbansound8k, fma_small or audioset")
    src.add_argument("--files", help="folder, list file (one path a line), glob, or URI folder")
    p.add_argument("--data-root", default="downloads", help="the --dest of dataset.sh")
    p.add_argument("--model", default=DEFAULT_MODEL, help="hub id, folder or checkpoint file")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument("--family", default=None, help="model family (default: recognised)")
    p.add_argument("--text-model", default=None, help="text tower folder (MS-CLAP, M2D-CLAP)")
    p.add_argument("--out", required=True, help="output folder or URI (s3://, gs://, file://)")
    p.add_argument("--address", default=None, help="Ray cluster (auto, ray://host:10001)")
    p.add_argument("--num-workers", type=int, default=1, help="embedding actors (models)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--decode-cpus", type=float, default=0.5, help="CPUs per decoding task")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--window", default="average", choices=list(WINDOW_MODES))
    p.add_argument("--int16-roundtrip", action="store_true")
    p.add_argument("--rows-per-shard", type=int, default=10_000)
    p.add_argument("--retry-failed", action="store_true", help="redo paths written with an error")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = embed_distributed(
            args.out,
            dataset=args.dataset,
            data_root=args.data_root,
            files=args.files,
            model=args.model,
            revision=args.revision,
            precision=args.precision,
            window=args.window,
            int16_roundtrip=args.int16_roundtrip,
            address=args.address,
            num_workers=args.num_workers,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            decode_cpus=args.decode_cpus,
            batch_size=args.batch_size,
            rows_per_shard=args.rows_per_shard,
            retry_failed=args.retry_failed,
            model_options={
                k: v for k, v in (("family", args.family), ("text_model", args.text_model)) if v
            },
        )
    except (DistributedError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = summary["metadata"]
    print(
        f"{summary['out_dir']}: {summary['n_paths']} clips, {summary['n_skipped']} already "
        f"written, {summary['n_embedded']} embedded, {summary['n_failed']} failed, "
        f"{summary['n_missing']} missing; {summary['seconds']:.1f} s "
        f"({summary['clips_per_s']:.1f} clips/s); {meta['model']} {meta['precision']} "
        f"on {meta['device']}"
    )
    return 0 if summary["n_missing"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
