"""Embedding: audio and text to vectors, separate from scoring and cached on disk.

``families`` (one module per audio-text model family and the registry that picks one for a
checkpoint), ``frontend`` (batched log-mel front-end, windows of long clips), ``decoding`` (files to
waveforms in worker processes), ``encoder`` (``load_clap`` and ``ClapEncoder``), ``backends`` (how
the audio tower runs: eager PyTorch or OpenVINO), ``cache`` (the on-disk embedding store),
``devices`` (device and precision choice), ``distributed`` (the same embedding run on a Ray
cluster) and ``shards`` (its Parquet output, read back).
"""

from .._lazy import attach

MODULES = {
    m: m
    for m in (
        "families",
        "frontend",
        "decoding",
        "encoder",
        "backends",
        "cache",
        "devices",
        "distributed",
        "shards",
    )
}
__all__ = sorted(MODULES)
__getattr__, __dir__ = attach(__name__, MODULES)
