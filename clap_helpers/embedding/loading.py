"""Loading a model as a :class:`~clap_helpers.embedding.encoder.ClapEncoder`: the checkpoint's
model family, the window rule for long clips, and the speed backend with its precision.

::

    enc = ch.load_clap("laion/clap-htsat-unfused", device="auto", precision="auto")

Used by: every notebook that embeds audio or text (02-11, as ``ch.load_clap``),
clap_helpers.apps, clap_helpers.evaluation.model_comparison and the distributed pipeline.
"""

from __future__ import annotations

import os
import warnings

import torch

from ..data.audio import DEFAULT_MAX_SECONDS
from ..diagnostics import ClapWarning, quiet_loading
from . import backends
from .cache import check_cache_dir, default_cache_dir
from .devices import resolve_device
from .encoder import CPU_MODEL_BATCH, DEFAULT_MODEL, WINDOW_MODES, ClapEncoder
from .families.registry import load_family

__all__ = ["load_clap", "load_model"]

_SAID_FUSION: set[str] = set()  # fused checkpoints whose window="auto" choice was announced


def load_clap(
    model: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    precision: str = "auto",
    *,
    family: str | None = None,
    revision: str | None = None,
    window: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    int16_roundtrip: bool = False,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    backend: str | None = None,
    **family_options,
) -> ClapEncoder:
    """Load an audio-text model (hub id, local folder or checkpoint file) as a :class:`ClapEncoder`.

    Args:
        model: e.g. ``laion/clap-htsat-unfused``, ``laion/clap-htsat-fused``,
            ``laion/larger_clap_music``, or a folder (the tiny fixture model included), a
            checkpoint file, or its ``http(s)://`` release URL (fetched once into the checkpoint
            cache; ``checksum=``, ``checkpoint_cache=``: :mod:`clap_helpers.embedding.checkpoints`).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``. ``"auto"`` picks the fastest
            precision for the device (see :func:`resolve_precision`) and checks on a probe clip
            that it stays within cosine 0.999 of fp32, else uses fp32. This is the audio
            tower's precision: front-end features and text embeddings are always fp32.
        family: model family (:func:`clap_helpers.embedding.families.family_names`); default:
            recognised from the checkpoint (``config.json`` ``model_type``, or the family's own
            detection for checkpoint files).
        revision: hub revision (branch, tag or commit); part of the cache key.
        window: clips longer than the family's window (10 s for LAION-CLAP): ``"average"``
            (mean of consecutive windows), ``"first"`` (first window only), ``"fusion"``
            (fused checkpoints: the whole clip through the deterministic 4-channel fusion
            front-end) or ``"auto"`` (default): ``"fusion"`` for fused checkpoints (said once
            per checkpoint in a warning, and in the encoder's repr), else ``"average"``.
        cache_dir: embedding cache (default :func:`clap_helpers.embedding.cache.default_cache_dir`;
            ``False``: no cache). A path that is a file is an error here, not after a run.
        num_workers: decoding processes (default: 1 on CPU, up to 8 on GPU; 0 = in-process).
        int16_roundtrip: quantise audio to int16 and back before embedding, as the original
            ``laion_clap`` package does (part of the cache key).
        max_seconds: audio files are decoded up to this many seconds (default 30 min); a longer
            file is embedded from its first ``max_seconds`` with a warning naming it (part of the
            cache key). ``None``: no limit.
        backend: ``"auto"`` (default, or ``$CLAP_HELPERS_BACKEND``), ``"torch"`` or
            ``"openvino"``: how the audio tower runs (:mod:`clap_helpers.embedding.backends`).
            ``"auto"`` uses OpenVINO on CPUs where it is installed, the family's tower exports
            and it matches eager fp32 on the probe clip; the converted model is cached in
            ``cache_dir/openvino``.
        family_options: passed to the family's loader (e.g. ``text_model=`` for families whose
            checkpoint file does not hold its text tower).

    Raises:
        FileNotFoundError: ``model`` is a path (``/``, ``./``, ``~``, ...) to a missing folder.
        OSError: a hub id that is neither in the local HF cache nor downloadable (the message
            names the fixes: HF_HOME, HF_HUB_OFFLINE=1, a local folder).
        ValueError: ``device="cuda"`` (or ``"mps"``) where there is none; a bad ``precision``;
            a checkpoint no registered family recognises (``UnknownFamilyError``); a bad
            ``backend``.
        BackendUnavailable: ``backend="openvino"`` cannot run here (the message says why).
        NotADirectoryError: ``cache_dir`` is a file.
    """
    if window not in WINDOW_MODES:
        raise ValueError(f"window must be one of {WINDOW_MODES}, got {window!r}")
    dev = resolve_device(device)
    if cache_dir is not False:
        check_cache_dir(default_cache_dir() if cache_dir is None else cache_dir)
    with quiet_loading():  # no "Loading weights" bar (frozen at 0 % in a saved notebook)
        fam = load_family(model, family=family, device=dev, revision=revision, **family_options)
    if window == "fusion" and not fam.fused:
        raise ValueError(f"window='fusion' needs a fused checkpoint; {fam.model_id} is unfused")
    if window == "auto":
        window = "fusion" if fam.fused else "average"
        if fam.fused and fam.model_id not in _SAID_FUSION:
            _SAID_FUSION.add(fam.model_id)
            warnings.warn(
                f"{fam.model_id} is a fused checkpoint: clips longer than its window go through "
                "its fusion branch (deterministic chunks, window='fusion'); pass "
                "window='average' to average consecutive windows instead",
                ClapWarning,
                stacklevel=2,
            )
    enc = ClapEncoder(
        fam,
        device=dev,
        precision="fp32",
        window=window,
        cache_dir=cache_dir,
        num_workers=num_workers,
        int16_roundtrip=int16_roundtrip,
        max_seconds=max_seconds,
    )
    root = None if cache_dir is False else (cache_dir or default_cache_dir())  # converted models
    enc.backend = backends.choose_backend(
        fam.audio_tower,
        dev,
        backend or backends.default_backend(),
        precision,
        probe=enc._probe_features,  # computed only if a check needs it
        cache_root=root,
        model_key=(fam.model_id, fam.revision),
        family={"name": fam.name, "settings": fam.namespace()},
        fused=fam.fused,
        openvino=fam.openvino,
        batch=enc.model_batch_size or CPU_MODEL_BATCH,
    )
    return enc


load_model = load_clap  # the family-neutral name
