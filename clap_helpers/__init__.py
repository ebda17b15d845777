"""Helpers for zero-shot audio classification with CLAP models.

Import once, use everywhere (the notebooks do ``import clap_helpers as ch``)::

    clips, classes = ch.datasets.load("esc50", "downloads")
    enc = ch.load_clap("laion/clap-htsat-unfused")
    E = enc.embed_audio(clips.path)

Submodules are imported on first use, so ``python -m clap_helpers.download`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# One module per concern; see usage.md for the notebooks that use each.
_SUBMODULES = (
    "adapt",
    "app",
    "audio",
    "cache",
    "cnn",
    "compare",
    "datasets",
    "distributed",
    "download",
    "embed",
    "embedding_sim",
    "explore",
    "fixtures",
    "frontend",
    "label_free",
    "paths",
    "plots",
    "prompts",
    "robustness",
    "runner",
    "search",
    "soundscape",
    "training",
    "zeroshot",
)
# Names re-exported at the top level: name -> submodule that defines it.
_EXPORTS = {"load_clap": "embed", "ClapEncoder": "embed"}

if TYPE_CHECKING:  # pragma: no cover
    from . import audio, datasets, fixtures  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'clap_helpers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_EXPORTS])
