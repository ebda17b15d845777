"""Benchmark of the CLAP audio-embedding engine (``clap_helpers.embedding.encoder``) against the naive loop.

Usage::

    .venv/bin/python benchmarks/bench_embedding.py [--clips 2000] [--naive-clips 32]
        [--batch-size 32] [--device auto] [--precision auto] [--workers N] [--small 100]
        [--floor-clips N] [--sweep 1,4,32] [--threads N] [--seconds 5] [--seed 0]
        [--workdir DIR] [--model DIR_OR_HUB_ID] [--json out.json]

A full default run on a 2-core CPU takes about 10 minutes (the big run dominates); use e.g.
``--clips 500`` for a quicker one. ``make bench`` runs it with the defaults.

What it measures, on the same machine in one run (clips/s is always per clip):

1. naive: the original course project's loop, one clip at a time -- ``load_audio`` (soundfile +
   soxr to 48 kHz), transformers' ``ClapProcessor`` (numpy feature extractor) on that clip, then
   ``model.get_audio_features`` with batch size 1 in fp32. Runs on ``--naive-clips`` clips only
   (after one untimed warm-up clip).
2. pipeline: ``load_clap(model, device, precision).embed_audio(paths, batch_size, cache_dir=<fresh
   empty folder>)`` end to end: decode workers, torch front-end, batched model, cache writes.
   It runs twice: on the first ``--small`` clips (doubles as warm-up), then on all ``--clips``
   clips with another empty cache; the figures are those of the big run.
   Where the family's front-end runs in the decode workers (LAION-CLAP on a CPU), the big run
   is repeated with it in the main process (``enc.features_in_workers = False``) for comparison.
3. forward-only floor: the model alone (``get_audio_features`` + normalise + copy to the host,
   as ``ClapEncoder._tower_forward`` does after the front-end) on features (B, 1, 1001, 64)
   computed beforehand, same device, precision and batch size as the pipeline (with two
   streams each stream gets its own batch per step, as the pipeline gives them: OpenVINO in one
   call, eager PyTorch as two calls at once). ``--sweep`` repeats it at other batch sizes (the
   best model batch size differs between CPUs and GPUs).
4. cached: the pipeline again on the big run's files and cache (every row is a cache hit).
5. memory: peak resident set (``getrusage`` ``ru_maxrss``) of the benchmark process and of its
   reaped children (the decode workers), current RSS, and the growth from the small to the big run.
   Forked workers share the parent's pages copy-on-write and ``ru_maxrss`` counts those, so the
   workers' own (private) memory is also sampled from ``/proc`` (Linux).

While the big run goes, the engine's calls are timed (front-end, model, cache; the rest of the
time is spent waiting for decoded batches or in bookkeeping), which shows where the pipeline's
time goes. The probes add a few timer calls per batch (and a device sync on GPUs). Every stage
also reports its CPU seconds (this process plus the decode workers), the kernel ("sys") part and
the minor page faults per clip: CPU seconds are far less disturbed by other processes than wall
time, and the page faults show memory that the allocator hands back to the kernel and faults in
again on every batch.

Data: ``--clips`` synthetic clips (``--seconds`` s, 44.1 kHz, 16-bit mono WAV, distinct
deterministic content) and, unless ``--model`` names a checkpoint, a full-size ``ClapConfig()``
model (same shapes and FLOPs as ``laion/clap-htsat-unfused``) with seeded random weights, saved
with ``save_pretrained`` next to a ``ClapFeatureExtractor(truncation="rand_trunc",
padding="repeatpad")`` and the tiny fixture model's tokenizer, so ``load_clap`` loads it like a hub
checkpoint. Everything is written to a temporary folder (deleted afterwards) or to ``--workdir``
(kept and reused by later runs). The measurements run in a child process, so the peak-memory
figures do not include building the random model.

Targets (PASS/MISS): CPU -- pipeline >= 3x naive, floor/pipeline <= 1.25, cached re-run < 2 s,
peak RSS growth from the small to the big run <= 300 MB; GPU -- also 2000 clips end to end
< 15 s (scaled from ``--clips``) and pipeline >= 20x naive. Timings on a shared machine are noisy:
the load average before and after is printed with the results.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CLIPS_VERSION = 2  # bump when the synthetic clips change (kept --workdir data is then redone)
MODEL_VERSION = 1  # same for the random model
FILE_RATE = 44_100  # Hz, the synthetic WAV files' rate (resampled to 48 kHz by load_audio)
FLOOR_BATCHES = {"cpu": 4, "other": 32}  # default floor length, in batches
MEMORY_GROWTH_LIMIT_MB = 300.0
CACHED_LIMIT_S = 2.0
GPU_RUN_LIMIT_S = 15.0  # for 2000 clips end to end
REFERENCE_CLIPS = 2000
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc tunables
MALLOC_TUNED_BYTES = 4 * 2**30


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for what each figure means.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clips", type=int, default=REFERENCE_CLIPS, help="pipeline clips (big run)")
    p.add_argument("--naive-clips", type=int, default=32, help="clips for the naive loop")
    p.add_argument("--small", type=int, default=100, help="clips of the small (warm-up) run")
    p.add_argument(
        "--floor-clips",
        type=int,
        default=None,
        help="clips for the floor (None: 4 batches on CPU, 32 on a GPU)",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="embed_audio's batch_size (decode and model)"
    )
    p.add_argument(
        "--sweep",
        type=_int_list,
        default=None,
        metavar="B1,B2,...",
        help="also time the floor at these batch sizes, e.g. 1,4,8,16,32",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument(
        "--backends",
        type=lambda t: [b.strip() for b in t.split(",") if b.strip()],
        default=["torch", "openvino"],
        metavar="B1,B2",
        help="backends of the pipeline (torch, openvino, auto); the first gets the full report "
        "(small, probed big and cached runs), the others a big run and a forward-only floor",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=0,
        metavar="N",
        help="also compare N model processes x 1 thread with 1 process x N threads (forward "
        "only, each backend; checks the embeddings are bit-identical)",
    )
    p.add_argument("--workers", type=int, default=None, help="decode workers (engine default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each synthetic clip")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips and the random model")
    p.add_argument(
        "--model",
        default=None,
        help="use this checkpoint (folder or hub id) instead of the random full-size "
        "ClapConfig() model",
    )
    p.add_argument("--workdir", default=None, help="keep clips and model here and reuse them")
    p.add_argument(
        "--tune-malloc",
        action="store_true",
        help="measure with glibc's MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set to "
        "4 GiB (big tensors stay in the heap instead of being unmapped and faulted in again)",
    )
    p.add_argument("--json", default=None, help="write every number to this JSON file")
    p.add_argument("--report", default=None, help="only print the report of this --json file")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)  # internal: plan file
    args = p.parse_args(argv)
    for name in ("clips", "naive_clips", "small", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.floor_clips is not None and args.floor_clips < 1:
        p.error("--floor-clips must be >= 1")
    if args.workers is not None and args.workers < 0:
        p.error("--workers must be >= 0")
    return args


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,32, got {text!r}")
    return values


# ----------------------------------------------------------------------------------------------
# Machine facts and memory
# ----------------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set (MB) of this process or of its largest reaped child."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def current_rss_mb() -> float | None:
    gc.collect()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _children_private_mb(parent: int) -> float:
    """Sum of the private (not shared) memory of ``parent``'s live children, MB (Linux)."""
    total_kb = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry.name}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total_kb / 1024


class ChildMemorySampler:
    """Samples the children's private memory every ``interval`` s in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set():
            mb = _children_private_mb(pid)
            self.peak_mb = mb if self.peak_mb is None else max(self.peak_mb, mb)
            self._stop.wait(self.interval)

    def __enter__(self) -> ChildMemorySampler:
        if Path("/proc/self/smaps_rollup").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# ----------------------------------------------------------------------------------------------
# Data: synthetic clips and a full-size random-weight checkpoint
# ----------------------------------------------------------------------------------------------
def make_clip(index: int, seconds: float, seed: int) -> np.ndarray:
    """Clip ``index``: int16 mono at 44.1 kHz; a few tones under a slow tremolo, over noise.

    Deterministic in (seed, index); every index gets its own tones, tremolo, noise level, onset
    and gain. float32 maths and a 10 ms-step envelope keep it at a few ms per clip.
    """
    rng = np.random.default_rng([seed, index])
    n = int(round(seconds * FILE_RATE))
    t = np.arange(n, dtype=np.float32) / np.float32(FILE_RATE)
    tones = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(2, 5))):
        omega = np.float32(2 * np.pi * 80.0 * 2 ** rng.uniform(0, 6))  # 80 Hz .. 5 kHz
        tones += np.float32(rng.uniform(0.1, 1.0)) * np.sin(
            omega * t + np.float32(rng.uniform(0, 6.3))
        )
    step = FILE_RATE // 100  # envelope: one value per 10 ms
    steps = np.arange(n // step + 1) * (step / FILE_RATE)
    rate, depth = rng.uniform(0.3, 8.0), rng.uniform(0.0, 0.9)
    env = 1.0 - depth * 0.5 * (1.0 + np.sin(2 * np.pi * rate * steps + rng.uniform(0, 6.3)))
    onset = rng.uniform(0.0, 0.3) * seconds
    env *= np.clip(steps / max(onset, 1e-3), 0.0, 1.0) ** 2  # fade in until the onset time
    x = tones * np.repeat(env.astype(np.float32), step)[:n]
    x += np.float32(rng.uniform(0.01, 0.3)) * rng.standard_normal(n, dtype=np.float32)
    x *= np.float32(rng.uniform(0.2, 0.9) / max(float(np.abs(x).max()), 1e-9))
    return np.round(x * 32767).astype(np.int16)


def prepare_clips(folder: Path, count: int, seconds: float, seed: int) -> list[Path]:
    """Write (or reuse) ``count`` clips in ``folder``; returns their paths in order."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{i:05d}.wav" for i in range(count)]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        log(f"writing {len(todo)} synthetic clips ({seconds:g} s, 44.1 kHz int16) to {folder}")
    for i in todo:
        tmp = paths[i].with_suffix(".tmp")
        sf.write(tmp, make_clip(i, seconds, seed), FILE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, paths[i])
    return paths


def prepare_model(folder: Path, seed: int) -> Path:
    """Save (or reuse) a full-size ``ClapConfig()`` model with seeded random weights."""
    import torch
    import transformers
    from transformers import (
        AutoTokenizer,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
    )

    from clap_helpers.devtools.fixtures import make_tiny_clap

    done = folder / "bench_model.json"
    if done.is_file():
        return folder
    log(f"building a full-size ClapConfig() model with random weights (seed {seed}) in {folder}")
    transformers.utils.logging.disable_progress_bar()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tiny = make_tiny_clap(folder.parent / f"{folder.name}-tiny-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tiny)  # the fixture's tokenizer files, reused
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig()).eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    gc.collect()
    extractor = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    done.write_text(json.dumps({"seed": seed, "parameters": params, "version": MODEL_VERSION}))
    return folder


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Measurements (run in a child process)
# ----------------------------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Probe:
    """Wall and process CPU time spent inside selected engine calls, by name."""

    def __init__(self, device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.first: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            self.first.setdefault(name, t0)
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(self.device)
                self.seconds[name] += time.perf_counter() - t0
                self.cpu[name] += time.process_time() - c0
                self.calls[name] += 1

        return timed


class Usage:
    """CPU use between ``start()`` and ``stop()``: this process's user and system seconds and
    minor page faults, and the CPU seconds of children reaped meanwhile (the decode workers)."""

    @staticmethod
    def _now() -> np.ndarray:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return np.array([me.ru_utime, me.ru_stime, me.ru_minflt, kids.ru_utime + kids.ru_stime])

    def start(self) -> Usage:
        self._t0 = self._now()
        return self

    def stop(self) -> dict:
        user, system, faults, children = (self._now() - self._t0).tolist()
        return {
            "cpu_s": user + system,
            "sys_s": system,
            "minor_faults": int(faults),
            "workers_cpu_s": children,
        }


class _Timed:
    """A backend whose calls go through ``timed``; its attributes are the backend's."""

    def __init__(self, inner, timed):
        self._inner, self._timed = inner, timed

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, *feats):
        return self._timed(*feats)


@contextmanager
def probed(enc):
    """Time ``enc``'s front-end, model, per-batch work and cache calls during the block."""
    from clap_helpers.embedding.cache import EmbeddingStore

    probe = Probe(enc.device)
    enc._embed_clips = probe.wrap("batch", enc._embed_clips)
    family = enc.family  # any model family
    family.features = probe.wrap("frontend", family.features)
    backend = enc.backend  # any backend (OpenVINO never calls the tower's forward)
    enc.backend = _Timed(backend, probe.wrap("model", backend))
    originals = {name: getattr(EmbeddingStore, name) for name in ("lookup", "add", "flush")}
    for name, fn in originals.items():
        setattr(EmbeddingStore, name, probe.wrap(f"cache_{name}", fn))
    try:
        yield probe
    finally:
        del enc._embed_clips, family.features
        enc.backend = backend
        for name, fn in originals.items():
            setattr(EmbeddingStore, name, fn)


def run_pipeline(
    enc, paths, batch_size, cache_dir, device, probe_it=False
) -> tuple[dict, np.ndarray]:
    """One ``embed_audio`` call with a timer, memory figures and (optionally) the probes."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with ChildMemorySampler() as workers_mem:
        _sync(device)
        with probed(enc) if probe_it else _nothing() as probe:
            usage = Usage().start()
            t0 = time.perf_counter()
            emb = enc.embed_audio(paths, batch_size=batch_size, cache_dir=cache_dir, progress=False)
            _sync(device)
            seconds = time.perf_counter() - t0
            used = usage.stop()
    out = {
        "clips": len(paths),
        "seconds": seconds,
        "clips_per_s": len(paths) / seconds,
        **used,
        "failures": len(enc.failures),
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb": current_rss_mb(),
        "children_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "workers_private_peak_mb": workers_mem.peak_mb,
    }
    if device.type == "cuda":
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if probe is not None:
        out["breakdown"] = breakdown(probe, t0, out)
    return out, emb


@contextmanager
def _nothing():
    yield None


def breakdown(probe: Probe, t0: float, run: dict) -> dict:
    """Split a probed run's wall and CPU time into model, front-end, collation, cache, waiting."""
    parts = {}
    for kind, got, total in (("seconds", probe.seconds, run["seconds"]),
                             ("cpu_s", probe.cpu, run["cpu_s"])):  # fmt: skip
        cache = got["cache_lookup"] + got["cache_add"] + got["cache_flush"]
        parts[kind] = {
            "model": got["model"],
            "frontend": got["frontend"],
            "collation_pooling": got["batch"] - got["model"] - got["frontend"],
            "cache": cache,
            "waiting_for_decode_and_other": total - got["batch"] - cache,
        }
    first = probe.first.get("batch")
    return {
        **parts,
        "ms_per_clip": {k: 1e3 * v / run["clips"] for k, v in parts["seconds"].items()},
        "fraction": {k: v / run["seconds"] for k, v in parts["seconds"].items()},
        "model_calls": probe.calls["model"],
        "time_to_first_batch_s": None if first is None else first - t0,
    }


def run_naive(model, processor, paths, device) -> tuple[dict, np.ndarray]:
    """The course project's loop: decode, numpy extractor, fp32 model, one clip at a time."""
    import torch.nn.functional as F

    from clap_helpers.data.audio import CLAP_SAMPLE_RATE, load_audio

    def one(path) -> np.ndarray:
        x = load_audio(path, CLAP_SAMPLE_RATE)
        inputs = processor(audio=x, sampling_rate=CLAP_SAMPLE_RATE, return_tensors="pt")
        kwargs = {"is_longer": inputs["is_longer"].to(device)} if "is_longer" in inputs else {}
        out = model.get_audio_features(input_features=inputs["input_features"].to(device), **kwargs)
        emb = out.pooler_output if hasattr(out, "pooler_output") else out
        return F.normalize(emb.float(), dim=-1).cpu().numpy()[0]

    return _time_one_by_one(one, paths, device)


def _time_one_by_one(one, paths, device) -> tuple[dict, np.ndarray]:
    """Time ``one(path) -> (D,)`` over ``paths`` in fp32 without gradients, after one untimed
    warm-up call: (stats, (N, D) embeddings). The naive loops of both model kinds use it."""
    import torch

    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        one(paths[0])  # warm-up, untimed
        _sync(device)
        usage, t0 = Usage().start(), time.perf_counter()
        rows = [one(p) for p in paths]
        _sync(device)
        seconds, used = time.perf_counter() - t0, usage.stop()
    stats = {"clips": len(paths), "seconds": seconds, "clips_per_s": len(paths) / seconds}
    return {**stats, **used}, np.stack(rows)


def run_naive_family(enc, paths, device) -> tuple[dict, np.ndarray]:
    """The naive loop for a family without a transformers processor path here: decode, the
    family's front-end and audio tower, one clip at a time, fp32."""
    import torch
    import torch.nn.functional as F

    from clap_helpers.data.audio import load_audio

    def one(path) -> np.ndarray:
        x = torch.from_numpy(load_audio(path, enc.sample_rate))[None]
        emb = enc.family.audio_tower(*enc.family.features(x, torch.tensor([x.shape[1]])))
        return F.normalize(emb.float(), dim=-1).cpu().numpy()[0]

    return _time_one_by_one(one, paths, device)


def floor_features(enc, paths, batch_size):
    """The audio tower's inputs (any model family) for one batch of ``batch_size`` clips, and
    the front-end's time for it."""
    from clap_helpers.data.audio import load_audio
    from clap_helpers.embedding.frontend import batch_from_list

    clips = [load_audio(p, enc.sample_rate) for p in paths[:batch_size]]
    while len(clips) < batch_size:  # fewer files than a batch: repeat them
        clips.append(clips[len(clips) % len(paths)])
    waveforms, lengths = batch_from_list(clips)
    t0 = time.perf_counter()
    feats = enc._features(waveforms, lengths)  # family.features
    _sync(enc.device)
    return feats, time.perf_counter() - t0


def run_floor(enc, paths, batch_size, n_clips, device, backend=None) -> dict:
    """Model only (``backend(*feats)`` + normalise + copy to the host, as ``_audio_forward``
    does after the front-end) on features made beforehand; default backend: the encoder's."""
    import torch.nn.functional as F

    backend = backend or enc.backend
    feats, frontend_s = floor_features(enc, paths, batch_size)
    frontend_ms = 1e3 * frontend_s / batch_size
    streams = getattr(backend, "streams", 1)  # streams each run their own batch: give every
    batch_size *= streams  # stream one per step, as the pipeline does

    def step():
        return F.normalize(forward_in_streams(backend, feats, streams).float(), dim=-1).cpu()

    step()  # warm-up
    batches = max(1, math.ceil(n_clips / batch_size))
    _sync(device)
    usage, t0 = Usage().start(), time.perf_counter()
    for _ in range(batches):
        emb = step()
    _sync(device)
    seconds, used = time.perf_counter() - t0, usage.stop()
    clips_done = batches * batch_size
    return {
        "batch_size": batch_size,
        "clips": clips_done,
        "batches": batches,
        "seconds": seconds,
        "clips_per_s": clips_done / seconds,
        "ms_per_window": 1e3 * seconds / clips_done,
        **used,
        "feature_shape": [list(f.shape) for f in feats],
        "frontend_ms_per_clip": frontend_ms,  # one batch, for reference
        "embeddings": emb[: batch_size // streams].numpy().tolist(),  # one copy of the batch
    }


def forward_in_streams(backend, feats: tuple, streams: int):
    """``streams`` copies of the batch ``feats`` through ``backend``, one per stream, as the
    encoder runs them: OpenVINO gets them in one call (its own streams), eager PyTorch as
    separate calls in :func:`clap_helpers.embedding.backends.run_in_streams`. -> (streams * B, D)."""
    import torch

    from clap_helpers.embedding.backends import call_streams, run_in_streams

    if streams <= 1:
        return backend(*feats)
    if call_streams(backend) == 1:  # it batches itself: all in one call, its own streams
        return backend(*(torch.cat([f] * streams) for f in feats))
    return torch.cat(run_in_streams([lambda: backend(*feats)] * streams, streams))


def decode_cost(paths, n: int = 16) -> float:
    """Milliseconds per clip to decode + resample in this process (single-threaded, serial)."""
    from clap_helpers.data.audio import CLAP_SAMPLE_RATE, load_audio

    sample = paths[: max(1, min(n, len(paths)))]
    load_audio(sample[0], CLAP_SAMPLE_RATE)
    t0 = time.perf_counter()
    for p in sample:
        load_audio(p, CLAP_SAMPLE_RATE)
    return 1e3 * (time.perf_counter() - t0) / len(sample)


def load_backend(plan, args, device, backend, models) -> tuple:
    """``load_clap`` with ``backend``; its first-call cost, and (if it converted) a second load
    that reads the converted model from the cache."""
    import clap_helpers

    def load():
        t0 = time.perf_counter()
        enc = clap_helpers.load_clap(
            plan["model"], device=device, precision=args.precision, num_workers=args.workers,
            backend=backend, cache_dir=models,
        )  # fmt: skip
        _sync(device)
        return enc, time.perf_counter() - t0

    log(f"loading with backend={backend}")
    enc, seconds = load()
    b = enc.backend
    info = {
        "requested": backend,
        "backend": repr(b),
        "key": b.key,
        "precision": enc.precision,
        "load_s": seconds,
        "conversion_s": b.conversion_s,
        "compile_s": b.compile_s,
        "probe_cosine": b.cosine,
    }
    if b.conversion_s > 0:
        enc, info["reload_s"] = load()
        info["reload_backend"] = repr(enc.backend)
    log(f"  {enc.backend!r}, load {seconds:.1f} s, cached reload {info.get('reload_s', 0):.1f} s")
    return enc, info


def forward_variants(enc, paths, batch, n_clips, device, backends: dict) -> list[dict]:
    """Forward-only floor of eager fp32, eager bf16 (autocast, and bf16 weights on a CPU) and
    each loaded backend, on the same features: clips/s, ratio to eager bf16 autocast, cosine to
    eager fp32 (least over the batch)."""
    from clap_helpers.embedding.backends import TorchBackend

    tower = enc.family.audio_tower  # any model family
    variants = {
        "eager fp32": TorchBackend(tower, device, "fp32"),
        "eager bf16 autocast": TorchBackend(tower, device, "bf16", weights=False),
    }
    if device.type == "cpu":
        variants["eager bf16 weights"] = TorchBackend(tower, device, "bf16", weights=True)
    variants.update({f"backend {n} ({b.key})": b for n, b in backends.items()})
    rows = []
    for name, backend in variants.items():
        log(f"  forward: {name}")
        rows.append({"name": name, **run_floor(enc, paths, batch, n_clips, device, backend)})
    ref = np.array(rows[0]["embeddings"])
    base = rows[1]["clips_per_s"]
    for r in rows:
        r["cosine_to_fp32"] = float(np.min(np.sum(np.array(r.pop("embeddings")) * ref, axis=1)))
        r["vs_eager_bf16"] = r["clips_per_s"] / base
    return rows


def _parallel_worker(plan, precision, backend, models, batch, n_batches, threads, barrier, queue):
    """One model process: ``threads`` threads, ``n_batches`` forward calls after a barrier."""
    import torch
    import torch.nn.functional as F

    import clap_helpers

    torch.set_num_threads(threads)
    enc = clap_helpers.load_clap(
        plan["model"], "cpu", precision, backend=backend, cache_dir=models, num_workers=0
    )
    feats, _ = floor_features(enc, plan["paths"], batch)
    streams = getattr(enc.backend, "streams", 1)  # one batch per stream and step
    forward_in_streams(enc.backend, feats, streams)  # warm-up
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(n_batches):
        emb = F.normalize(forward_in_streams(enc.backend, feats, streams).float(), dim=-1)
    queue.put((time.perf_counter() - t0, n_batches * batch * streams, emb[:batch].numpy()))


def run_parallel(plan, args, info, models, batch, n) -> dict:
    """Forward throughput of 1 process x ``n`` threads vs ``n`` processes x 1 thread (same
    backend and precision, explicit), and whether their embeddings are bit-identical."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    backend = "openvino" if info["key"].startswith("openvino") else "torch"
    n_batches = max(4, math.ceil(64 / batch))
    out, embs = {}, []
    for procs, threads in ((1, n), (n, 1)):
        log(f"parallel: {backend}, {procs} process(es) x {threads} thread(s)")
        barrier, queue = ctx.Barrier(procs), ctx.Queue()
        workers = [
            ctx.Process(
                target=_parallel_worker,
                args=(
                    plan,
                    info["precision"],
                    backend,
                    models,
                    batch,
                    n_batches,
                    threads,
                    barrier,
                    queue,
                ),
            )  # fmt: skip
            for _ in range(procs)
        ]
        for w in workers:
            w.start()
        results = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        slowest = max(s for s, _, _ in results)
        out[f"{procs}x{threads}"] = sum(n for _, n, _ in results) / slowest
        embs += [e for _, _, e in results]
    out["ratio"] = out[f"{n}x1"] / out[f"1x{n}"]
    out["bit_identical"] = all(np.array_equal(embs[0], e) for e in embs[1:])
    return out


def measure(plan: dict) -> dict:
    """Everything but the data preparation; ``plan`` holds the arguments and the data paths."""
    import torch
    import transformers
    from transformers import ClapProcessor

    from clap_helpers.embedding.backends import BackendUnavailable
    from clap_helpers.embedding.devices import resolve_device

    args = argparse.Namespace(**plan["args"])
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars in the log
    if args.threads:
        torch.set_num_threads(args.threads)
    all_paths = [str(p) for p in plan["paths"]]
    paths = all_paths[: args.clips]
    device = resolve_device(args.device)
    res: dict = {"load_average_start": load_average()}
    rss_start = current_rss_mb()

    # converted models (OpenVINO) go to a fresh folder: the first load pays the conversion
    models = Path(tempfile.mkdtemp(prefix="bench-converted-", dir=plan["scratch"]))
    first, *others = args.backends
    enc, info = load_backend(plan, args, device, first, models)
    res["backends"] = {first: info}
    res["load_s"] = info["load_s"]
    res["setup"] = {
        "model": plan["model_label"],
        "parameters_m": sum(p.numel() for p in enc.family.audio_tower.parameters()) / 1e6,
        "family": enc.family.name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "precision": enc.precision,
        "backend": repr(enc.backend),
        "torch_threads": torch.get_num_threads(),
        "decode_workers": enc.num_workers,
        "batch_size": args.batch_size,
        "clip_seconds": args.seconds,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "malloc_env": {k: os.environ[k] for k in MALLOC_VARIABLES if k in os.environ},
    }
    res["memory"] = {"rss_start_mb": rss_start, "rss_after_load_mb": current_rss_mb()}
    res["memory"]["peak_rss_after_load_mb"] = peak_rss_mb()
    log(f"loaded {plan['model_label']} on {device} ({enc.precision}) in {res['load_s']:.1f} s")

    work = Path(tempfile.mkdtemp(prefix="bench-embedding-cache-", dir=plan["scratch"]))
    try:
        small = paths[: args.small]
        log(f"pipeline, small run: {len(small)} clips (also the warm-up)")
        res["pipeline_small"], emb_small = run_pipeline(
            enc, small, args.batch_size, work / "small", device
        )
        log(f"pipeline, big run: {len(paths)} clips")
        res["pipeline"], emb = run_pipeline(
            enc, paths, args.batch_size, work / "big", device, probe_it=True
        )
        log(f"pipeline, cached re-run: {len(paths)} clips")
        res["cached"], emb_cached = run_pipeline(enc, paths, args.batch_size, work / "big", device)
        if enc._featurizer() is not None:  # the same run with the front-end in the main process
            log(f"pipeline, front-end in the main process: {len(paths)} clips")
            enc.features_in_workers = False
            try:
                res["pipeline_main_frontend"], emb_main = run_pipeline(
                    enc, paths, args.batch_size, work / "main-frontend", device
                )
            finally:
                enc.features_in_workers = True
            res["pipeline_main_frontend"]["max_abs_diff"] = float(np.abs(emb_main - emb).max())
        k = min(len(small), len(paths))
        res["checks"] = {
            "small_vs_big_max_abs_diff": float(np.abs(emb_small[:k] - emb[:k]).max()),
            "cached_identical": bool(np.array_equal(emb_cached, emb)),
            "pipeline_nan_rows": int(np.isnan(emb).any(axis=1).sum()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The floor runs at the batch size the pipeline's model calls really use: embed_audio decodes
    # `batch_size` clips at a time but, on a CPU, calls the model on enc.model_batch_size windows.
    model_batch = min(args.batch_size, enc.model_batch_size or args.batch_size)
    n_floor = args.floor_clips or max(
        64, model_batch * FLOOR_BATCHES["cpu" if device.type == "cpu" else "other"]
    )
    log(f"forward-only floor: {n_floor} clips in model batches of {model_batch}")
    res["floor"] = run_floor(enc, paths, model_batch, n_floor, device)
    res["floor"].pop("embeddings")
    for bs in args.sweep or []:
        log(f"forward-only floor, batch size {bs}")
        res.setdefault("floor_sweep", []).append(
            {"batch_size": bs, **run_floor(enc, paths, bs, max(2 * bs, 8), device)}
        )
        res["floor_sweep"][-1].pop("embeddings")
    res["decode_ms_per_clip_serial"] = decode_cost(paths)
    res["backends"][first]["pipeline"] = res["pipeline"]
    embs = {first: emb}
    used = [first]  # backends that could run this model (e.g. PE-Audio: no OpenVINO)
    for name in others:
        try:
            enc_b, res["backends"][name] = load_backend(plan, args, device, name, models)
        except BackendUnavailable as exc:
            log(f"backend {name} skipped: {exc}")
            res.setdefault("unavailable_backends", {})[name] = str(exc)
            continue
        used.append(name)
        log(f"pipeline, backend {name} ({enc_b.backend!r}): {len(paths)} clips")
        work = Path(tempfile.mkdtemp(prefix="bench-embedding-cache-", dir=plan["scratch"]))
        try:
            run_pipeline(enc_b, paths[: args.small], args.batch_size, work / "warm", device)
            res["backends"][name]["pipeline"], embs[name] = run_pipeline(
                enc_b, paths, args.batch_size, work / "big", device
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res["backends"][name]["encoder"] = enc_b
    log("forward-only variants (eager fp32, eager bf16, each backend)")
    extra = {n: res["backends"][n].pop("encoder", enc).backend for n in used}
    res["variants"] = forward_variants(enc, paths, model_batch, n_floor, device, extra)
    if args.parallel > 1 and device.type == "cpu":
        res["parallel"] = {
            n: run_parallel(plan, args, res["backends"][n], models, model_batch, args.parallel)
            for n in used
        }
    shutil.rmtree(models, ignore_errors=True)

    naive_paths = all_paths[: args.naive_clips]
    log(f"naive loop: {len(naive_paths)} clips, one at a time, fp32")
    if enc.family.name == "laion-clap":
        processor = ClapProcessor.from_pretrained(plan["model"])
        res["naive"], emb_naive = run_naive(enc.model, processor, naive_paths, device)
    else:  # other families: their own front-end and tower, one clip at a time, fp32
        res["naive"], emb_naive = run_naive_family(enc, naive_paths, device)
    n = len(naive_paths)
    m = min(n, len(emb))  # the naive loop may run on more clips than the pipeline
    cos = np.sum(emb_naive[:m] * emb[:m], axis=1)
    res["checks"]["naive_vs_pipeline_min_cosine"] = float(np.nanmin(cos))
    for name, e in embs.items():  # naive = transformers' path in fp32: the reference
        res["backends"][name]["min_cosine_to_naive_fp32"] = float(
            np.nanmin(np.sum(emb_naive[:m] * e[:m], axis=1))
        )
    if n > 1:
        gram = emb_naive @ emb_naive.T
        res["checks"]["naive_mean_cosine_between_clips"] = float(
            (gram.sum() - np.trace(gram)) / (n * (n - 1))
        )

    res["memory"].update(
        {
            "peak_rss_end_mb": peak_rss_mb(),
            "children_peak_rss_end_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        }
    )
    res["load_average_end"] = load_average()
    return res


# ----------------------------------------------------------------------------------------------
# Targets and report
# ----------------------------------------------------------------------------------------------
def _target(name: str, value: float, goal: str, ok: bool, unit: str) -> dict:
    return {"target": name, "value": value, "goal": goal, "pass": bool(ok), "unit": unit}


def evaluate(res: dict) -> list[dict]:
    """The targets, each with its value, goal and whether it is met."""
    small, pipe, cached = res["pipeline_small"], res["pipeline"], res["cached"]
    gpu = res["setup"]["device"].startswith("cuda")
    min_speedup = 20 if gpu else 3
    speedup = pipe["clips_per_s"] / res["naive"]["clips_per_s"]
    floor_ratio = res["floor"]["clips_per_s"] / pipe["clips_per_s"]
    growth = pipe["peak_rss_mb"] - small["peak_rss_mb"]
    targets = [
        _target("pipeline / naive (clips/s)", speedup, f">= {min_speedup}x",
                speedup >= min_speedup, "x"),
        _target("floor / pipeline (clips/s)", floor_ratio, "<= 1.25", floor_ratio <= 1.25, "x"),
        _target(f"cached re-run, {cached['clips']} clips", cached["seconds"],
                f"< {CACHED_LIMIT_S:g} s", cached["seconds"] < CACHED_LIMIT_S, "s"),
        _target(f"peak RSS growth, {small['clips']} -> {pipe['clips']} clips", growth,
                f"<= {MEMORY_GROWTH_LIMIT_MB:g} MB", growth <= MEMORY_GROWTH_LIMIT_MB, "MB"),
    ]  # fmt: skip
    if gpu:
        scaled = REFERENCE_CLIPS / pipe["clips_per_s"]  # seconds for 2000 clips at this rate
        name = f"{REFERENCE_CLIPS} clips end to end (rate of {pipe['clips']})"
        targets.insert(
            0, _target(name, scaled, f"< {GPU_RUN_LIMIT_S:g} s", scaled < GPU_RUN_LIMIT_S, "s")
        )
    return targets


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:+.0f} MB" if unit == "MB" else f"{value:.3g}"


def _mb(value) -> str:
    return "n/a" if value is None else f"{value:,.0f} MB"


def backend_report(res: dict) -> list[str]:
    """The backends: forward-only variants, each backend's pipeline, first-call cost and the
    processes-vs-threads comparison."""
    lines = ["", f"  forward only (bs {res['floor']['batch_size']}, same features)"]
    lines.append(
        f"    {'variant':<40}{'ms/window':>10}{'cpu ms/w':>9}{'clips/s':>9}{'vs eager bf16':>14}"
        f"{'cosine':>10}"
    )
    bf16 = None
    for r in res.get("variants", []):
        if r["name"] == "eager bf16 autocast":
            bf16 = r["clips_per_s"]
        lines.append(
            f"    {r['name']:<40}{r['ms_per_window']:>10.1f}{1e3 * r['cpu_s'] / r['clips']:>9.1f}"
            f"{r['clips_per_s']:>9.2f}"
            f"{r['vs_eager_bf16']:>13.2f}x{r['cosine_to_fp32']:>10.6f}"
        )
    eager = max((r["clips_per_s"] for r in res.get("variants", [])
                 if r["name"] in ("eager fp32", "eager bf16 autocast")), default=None)  # fmt: skip
    lines += [
        "",
        "  pipeline (embed_audio end to end, empty cache) per backend; 'vs eager fwd': against the",
        "  faster of the eager fp32 and eager bf16 autocast forward passes (what precision='auto'",
        "  ran before the backends: bf16 autocast where bf16 is fast, fp32 elsewhere)",
        f"    {'backend':<44}{'clips/s':>8}{'cpu ms/clip':>12}{'vs eager bf16':>14}"
        f"{'vs eager fwd':>13}{'vs naive':>9}{'2000 clips':>11}{'cos naive':>10}",
    ]
    rows = [(f"{n} ({b['key']})", b["pipeline"], b.get("min_cosine_to_naive_fp32"))
            for n, b in res.get("backends", {}).items() if b.get("pipeline")]  # fmt: skip
    if res.get("pipeline_main_frontend"):
        first = next(iter(res["backends"]))
        rows.insert(1, (f"{first}, front-end in the main process", res["pipeline_main_frontend"],
                        None))  # fmt: skip
    for label, p, cos in rows:
        lines.append(
            f"    {label:<44}{p['clips_per_s']:>8.2f}"
            f"{1e3 * (p['cpu_s'] + p['workers_cpu_s']) / p['clips']:>12.1f}"
            + (f"{p['clips_per_s'] / bf16:>13.2f}x" if bf16 else f"{'n/a':>14}")
            + (f"{p['clips_per_s'] / eager:>12.2f}x" if eager else f"{'n/a':>13}")
            + f"{p['clips_per_s'] / res['naive']['clips_per_s']:>8.2f}x"
            f"{REFERENCE_CLIPS / p['clips_per_s']:>10.0f}s"
            + (f"{cos:>10.6f}" if cos is not None else f"{'':>10}")
        )
    lines += ["", "  first-call cost (load_clap, converted-model cache empty, then reused)"]
    for name, b in res.get("backends", {}).items():
        again = f", {b['reload_s']:.1f} s when cached" if "reload_s" in b else ""
        lines.append(
            f"    {name}: load {b['load_s']:.1f} s (conversion {b['conversion_s']:.1f} s, "
            f"compile {b['compile_s']:.1f} s){again}; probe cosine to fp32 "
            + ("n/a (fp32 eager)" if b["probe_cosine"] is None else f"{b['probe_cosine']:.6f}")
        )
    for name, p in res.get("parallel", {}).items():
        one, many = (k for k in p if "x" in k and k != "ratio" and k != "bit_identical")
        lines.append(
            f"  processes vs threads, {name}: {one} {p[one]:.2f} clips/s, {many} {p[many]:.2f} "
            f"clips/s ({p['ratio']:.2f}x); bit-identical: {p['bit_identical']}"
        )
    for name, why in res.get("unavailable_backends", {}).items():
        lines.append(f"  backend {name} not measured: {why}")
    return lines


def report(res: dict) -> str:
    s, m = res["setup"], res["memory"]
    lines = [
        "CLAP embedding benchmark",
        f"  model      {s['model']} ({s['parameters_m']:.1f} M parameters), loaded in "
        f"{res['load_s']:.1f} s",
        f"  device     {s['device']} ({s['device_name']}), precision {s['precision']}, "
        f"batch {s['batch_size']}, decode workers {s['decode_workers']}",
        f"  host       {s['cpu']} x{s['cpu_count']}, torch {s['torch']} ({s['torch_threads']} "
        f"threads), transformers {s['transformers']}, python {s['python']}",
        f"  malloc     {' '.join(f'{k}={v}' for k, v in s['malloc_env'].items()) or 'default'}",
        f"  data       synthetic {s['clip_seconds']:g} s 44.1 kHz 16-bit mono WAV clips "
        "(resampled to 48 kHz, repeat-padded to the 10 s window)",
        f"  load avg   {res['load_average_start']} at start, {res['load_average_end']} at end "
        "(timings on a busy machine are noisy)",
    ]
    load = res["load_average_start"]
    if load and load[0] > (s["cpu_count"] or 1):  # own data preparation adds up to ~1
        lines.append(
            f"  WARNING    the machine was busy (load {load[0]} on {s['cpu_count']} CPUs): wall "
            "times are unreliable, multi-threaded ones most (compare with --threads 1)"
        )
    lines += [
        "",
        f"  {'stage':<52}{'clips':>7}{'seconds':>9}{'clips/s':>9}{'cpu s':>8}{'sys s':>7}"
        f"{'faults/clip':>12}",
    ]
    stages = [
        ("naive loop (decode, numpy extractor, bs 1, fp32)", res["naive"]),
        (f"pipeline, small run (embed_audio, bs {s['batch_size']})", res["pipeline_small"]),
        (f"pipeline (embed_audio, bs {s['batch_size']}, empty cache)", res["pipeline"]),
        (f"forward-only floor (bs {res['floor']['batch_size']}, {s['precision']})", res["floor"]),
        ("cached re-run (all hits)", res["cached"]),
    ]
    stages += [
        (f"forward-only floor, batch size {r['batch_size']}", r) for r in res.get("floor_sweep", [])
    ]
    for name, r in stages:
        lines.append(
            f"  {name:<52}{r['clips']:>7}{r['seconds']:>9.2f}{r['clips_per_s']:>9.2f}"
            f"{r['cpu_s'] + r['workers_cpu_s']:>8.1f}{r['sys_s']:>7.1f}"
            f"{r['minor_faults'] / r['clips']:>12,.0f}"
        )
    lines += ["", f"  {'target':<52}{'value':>10}  {'goal':<12}result"]
    for t in res["targets"]:
        lines.append(
            f"  {t['target']:<52}{_fmt(t['value'], t['unit']):>10}  {t['goal']:<12}"
            f"{'PASS' if t['pass'] else 'MISS'}"
        )
    small, big = res["pipeline_small"], res["pipeline"]
    lines += [
        "",
        "  memory (peak = getrusage ru_maxrss)",
        f"    after load: RSS {_mb(m['rss_after_load_mb'])}, peak {_mb(m['peak_rss_after_load_mb'])}",
        f"    small run ({small['clips']} clips): RSS {_mb(small['rss_mb'])}, peak "
        f"{_mb(small['peak_rss_mb'])}",
        f"    big run ({big['clips']} clips): RSS {_mb(big['rss_mb'])}, peak "
        f"{_mb(big['peak_rss_mb'])}",
        f"    end of benchmark: peak {_mb(m['peak_rss_end_mb'])}",
        f"    decode workers: peak RSS {_mb(m['children_peak_rss_end_mb'])} (RUSAGE_CHILDREN, "
        "counts pages shared with the parent), private memory of all workers together "
        f"{_mb(big['workers_private_peak_mb'])} at peak",
    ]
    if "gpu_peak_allocated_mb" in big:
        lines.append(f"    GPU peak allocated (big run): {_mb(big['gpu_peak_allocated_mb'])}")
    b = big.get("breakdown")
    if b:
        lines += [
            "",
            f"  where the big run's time goes ({big['seconds']:.1f} s wall; first batch after "
            f"{b['time_to_first_batch_s']:.2f} s; {b['model_calls']} model calls)",
            f"    {'part (main process)':<46}{'wall s':>9}{'ms/clip':>9}{'share':>8}{'cpu s':>9}",
        ]
        labels = {
            "model": "model (audio tower, via the backend)",
            "frontend": "front-end in this process (see below)",
            "collation_pooling": "windows, collation, pooling",
            "cache": "cache lookup / writes",
            "waiting_for_decode_and_other": "waiting for decoded batches, start-up, other",
        }
        for key, label in labels.items():
            lines.append(
                f"    {label:<46}{b['seconds'][key]:>9.2f}{b['ms_per_clip'][key]:>9.1f}"
                f"{100 * b['fraction'][key]:>7.1f}%{b['cpu_s'][key]:>9.1f}"
            )
        lines += [
            f"    {'decode workers (other processes, in parallel)':<46}{'':>9}{'':>9}{'':>8}"
            f"{big['workers_cpu_s']:>9.1f}",
            f"    reference: floor {1e3 / res['floor']['clips_per_s']:.1f} ms/clip; decode + "
            f"resample {res['decode_ms_per_clip_serial']:.1f} ms/clip serially in one process; "
            f"front-end alone {res['floor']['frontend_ms_per_clip']:.1f} ms/clip",
        ]
        if res.get("pipeline_main_frontend"):
            lines.append(
                "    (the front-end runs in the decode workers, so its time is in theirs; the "
                "pipeline below with it in this process shows the difference)"
            )
    lines += backend_report(res)
    c = res["checks"]
    lines += [
        "",
        f"  checks: naive vs pipeline min cosine {c['naive_vs_pipeline_min_cosine']:.6f}"
        + (
            f" (mean cosine between different clips {c['naive_mean_cosine_between_clips']:.4f})"
            if "naive_mean_cosine_between_clips" in c
            else ""
        ),
        f"          small vs big run max |diff| {c['small_vs_big_max_abs_diff']:.2e}, cached rows "
        f"identical: {c['cached_identical']}, NaN rows: {c['pipeline_nan_rows']}",
        "  note: naive clips/s is measured on the naive clips only; all rates are per clip. cpu s:",
        "  user + system CPU of this process and of the decode workers; sys s and faults/clip:",
        "  kernel time and minor page faults of this process (memory freed and re-faulted).",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:  # print the report of a saved --json file again
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    if args._child:
        plan = json.loads(Path(args._child).read_text())
        result = measure(plan)
        Path(plan["result"]).write_text(json.dumps(result))
        return 0

    keep = args.workdir is not None
    root = Path(args.workdir).expanduser() if keep else Path(tempfile.mkdtemp(prefix="bench-emb-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        n_files = max(args.clips, args.small, args.naive_clips)
        clip_dir = root / f"clips-v{CLIPS_VERSION}-{args.seconds:g}s-seed{args.seed}"
        paths = prepare_clips(clip_dir, n_files, args.seconds, args.seed)
        if args.model:
            model, label = args.model, args.model
        else:
            model = str(prepare_model(root / f"model-v{MODEL_VERSION}-seed{args.seed}", args.seed))
            label = f"full-size ClapConfig(), random weights (seed {args.seed})"
        plan = {
            "args": {k: v for k, v in vars(args).items() if k != "_child"},
            "paths": [str(p) for p in paths],
            "model": model,
            "model_label": label,
            "scratch": str(root),
            "result": str(root / f"result-{os.getpid()}.json"),
        }
        # The growth check compares runs with the same (full) batch size: activation memory
        # scales with the batch, so the small run gets at least one full batch.
        small = min(max(args.small, args.batch_size), args.clips)
        if small != args.small:
            log(f"small run: {small} clips instead of {args.small} (one full batch, <= --clips)")
        plan["args"]["small"] = small
        plan["paths"] = plan["paths"][: max(args.clips, args.naive_clips)]
        plan_file = root / f"plan-{os.getpid()}.json"
        plan_file.write_text(json.dumps(plan))
        # A fresh process for the measurements: its peak RSS then excludes building the model
        # and its reaped children are only the decode workers.
        env = dict(os.environ)
        if args.tune_malloc:
            env.update({name: str(MALLOC_TUNED_BYTES) for name in MALLOC_VARIABLES})
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_child", str(plan_file)], env=env
        )
        if proc.returncode != 0:
            log(f"measurement process failed with exit status {proc.returncode}")
            return proc.returncode
        res = json.loads(Path(plan["result"]).read_text())
        plan_file.unlink(missing_ok=True)
        Path(plan["result"]).unlink(missing_ok=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    res["targets"] = evaluate(res)
    res["argv"] = sys.argv[1:]
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"\n  all numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
