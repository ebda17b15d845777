"""Devices and numeric precision: where and at which precision models run.

One rule for the whole project (embedding, the CNN baselines, the app): :func:`resolve_device`
turns ``"auto"`` into CUDA, then Apple MPS, then CPU; :func:`resolve_precision` turns ``"auto"``
into the fastest precision that is accurate on that device (bf16 on CPUs only where the CPU has
native bf16 instructions, :func:`cpu_has_fast_bf16`).

Used by: every notebook that loads a model (02-11) and notebook 09's training.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["PRECISIONS", "cpu_has_fast_bf16", "resolve_device", "resolve_precision"]

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, then Apple MPS, then CPU; anything else as given.

    Raises ValueError for a device string torch does not know, and for ``"cuda"`` / ``"mps"``
    when this PyTorch build or machine has none.
    """
    if str(device) != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'mps' "
                f"({exc})"
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r} but PyTorch {torch.__version__} sees no CUDA GPU on this "
                "machine (a CPU-only torch build, or no driver); use device='auto' or 'cpu'"
            )
        mps = getattr(torch.backends, "mps", None)
        if dev.type == "mps" and not (mps is not None and mps.is_available()):
            raise ValueError(
                f"device={str(device)!r} but Apple MPS is not available on this machine; "
                "use device='auto' or 'cpu'"
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True if this CPU has native bf16 matrix instructions (AMX or AVX512-BF16).

    Without them bf16 autocast is emulated and slower than fp32 (measured 4x slower on an
    AVX2-only AMD EPYC), so ``precision="auto"`` only picks bf16 on CPUs that have them.
    """
    if sys.platform != "linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device, training: bool = False) -> str:
    """The precision to run at on ``device``.

    ``"auto"``: bf16 (or fp16 without bf16) on CUDA; for inference also bf16 on CPUs with fast
    bf16 (:func:`cpu_has_fast_bf16`); else fp32. Training on a CPU stays in fp32 unless
    ``"bf16"`` is asked for, and fp16 training needs CUDA. Raises ValueError for an unknown name.
    """
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
        if training and precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA device (use bf16 or fp32)")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16() and not training:
        return "bf16"
    return "fp32"
