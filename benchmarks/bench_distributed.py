"""Benchmark of the Ray Data scale-out (``clap_helpers.embedding.distributed``) against the single-process
engine, same model and clips, on this machine.

Usage::

    .venv/bin/python benchmarks/bench_distributed.py [--clips 200] [--seconds 5] [--full-clips 50]
        [--workers 1,2] [--batch-size 8] [--address ADDR] [--workdir DIR]

What it prints, per model (the tiny fixture CLAP on ``--clips`` clips, then, unless
``--full-clips 0``, a full-size random ``ClapConfig()`` model on ``--full-clips`` clips):

- single: ``load_clap(model, precision="fp32").embed_audio(paths, cache_dir=False)``, end to end
  (model load included) and the embedding alone.
- ray N: ``embed_distributed(out, paths, num_workers=N)`` into a fresh folder, end to end (the
  model probe, actor start-up with one model load per actor, decoding tasks, Parquet writes);
  clips/s = clips / that wall time. The gap to ``single`` at small scale is Ray's overhead.
- ray start: seconds to start the local Ray (or to connect, with ``--address``).

Workers get ``(cores - 0.5) / N`` CPUs each (decoding tasks 0.5), so a 2-core machine is never
oversubscribed by Ray; the single-process engine uses torch's default threads. fp32 everywhere.
Clips are synthetic 44.1 kHz WAVs (resampled to 48 kHz), built as in bench_embedding.py. Timings
on a shared machine are noisy: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embedding import prepare_clips, prepare_model  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=200, help="clips for the tiny model")
    p.add_argument("--full-clips", type=int, default=50, help="clips for the full-size model")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    p.add_argument("--workers", default="1,2", help="Ray worker counts to time")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: local)")
    p.add_argument("--workdir", default=None, help="keep clips and models here (reused)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def single(model: Path, paths: list[str], batch_size: int) -> dict:
    from clap_helpers.embedding.loading import load_clap

    t0 = time.perf_counter()
    enc = load_clap(model, precision="fp32")
    t1 = time.perf_counter()
    emb = enc.embed_audio(paths, batch_size=batch_size, cache_dir=False, progress=False)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "wall_s": t2 - t0, "clips_per_s": len(paths) / (t2 - t1), "E": emb}


def distributed(model, paths, workers, batch_size, cores, out: Path) -> dict:
    from clap_helpers.embedding import distributed as D

    shutil.rmtree(out, ignore_errors=True)
    decode = 0.5
    per_worker = min(1.0, (cores - decode) / workers) if cores > 1 else 0.5 / workers
    t0 = time.perf_counter()
    s = D.embed_distributed(
        out, paths, model=model, precision="fp32", num_workers=workers,
        cpus_per_worker=per_worker, decode_cpus=decode, batch_size=batch_size,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    E = D.read_embeddings(out, paths)
    return {"wall_s": wall, "clips_per_s": len(paths) / wall, "E": E, "missing": s["n_missing"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from clap_helpers.devtools.fixtures import make_tiny_clap
    from clap_helpers.embedding import distributed as D

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_dist_"))
    work.mkdir(parents=True, exist_ok=True)
    workers = [int(w) for w in args.workers.split(",")]
    repo = Path(__file__).resolve().parents[1]
    env = {"env_vars": {"PYTHONPATH": str(repo)}}
    t0 = time.perf_counter()
    if args.address:
        ray.init(address=args.address, runtime_env=env)
    else:
        D.init_local_ray(runtime_env=env)
    ray_start = time.perf_counter() - t0
    cores = ray.cluster_resources().get("CPU", os.cpu_count())
    runs = [("tiny CLAP", make_tiny_clap(work / "tiny_model"), args.clips)]
    if args.full_clips:
        runs.append(("full-size ClapConfig()", prepare_model(work / "full_model", args.seed),
                     args.full_clips))  # fmt: skip
    rows = []
    try:
        for name, model, n in runs:
            paths = [str(p) for p in prepare_clips(work / "clips", n, args.seconds, args.seed)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = single(model, paths, args.batch_size)
                rows.append((name, n, "single, end to end", ref["wall_s"], n / ref["wall_s"], 0.0))
                rows.append((name, n, "single, embed only", ref["wall_s"] - ref["load_s"],
                             ref["clips_per_s"], 0.0))  # fmt: skip
                for w in workers:
                    r = distributed(model, paths, w, args.batch_size, cores, work / "out")
                    diff = float(np.nanmax(np.abs(r["E"] - ref["E"])))
                    rows.append((name, n, f"ray, {w} worker(s)", r["wall_s"], r["clips_per_s"],
                                 diff))  # fmt: skip
    finally:
        ray.shutdown()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nray {ray.__version__}; {'connect' if args.address else 'local start'}: "
          f"{ray_start:.1f} s; cluster CPUs {cores:g}; load average {os.getloadavg()}")  # fmt: skip
    print(f"{'model':24} {'clips':>5} {'engine':20} {'wall s':>8} {'clips/s':>8} {'max|diff|':>10}")
    for name, n, engine, wall, cps, diff in rows:
        print(f"{name:24} {n:5d} {engine:20} {wall:8.1f} {cps:8.2f} {diff:10.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
