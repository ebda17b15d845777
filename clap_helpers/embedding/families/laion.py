"""LAION-CLAP through transformers' ``ClapModel``: the ``laion-clap`` family.

Loads every ``ClapModel`` checkpoint in ``from_pretrained`` layout: the five hub checkpoints
(``laion/clap-htsat-unfused``, ``laion/clap-htsat-fused``, ``laion/larger_clap_general``,
``laion/larger_clap_music``, ``laion/larger_clap_music_and_speech``), local folders and the tiny
fixture (:mod:`clap_helpers.devtools.fixtures.tiny_clap`). ``config.json`` ``model_type`` is
``"clap"``.

* Front-end: the batched, deterministic torch log-mel
  (:class:`clap_helpers.embedding.frontend.LogMelFrontend`) built from the checkpoint's own
  ``preprocessor_config.json`` (so f_min 50 Hz where the checkpoint says so, ``rand_trunc`` or
  ``fusion``): ``features`` -> ``(input_features, is_longer)``.
* Audio tower: :class:`ClapAudioTower`, ``ClapModel.get_audio_features`` -> ``pooler_output``;
  ``is_longer`` reaches the model only for fused checkpoints.
* Text: the checkpoint's RoBERTa tokenizer and ``get_text_features`` (run in fp32 by the encoder).
* Window: 10 s at 48 kHz (``max_length_s`` of the checkpoint).

Used by: clap_helpers.embedding.encoder (``load_clap``) for every LAION checkpoint.
"""

from __future__ import annotations

import torch

from ..frontend import LogMelFrontend
from .base import ModelFamily
from .registry import register_family, resolve_revision, unreachable_message

__all__ = ["CHECKPOINTS", "FRONTEND", "ClapAudioTower", "LaionClap", "load"]

NAME = "laion-clap"
#: The front-end settings every LAION hub checkpoint's ``preprocessor_config.json`` holds.
FRONTEND = {
    "sampling_rate": 48_000,
    "feature_size": 64,
    "fft_window_size": 1024,
    "hop_length": 480,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "max_length_s": 10,
    "padding": "repeatpad",
}
#: The five hub checkpoints: truncation (``fusion`` = a fused checkpoint, used for clips longer
#: than 10 s by default), audio tower, parameters (millions), what it was trained for, licence.
CHECKPOINTS = {
    "laion/clap-htsat-unfused": dict(
        truncation="rand_trunc", tower="HTSAT-tiny", params_m=153.5, domain="general sounds"
    ),
    "laion/clap-htsat-fused": dict(
        truncation="fusion", tower="HTSAT-tiny + fusion", params_m=153.5, domain="general sounds"
    ),
    "laion/larger_clap_general": dict(
        truncation="rand_trunc", tower="HTSAT-base", params_m=194.0, domain="general sounds"
    ),
    "laion/larger_clap_music": dict(
        truncation="rand_trunc", tower="HTSAT-base", params_m=194.0, domain="music"
    ),
    "laion/larger_clap_music_and_speech": dict(
        truncation="rand_trunc", tower="HTSAT-base", params_m=194.0, domain="music and speech"
    ),
}
for _info in CHECKPOINTS.values():
    _info["licence"] = "Apache-2.0"


class ClapAudioTower(torch.nn.Module):
    """``ClapModel`` audio side as one module: (input_features, is_longer) -> (B, D)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.fused = bool(model.config.audio_config.enable_fusion)

    def forward(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        kwargs = {"is_longer": is_longer} if self.fused else {}
        out = self.model.get_audio_features(input_features=input_features, **kwargs)
        return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 4.x


class LaionClap(ModelFamily):
    """A loaded ``ClapModel`` with its tokenizer and log-mel front-end (see the module doc).

    Attributes beyond :class:`ModelFamily`: ``model`` (the ``ClapModel``, eval mode),
    ``tokenizer``, ``frontend`` (:class:`LogMelFrontend`), ``device``.
    """

    name = NAME

    def __init__(self, model, tokenizer, frontend: LogMelFrontend, *, model_id: str, revision: str):
        self.model = model
        self.tokenizer = tokenizer
        self.frontend = frontend
        self.model_id = model_id
        self.revision = revision
        self.sample_rate = int(frontend.sampling_rate)
        self.window_samples = int(frontend.max_length)
        self.dim = int(model.config.projection_dim)
        self.fused = bool(model.config.audio_config.enable_fusion)
        self.audio_tower = ClapAudioTower(model)
        self.device = next(model.parameters()).device

    def __repr__(self) -> str:
        kind = "fused" if self.fused else "unfused"
        return f"LaionClap({self.model_id!r}, {kind}, f_min={self.frontend.f_min:g} Hz)"

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.frontend(waveforms, lengths))

    @property
    def window_frontend(self):
        """The log-mel front-end itself where it runs on the CPU: (B, 1 or 4, 1001, 64) per
        window whatever the clip, computed row by row (bit-identical in any batch)."""
        return self.frontend if self.device.type == "cpu" else None

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**tokens.to(self.device))
        return out.pooler_output if hasattr(out, "pooler_output") else out

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale_a.detach().exp())

    def namespace(self) -> dict:
        fe = self.frontend
        return {
            "truncation": fe.truncation,
            "padding": fe.padding,
            "sampling_rate": fe.sampling_rate,
            "n_fft": fe.n_fft,
            "hop_length": fe.hop_length,
            "n_mels": fe.n_mels,
            "f_min": fe.f_min,
            "f_max": fe.f_max,
            "max_length_s": fe.max_length_s,
        }

    def to(self, device: torch.device) -> LaionClap:
        self.model.to(device)
        self.frontend.to(device)
        self.device = torch.device(device)
        return self


def load(
    model_id: str, *, device: torch.device, revision: str | None = None, **kwargs
) -> LaionClap:
    """Load a ``ClapModel`` checkpoint (hub id or folder) with its processor on ``device``."""
    from pathlib import Path

    from transformers import ClapModel, ClapProcessor

    if kwargs:
        raise TypeError(f"the laion-clap family takes no options {sorted(kwargs)}")
    extra = {"revision": revision} if revision else {}
    try:
        clap = ClapModel.from_pretrained(model_id, **extra).eval().to(device)
        processor = ClapProcessor.from_pretrained(model_id, **extra)
    except OSError as exc:
        if Path(model_id).expanduser().exists():
            raise
        raise OSError(unreachable_message(model_id, revision, exc)) from None
    frontend = LogMelFrontend.from_feature_extractor(processor.feature_extractor).to(device)
    rev = resolve_revision(model_id, revision, clap.config)
    return LaionClap(clap, processor.tokenizer, frontend, model_id=model_id, revision=rev)


register_family(
    NAME,
    load,
    model_types=("clap",),
    description="LAION-CLAP (HTSAT + RoBERTa) through transformers' ClapModel",
)
