"""Helpers for zero-shot audio classification with CLAP models.

Import once, use everywhere (the notebooks do ``import clap_helpers as ch``)::

    clips, classes = ch.datasets.load("esc50", "downloads")
    enc = ch.load_clap("laion/clap-htsat-unfused")
    E = enc.embed_audio(clips.path)

The package follows the pipeline, one subpackage per stage:

========================  ==================================================================
``data``                  dataset registry, loaders, audio decoding, overview, soundscapes,
                          download (http, archives, AudioSet, command line)
``embedding``             model families, CLAP front-end, encoder, embedding cache, devices,
                          Ray scale-out
``evaluation``            scoring core, zero-shot, prompts, adaptation, label-free,
                          robustness, comparisons, results files, embedding simulator
``supervised``            log-mel CNN baselines: features, augment, models, training, protocol
``plots``                 every figure, one naming convention
``apps``                  sound search index, notebook widget, web app
``devtools``              notebook runner, demo, synthetic fixtures and tiny models
========================  ==================================================================

The short names the notebooks use (``ch.datasets``, ``ch.zeroshot``, ``ch.adapt``, ``ch.plots``,
``ch.runner``, ``ch.fixtures``, ...) map to those modules; everything is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import attach

__version__ = "0.1.0"

# short name -> module (relative to this package)
MODULES = {
    # subpackages
    "data": "data",
    "embedding": "embedding",
    "evaluation": "evaluation",
    "supervised": "supervised",
    "plots": "plots",
    "apps": "apps",
    "devtools": "devtools",
    # the modules by their short names
    "paths": "paths",
    "registry": "data.registry",
    "datasets": "data.loaders",
    "audio": "data.audio",
    "overview": "data.overview",
    "soundscapes": "data.soundscapes",
    "download": "data.download",
    "frontend": "embedding.frontend",
    "embed": "embedding.encoder",
    "cache": "embedding.cache",
    "devices": "embedding.devices",
    "families": "embedding.families",
    "distributed": "embedding.distributed",
    "shards": "embedding.shards",
    "scoring": "evaluation.scoring",
    "zeroshot": "evaluation.zeroshot",
    "prompts": "evaluation.prompts",
    "adapt": "evaluation.adapt",
    "label_free": "evaluation.label_free",
    "robustness": "evaluation.robustness",
    "compare": "evaluation.compare",
    "model_comparison": "evaluation.model_comparison",
    "results": "evaluation.results",
    "tables": "evaluation.tables",
    "simulator": "evaluation.simulator",
    "search": "apps.search",
    "app": "apps.web",
    "runner": "devtools.runner",
    "demo": "devtools.demo",
    "fixtures": "devtools.fixtures",
    # names of the flat layout, kept so older code runs
    "soundscape": "data.soundscapes",
    "embedding_sim": "evaluation.simulator",
    "cnn": "supervised",
}
# names re-exported at the top level -> module that defines them
NAMES = {
    "load_clap": "embedding.loading",
    "load_model": "embedding.loading",
    "ClapEncoder": "embedding.encoder",
}

__all__ = sorted([*MODULES, *NAMES])
__getattr__, __dir__ = attach(__name__, MODULES, NAMES)

if TYPE_CHECKING:  # pragma: no cover - what editors and type checkers see
    from . import apps, data, devtools, embedding, evaluation, paths, plots, supervised
    from .apps import search
    from .apps import web as app
    from .data import audio, download, overview, registry, soundscapes
    from .data import loaders as datasets
    from .devtools import demo, fixtures, runner
    from .embedding import cache, devices, distributed, families, frontend, shards
    from .embedding import encoder as embed
    from .embedding.encoder import ClapEncoder
    from .embedding.loading import load_clap, load_model
    from .evaluation import (
        adapt,
        compare,
        label_free,
        model_comparison,
        prompts,
        results,
        robustness,
        scoring,
        simulator,
        tables,
        zeroshot,
    )
