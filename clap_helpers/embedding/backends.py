"""Speed backends: how the audio tower runs (eager PyTorch or OpenVINO) and at which precision.

A backend wraps the audio tower (an ``nn.Module`` mapping the front-end's tensors to (B, D)
embeddings, see :class:`clap_helpers.embedding.families.base.ModelFamily`) and is called the same
way: ``backend(*feats) -> (B, D) float32``.

- :class:`TorchBackend`: eager PyTorch on any device. ``fp32``; ``bf16``/``fp16`` by autocast, or,
  on CPUs with fast bf16 (:func:`clap_helpers.embedding.devices.cpu_has_fast_bf16`), by a bf16
  copy of the tower's weights (``model.to(torch.bfloat16)``: 1.4x faster than autocast there).
  On a CPU the encoder runs its model calls in the backend's ``streams``
  (:func:`run_in_streams`: two calls at once, one intra-op thread each, by default).
- :class:`OpenVinoBackend`: the tower converted to OpenVINO once (``openvino.convert_model``,
  dynamic batch, fp32 weights), saved in ``<cache_dir>/openvino/<key>/`` (written to a temporary
  folder, then renamed: atomic), and compiled for the CPU with the ``bf16`` or ``f32`` inference
  precision hint. Every inference runs a fixed batch (a partial batch is zero-padded, a larger
  call split), so a row never depends on the rows beside it; with two streams (the default
  where there are two threads, :func:`default_streams`) two batches run at once, which is why
  the encoder hands it all the windows of a decoded batch in one call. Threads are pinned to
  cores only when the process uses every core (:func:`usable_cores`). One ``openvino.Core``
  serves the process (:func:`_shared_core` says why).

:func:`choose_backend` implements ``backend="auto"``: OpenVINO on a CPU when the package is
installed, the export works and its embedding of a probe clip is within cosine
:data:`MIN_COSINE_OPENVINO` of eager fp32; else eager PyTorch, with a one-line
:class:`BackendWarning` saying why. ``precision="auto"`` keeps its rule (bf16 only where bf16 is
fast, checked on the same probe clip). ``$CLAP_HELPERS_BACKEND`` sets the default backend.

Which towers export: a family says so with its ``openvino`` class attribute (default True);
fused LAION-CLAP checkpoints never do (their fusion branch depends on the data). usage.md lists
the families checked.

Used by: clap_helpers.embedding.encoder (``load_clap(..., backend=)``) and the embedding benchmark.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ..data.audio import CLAP_SAMPLE_RATE
from ..diagnostics import ClapWarning
from .cache import namespace_hash
from .devices import cpu_has_fast_bf16, resolve_precision

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "BackendWarning",
    "MIN_COSINE_OPENVINO",
    "MIN_COSINE_TORCH",
    "OpenVinoBackend",
    "TorchBackend",
    "choose_backend",
    "default_backend",
    "default_streams",
    "openvino_cache_path",
    "probe_clip",
    "call_streams",
    "run_in_streams",
    "torch_backend",
    "usable_cores",
]

BACKENDS = ("auto", "torch", "openvino")
MIN_COSINE_OPENVINO = 0.9999  # backend="auto" uses OpenVINO only this close to eager fp32
MIN_COSINE_TORCH = 0.999  # precision="auto" falls back to fp32 below this (eager PyTorch)
OPENVINO_FORMAT = 1  # bump when the export changes: converted models then get a new key
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_OV_HINTS = {"fp32": "f32", "bf16": "bf16"}
T = TypeVar("T")
_STREAMS_LOCK = threading.Lock()
_ISA_CAP_NOTE = "OpenVINO's CPU plugin crashed (segfault) on the tiny test model under it"


class BackendWarning(ClapWarning):
    """``backend="auto"`` could not use OpenVINO (the message says why) and runs eager PyTorch."""


class BackendUnavailable(RuntimeError):
    """A backend cannot run this tower here (missing package, failed export, wrong device)."""


def default_backend() -> str:
    """``$CLAP_HELPERS_BACKEND`` if set (``auto``, ``torch`` or ``openvino``), else ``"auto"``."""
    return os.environ.get("CLAP_HELPERS_BACKEND") or "auto"


def default_streams(threads: int | None = None) -> int:
    """Inference streams of the CPU backends: ``$CLAP_HELPERS_STREAMS`` if set, else 2; never
    more than ``threads`` (default ``torch.get_num_threads()``), so a 1-thread process (a Ray
    actor with ``num_cpus=1``) runs one.

    A stream runs its own batch of windows on ``threads // streams`` threads. Two were faster
    than one on a 2-core AVX2 EPYC (usage.md, Performance): OpenVINO 4 % forward-only and 2-10 %
    end to end, eager PyTorch 15 % forward-only: a thread preempted by the decode worker then
    stalls its own batch only, not both threads at every layer. Same numbers either way (each
    batch is computed alone; eager fp32 gives the same bits on 1 and 2 threads)."""
    wanted = int(os.environ.get("CLAP_HELPERS_STREAMS") or 2)
    return max(1, min(wanted, threads or torch.get_num_threads()))


def call_streams(backend) -> int:
    """How many of the encoder's model calls run at once (:func:`run_in_streams`): a backend
    that batches itself (OpenVINO) gets all rows in one call and runs its own streams, so 1;
    else the backend's ``streams`` (eager PyTorch on a CPU)."""
    return 1 if backend.batches_itself else getattr(backend, "streams", 1)


def run_in_streams(calls: Sequence[Callable[[], T]], streams: int = 1) -> list[T]:
    """The results of ``calls`` (model calls taking no arguments), in order. With ``streams``
    > 1, that many run at once, each on its own Python thread with ``torch.get_num_threads() //
    streams`` intra-op threads (PyTorch releases the GIL inside its kernels), the in-process
    equivalent of one 1-thread model process per core; the thread count is restored after."""
    if streams <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    # The thread count is process-wide (PyTorch has no per-thread setting): callers on other
    # threads (the web app's requests) take turns, so none restores another's count.
    with _STREAMS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // streams))
        try:
            with ThreadPoolExecutor(max_workers=streams) as pool:
                return list(pool.map(lambda call: call(), calls))
        finally:
            torch.set_num_threads(threads)


def probe_clip(
    seconds: float = 10.0, sample_rate: int = CLAP_SAMPLE_RATE, max_samples: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe clip (chirp + noise) of every precision and backend check, at
    ``sample_rate`` and at most ``max_samples`` long (one family window): (1, T), (1,)."""
    rng = np.random.default_rng(0)
    n = int(seconds * sample_rate)
    t = np.arange(min(n, max_samples or n)) / sample_rate
    probe = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.05 * rng.standard_normal(t.size)
    x = torch.from_numpy(probe.astype(np.float32))[None]
    return x, torch.tensor([x.shape[1]])


class TorchBackend:
    """Eager PyTorch: ``backend(*feats) -> (B, D) float32`` on the tower's device.

    Args:
        module: the audio tower, in eval mode on ``device``.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        weights: run reduced precision with a copy of the weights in that dtype instead of
            autocast (``None``: only for bf16 on a CPU with fast bf16).
        streams: on a CPU, model calls the encoder runs at once (:func:`run_in_streams`); 1
            elsewhere. Not part of :attr:`key`: each call's numbers do not depend on it.
    """

    name = "torch"
    batches_itself = False  # the caller keeps calls small (model_batch_size on a CPU)

    def __init__(
        self, module, device: torch.device, precision: str = "fp32", weights=None, streams=1
    ):
        self.device, self.precision = device, precision
        self.streams = max(1, int(streams)) if device.type == "cpu" else 1
        if weights is None:
            weights = precision == "bf16" and device.type == "cpu" and cpu_has_fast_bf16()
        self.weights = bool(weights) and precision != "fp32"
        self.module = copy.deepcopy(module).to(_DTYPES[precision]) if self.weights else module
        self.mode = "fp32" if precision == "fp32" else ("weights" if self.weights else "autocast")
        self.conversion_s = self.compile_s = 0.0
        self.cosine: float | None = None  # to eager fp32 on the probe clip, where checked

    @property
    def key(self) -> str:
        """How the numbers are made (part of the embedding cache key)."""
        return "torch" if self.mode == "fp32" else f"torch-{self.mode}"

    def __repr__(self) -> str:
        how = f"{self.precision} {self.mode}" if self.mode != "fp32" else "fp32"
        return f"torch ({how}, {self.streams} streams)" if self.streams > 1 else f"torch ({how})"

    @torch.inference_mode()
    def __call__(self, *feats: torch.Tensor) -> torch.Tensor:
        if self.weights:
            dtype = _DTYPES[self.precision]
            feats = tuple(f.to(dtype) if f.is_floating_point() else f for f in feats)
            with torch.autocast(self.device.type, enabled=False):
                return self.module(*feats).float()
        if self.precision == "fp32":
            with torch.autocast(self.device.type, enabled=False):
                return self.module(*feats).float()
        with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
            return self.module(*feats).float()


def openvino_cache_path(
    root, model_id: str, revision: str, example: tuple, family: dict | None = None
) -> Path:
    """``<root>/openvino/<key>``: the key hashes the family (name and settings), checkpoint,
    revision, input shapes (batch dynamic) and the OpenVINO version, like the embedding cache's
    namespaces. The saved model is fp32 (the precision is a compile-time hint), so one
    conversion serves every precision."""
    ov = _import_openvino()

    key = {
        "tower": "audio",
        "family": family or {},
        "model": model_id,
        "revision": revision,
        "inputs": [[-1, *e.shape[1:], str(e.dtype)] for e in example],
        "openvino": ov.__version__,
        "format": OPENVINO_FORMAT,
    }
    return Path(root).expanduser() / "openvino" / namespace_hash(key)


class OpenVinoBackend:
    """The tower converted to OpenVINO and compiled for the CPU.

    Args:
        module: the audio tower (fp32, CPU, eval mode).
        example: one batch of its inputs (any batch size), for the export.
        precision: ``fp32`` (OpenVINO's ``f32`` hint) or ``bf16`` (``bf16`` hint).
        cache_path: folder of the converted model (:func:`openvino_cache_path`); reused if it
            holds one, else written atomically. ``None``: convert in memory, every time.
        batch: windows per inference call; partial batches are zero-padded.
        threads: inference threads (default: ``torch.get_num_threads()``); threads are pinned to
            cores only when they are as many as the usable cores.
        streams: inference streams: batches run this many at a time, each on ``threads //
            streams`` threads (OpenVINO's throughput mode), so a call with more rows than
            ``batch`` keeps every core busy without threads waiting for each other
            (default 1: one batch at a time on all ``threads``). Each batch's numbers do not
            depend on the streams.

    Attributes: ``conversion_s`` (0 when read from the cache), ``compile_s``, ``converted``.

    Raises:
        BackendUnavailable: no ``openvino`` package, an unsupported precision, or the export
            failed (the message says which).
    """

    name = "openvino"
    batches_itself = True  # any number of rows per call: cut into ``batch``-row inferences

    def __init__(
        self, module, example, precision="fp32", cache_path=None, batch=4, threads=None, streams=1
    ):
        ov = _import_openvino()
        if precision not in _OV_HINTS:
            raise BackendUnavailable(f"OpenVINO runs fp32 or bf16 here, not {precision}")
        self.precision, self.batch = precision, int(batch)
        self.threads = threads or torch.get_num_threads()
        self.streams = max(1, min(int(streams), self.threads))
        self.cosine: float | None = None
        example = tuple(example)
        t0 = time.perf_counter()
        xml = Path(cache_path) / "model.xml" if cache_path is not None else None
        core = _shared_core()
        model = None
        if xml is not None and xml.is_file():
            try:
                model = core.read_model(xml)
            except Exception as exc:  # noqa: BLE001 - a damaged cache entry is redone
                warnings.warn(
                    f"cached OpenVINO model {xml.parent} is unreadable ({exc}); converting again",
                    BackendWarning,
                    stacklevel=3,
                )
                shutil.rmtree(xml.parent, ignore_errors=True)
        self.converted = model is None
        if self.converted:
            model = _convert(ov, module, example)
            if xml is not None:
                _save_atomic(ov, model, Path(cache_path))
                if xml.is_file():  # compile what later runs read: a freshly converted graph
                    model = core.read_model(xml)  # compiled 8e-8 away from the saved one
        self.conversion_s = time.perf_counter() - t0 if self.converted else 0.0
        t0 = time.perf_counter()
        try:
            model.reshape(
                {i: ov.PartialShape([self.batch, *e.shape[1:]]) for i, e in enumerate(example)}
            )
            config = {
                "INFERENCE_PRECISION_HINT": _OV_HINTS[precision],
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
                "NUM_STREAMS": self.streams,
                # OpenVINO pins its threads to cores; processes that each use fewer threads
                # than there are cores (Ray actors, --parallel) were all pinned to the same
                # cores: two 1-thread processes ran at 0.6x of one (bench_embedding.py
                # --parallel 2). Pin only when this process uses every core.
                "ENABLE_CPU_PINNING": self.threads >= usable_cores(),
            }
            self.compiled = core.compile_model(model, "CPU", config)
            # plain requests, one per stream, run in waves: no Python callback on OpenVINO's
            # threads, and the output order is the input order
            self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        except Exception as exc:  # noqa: BLE001 - any compile failure means: use torch
            raise BackendUnavailable(f"OpenVINO could not compile the model ({exc})") from None
        self.compile_s = time.perf_counter() - t0
        self.key = f"openvino-{_OV_HINTS[precision]}"
        self.shapes = [tuple(e.shape[1:]) for e in example]  # compiled input shapes, batch aside

    def __repr__(self) -> str:
        how = "converted" if self.converted else "cached model"
        first = f"{self.conversion_s:.1f} s conversion + " if self.converted else ""
        streams = f", {self.streams} streams" if self.streams > 1 else ""
        return (
            f"openvino ({self.precision} hint, {how}, {first}{self.compile_s:.1f} s compile"
            f"{streams})"
        )

    def __call__(self, *feats: torch.Tensor) -> torch.Tensor:
        shapes = [tuple(f.shape[1:]) for f in feats]
        if shapes != self.shapes:  # never run a static model on other shapes: wrong numbers
            raise ValueError(f"OpenVINO model compiled for inputs {self.shapes}, got {shapes}")
        n_rows = feats[0].shape[0]
        chunks = []
        for start in range(0, n_rows, self.batch):
            part = [f[start : start + self.batch].detach().cpu().numpy() for f in feats]
            n = part[0].shape[0]
            if n < self.batch:  # zero rows after the real ones: every call has the same shape
                part = [np.concatenate([p, np.zeros((self.batch - n, *p.shape[1:]), p.dtype)])
                        for p in part]  # fmt: skip
            chunks.append(([np.ascontiguousarray(p) for p in part], n))
        out = []
        for first in range(0, len(chunks), self.streams):  # one batch per stream at a time
            wave = list(zip(self.requests, chunks[first : first + self.streams], strict=False))
            for request, (inputs, _) in wave:
                request.start_async(inputs)
            for request, (_, n) in wave:
                request.wait()
                out.append(np.array(request.get_output_tensor(0).data[:n], dtype=np.float32))
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros((0, 0))


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or taskset's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _import_openvino():
    """The ``openvino`` module, or BackendUnavailable saying it is not installed."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(
            f"the openvino package is not installed ({exc}); pip install openvino"
        ) from None
    return openvino


_CORE_LOCK = threading.Lock()
_CORE = []  # the process's one openvino.Core, created on first use, never dropped


def _shared_core():
    """The process's one ``openvino.Core`` (created on first use, kept until the process exits).

    Not a new Core per backend: each Core creates its own CPU plugin, which installs an
    alternate signal stack (``sigaltstack``, 11.5 kB) on the thread that compiles and, when the
    plugin is destroyed, puts back the one it found. Plugins destroyed in another order than
    they were created put back stacks already freed; the next signal Python handles (SIGCHLD,
    SIGINT) then cannot be delivered and the kernel kills the process with SIGSEGV, no
    traceback (the test suite's segfault of stop 20; reproduced with three Cores freed 0, 2,
    1). One Core, one plugin, created once: its stack stays valid."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(_import_openvino().Core())
        return _CORE[0]


def _convert(ov, module, example):
    """``openvino.convert_model`` with a dynamic batch; any failure -> BackendUnavailable."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks
            return ov.convert_model(
                module.eval(),
                example_input=example,
                input=[ov.PartialShape([-1, *e.shape[1:]]) for e in example],
            )
    except Exception as exc:  # noqa: BLE001 - export failures come in many types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BackendUnavailable(
            f"the export to OpenVINO failed ({type(exc).__name__}: {msg[:200]})"
        ) from None


def _save_atomic(ov, model, folder: Path) -> None:
    """Save into a temporary sibling folder, then rename it to ``folder`` (atomic on POSIX);
    if another process got there first, its copy is kept. A failed save only warns."""
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
        os.rename(tmp, folder)
    except OSError as exc:
        if not (folder / "model.xml").is_file():
            warnings.warn(
                f"could not cache the OpenVINO model in {folder} ({exc}); it will be converted "
                "again next time",
                BackendWarning,
                stacklevel=3,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float().cpu(), b.float().cpu(), dim=-1).min())


def choose_backend(
    tower,
    device: torch.device,
    backend: str = "auto",
    precision: str = "auto",
    *,
    probe,
    cache_root=None,
    model_key: tuple[str, str] = ("", ""),
    family: dict | None = None,
    fused: bool = False,
    openvino: bool = True,
    batch: int = 4,
    streams: int | None = None,
):
    """The backend to run ``tower`` with, checked on the probe clip's features ``probe`` (a
    tuple, or a function returning it: only called when a check is needed).

    ``backend``: ``"torch"``, ``"openvino"`` (errors if it cannot run) or ``"auto"``: OpenVINO on
    a CPU if installed, exported and within cosine :data:`MIN_COSINE_OPENVINO` of eager fp32 on
    the probe (precision ``auto``: bf16 hint on CPUs with fast bf16, else f32), else PyTorch
    with a :class:`BackendWarning` naming the reason (none on GPUs: OpenVINO is CPU-only here).
    ``precision="auto"`` on PyTorch: as :func:`resolve_precision`, fp32 if the probe's cosine
    is below :data:`MIN_COSINE_TORCH`. ``cache_root``: where converted models are cached
    (:func:`openvino_cache_path` of ``model_key`` = (model id, revision) and ``family`` = its
    name and settings; None: not cached). ``fused`` (LAION fused checkpoints) or
    ``openvino=False`` (a family whose tower does not export): no OpenVINO (and, for
    ``"auto"``, no warning: that family always runs PyTorch). ``streams``: inference streams of
    the chosen CPU backend (default :func:`default_streams`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    streams = default_streams() if streams is None else streams
    wanted = resolve_precision(precision, device)
    if backend == "torch" and wanted == "fp32":
        return TorchBackend(tower, device, "fp32", streams=streams)
    probe = tuple(probe() if callable(probe) else probe)
    ref = TorchBackend(tower, device, "fp32")(*probe)
    if backend in ("auto", "openvino"):
        reason = _openvino_obstacle(device, wanted, fused, openvino)
        if backend == "auto" and os.environ.get("ONEDNN_MAX_CPU_ISA"):  # see _ISA_CAP_NOTE
            reason = f"ONEDNN_MAX_CPU_ISA is set; {_ISA_CAP_NOTE}"
        if reason is None:
            try:
                path = cache_root and openvino_cache_path(cache_root, *model_key, probe, family)
                ov_backend = OpenVinoBackend(tower, probe, wanted, path, batch, streams=streams)
                ov_backend.cosine = _cosine(ov_backend(*probe), ref)
                if backend == "openvino" or ov_backend.cosine >= MIN_COSINE_OPENVINO:
                    return ov_backend
                reason = (
                    f"its embedding of the probe clip is cosine {ov_backend.cosine:.6f} from "
                    f"eager fp32 (< {MIN_COSINE_OPENVINO})"
                )
            except BackendUnavailable as exc:
                reason = str(exc)
        if backend == "openvino":
            raise BackendUnavailable(f"backend='openvino' cannot be used: {reason}")
        if device.type == "cpu" and openvino:  # a family that opts out runs torch, silently
            warnings.warn(f"backend='auto' runs eager PyTorch: {reason}", BackendWarning, 3)
    chosen = torch_backend(tower, device, wanted, probe, ref, streams=streams)
    if wanted != "fp32":
        if precision == "auto" and chosen.cosine < MIN_COSINE_TORCH:
            warnings.warn(
                f"{wanted} embeddings are only cosine {chosen.cosine:.5f} from fp32 on {device}; "
                "using fp32",
                BackendWarning,
                stacklevel=3,
            )
            chosen = TorchBackend(tower, device, "fp32", streams=streams)
    return chosen


def torch_backend(
    tower, device, precision: str, probe: tuple, ref: torch.Tensor, streams: int = 1
) -> TorchBackend:
    """Eager PyTorch at ``precision`` (and ``streams``), its ``cosine`` to ``ref`` (eager fp32 of
    ``probe``) set. Where bf16 weights would be used (fast-bf16 CPUs) but drift below
    :data:`MIN_COSINE_TORCH` on the probe (e.g. tiny PE-Audio, AudioCLIP), autocast is used
    instead, as on other CPUs."""
    chosen = TorchBackend(tower, device, precision, streams=streams)
    if precision != "fp32":
        chosen.cosine = _cosine(chosen(*probe), ref)
        if chosen.weights and chosen.cosine < MIN_COSINE_TORCH:
            chosen = TorchBackend(tower, device, precision, weights=False, streams=streams)
            chosen.cosine = _cosine(chosen(*probe), ref)
    return chosen


def _openvino_obstacle(device, precision: str, fused: bool, openvino: bool) -> str | None:
    """Why OpenVINO cannot run the tower on ``device`` at ``precision`` (None: it may)."""
    if device.type != "cpu":
        return f"OpenVINO runs on CPUs here, the device is {device}"
    if precision not in _OV_HINTS:
        return f"OpenVINO runs fp32 or bf16 here, not {precision}"
    if fused:
        return "fused checkpoints are not exported (their fusion branch depends on the data)"
    if not openvino:
        return "this model family's audio tower is not exported to OpenVINO (see usage.md)"
    return None
