"""Throughput of the CLAP log-mel front-end: transformers' ClapFeatureExtractor vs LogMelFrontend.

Usage::

    .venv/bin/python benchmarks/bench_frontend.py [--clips 64] [--seconds 5] [--batch 32]

Prints clips/s of the extractor (numpy, one clip per call, float64 inside; timed on the first
``--ref-clips`` clips) and of
:class:`clap_helpers.embedding.frontend.LogMelFrontend` (torch, ``--batch`` clips per call, float32 STFT and
float64 STFT) on ``--device`` (CPU by default), their ratio, and the max |difference| in dB.
Each figure is the best of ``--repeats`` timed passes after one warm-up pass; CPU-ms/clip (process
CPU time) is less sensitive than clips/s to other jobs sharing the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import ClapFeatureExtractor

from clap_helpers.embedding.frontend import LogMelFrontend

SR = 48_000


def _best(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time (s) of ``repeats`` calls after a warm-up."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clips", type=int, default=64, help="clips per LogMelFrontend pass")
    p.add_argument("--ref-clips", type=int, default=16, help="clips per extractor pass (slow)")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length, s (48 kHz)")
    p.add_argument("--batch", type=int, default=32, help="LogMelFrontend batch size")
    p.add_argument("--truncation", default="rand_trunc", choices=["rand_trunc", "fusion"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n = int(args.seconds * SR)
    clips = (0.1 * rng.standard_normal((args.clips, n))).astype(np.float32)
    fe = ClapFeatureExtractor(truncation=args.truncation)

    def run_extractor():
        return [
            fe(c, sampling_rate=SR, return_tensors="np", truncation=args.truncation)[
                "input_features"
            ]
            for c in clips[: args.ref_clips]
        ]

    device = torch.device(args.device)

    def run_frontend(frontend):
        def run():
            out = []
            for i in range(0, args.clips, args.batch):
                x = torch.from_numpy(clips[i : i + args.batch])
                out.append(frontend(x).input_features.cpu())
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    print(
        f"{args.clips} clips of {args.seconds:g} s at 48 kHz, truncation={args.truncation}, "
        f"device={device}, torch threads={torch.get_num_threads()}"
    )
    t_ref, c_ref = _best(run_extractor, args.repeats)
    ref = np.concatenate(run_extractor())
    ref_rate = args.ref_clips / t_ref
    print(
        f"ClapFeatureExtractor (numpy, per clip):  {ref_rate:8.1f} clips/s"
        f"  ({1000 * c_ref / args.ref_clips:6.1f} CPU-ms/clip)"
    )
    for dtype in (torch.float32, torch.float64):
        frontend = LogMelFrontend(args.truncation, stft_dtype=dtype).to(device)
        run = run_frontend(frontend)
        t, c = _best(run, args.repeats)
        diff = np.abs(torch.cat(run())[: len(ref)].numpy() - ref).max()
        rate = args.clips / t
        print(
            f"LogMelFrontend ({str(dtype)[6:]} STFT, batch {args.batch}): "
            f"{rate:8.1f} clips/s  ({1000 * c / args.clips:6.1f} CPU-ms/clip)"
            f"  x{rate / ref_rate:5.1f}  max |diff| {diff:.1e} dB"
        )


if __name__ == "__main__":
    main()
