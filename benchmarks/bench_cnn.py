"""Seconds per training epoch of the notebook-09 CNNs on ESC-50-shaped data, on this machine.

Usage::

    .venv/bin/python benchmarks/bench_cnn.py [--models cnn4,cnn8,resnet18] [--threads 1]
        [--steps 3] [--json out.json]

One ESC-50 epoch of :func:`clap_helpers.supervised.protocol.train_folds` (4 training folds = 1600 clips of 5 s at
44.1 kHz, resampled to 48 kHz -> log-mel (1, 501, 64)) is a training pass over 1440 clips (10 %
of the training folds are held out) plus an evaluation pass over 560 clips (160 validation + 400
test). The benchmark times ``--steps`` training steps (batch ``--batch``, SpecAugment crop to 90 %
of the frames, masks, forward, cross-entropy, backward, AdamW) and ``--steps`` evaluation batches
(2 x batch, whole clips) on random features, each after one warm-up step, and **extrapolates**
to the full epoch: ``train s/epoch = s/step x ceil(1440 / batch)``, ``eval s/epoch = s/batch x
ceil(560 / (2 x batch))``. Feature extraction is not included (it runs once and is cached; see
benchmarks/bench_frontend.py). Prints a table and, with ``--json``, writes the numbers. Besides
wall time it reports the process CPU time per epoch: on a shared, busy machine the wall time
grows with the load, while the CPU time with ``--threads 1`` is what one idle core would take.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clap_helpers import supervised

TRAIN_CLIPS = 1440  # 4 ESC-50 folds (1600) minus the 10 % validation split
EVAL_CLIPS = 560  # 160 validation + 400 test clips


def _time_per_call(fn, steps: int) -> tuple[float, float]:
    """(wall s, process CPU s) per call of ``fn``, after one warm-up call."""
    fn()  # warm-up (oneDNN primitive creation, allocator)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def bench_model(name: str, shape: tuple[int, ...], batch: int, steps: int, device: str) -> dict:
    """Seconds per training step and per evaluation batch of model ``name`` on ``shape`` inputs."""
    torch.manual_seed(0)
    model = supervised.build_model(name, 50).to(device)
    model.set_input_stats(-40.0, 15.0)
    augment = supervised.SpecAugment(fill=-40.0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    x = (torch.randn(batch, *shape) * 15 - 40).to(device)
    y = torch.randint(0, 50, (batch,), device=device)
    x_eval = (torch.randn(2 * batch, *shape) * 15 - 40).to(device)

    def train_step():
        model.train()
        loss = F.cross_entropy(model(augment(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    @torch.no_grad()
    def eval_batch():
        model.eval()
        model(x_eval).argmax(1).cpu()

    (step_s, step_cpu), (eval_s, eval_cpu) = (
        _time_per_call(train_step, steps),
        _time_per_call(eval_batch, steps),
    )
    n_train, n_eval = math.ceil(TRAIN_CLIPS / batch), math.ceil(EVAL_CLIPS / (2 * batch))
    return {
        "model": name,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "s_per_train_step": step_s,
        "s_per_eval_batch": eval_s,
        "train_s_per_epoch": step_s * n_train,
        "eval_s_per_epoch": eval_s * n_eval,
        "s_per_epoch": step_s * n_train + eval_s * n_eval,
        "cpu_s_per_epoch": step_cpu * n_train + eval_cpu * n_eval,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--models", default=",".join(supervised.MODELS), help="comma-separated model names"
    )
    p.add_argument("--batch", type=int, default=32, help="training batch (eval uses 2x)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per model, after a warm-up")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length, s")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frontend = supervised.make_frontend(args.seconds)
    shape = (frontend.n_channels, frontend.n_frames, frontend.n_mels)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, load {load:.1f}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
        f"input {shape}, batch {args.batch}; epoch = {TRAIN_CLIPS} training + {EVAL_CLIPS} "
        f"evaluation clips, extrapolated from {args.steps} timed steps"
    )
    rows = []
    for name in supervised.model_names(args.models.split(",")):
        row = bench_model(name, shape, args.batch, args.steps, args.device)
        rows.append(row)
        print(
            f"{name:9s} {row['params_M']:5.2f} M params  train {row['s_per_train_step']:6.2f} "
            f"s/step -> {row['train_s_per_epoch']:7.1f} s  + eval {row['eval_s_per_epoch']:6.1f} s"
            f"  = {row['s_per_epoch']:7.1f} s/epoch ({row['s_per_epoch'] / 60:.1f} min); "
            f"CPU time {row['cpu_s_per_epoch']:7.1f} s/epoch",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": load,
            "device": args.device,
            "input_shape": list(shape),
            "batch": args.batch,
            "train_clips": TRAIN_CLIPS,
            "eval_clips": EVAL_CLIPS,
            "timed_steps": args.steps,
            "extrapolated": True,
        }
        args.json.write_text(json.dumps({**meta, "models": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
