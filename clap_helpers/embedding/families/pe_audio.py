"""Meta's Perception Encoder Audio (PE-Audio / PE-AV) through transformers: the ``pe-audio`` family.

Loads ``PeAudioModel`` checkpoints (``config.json`` ``model_type`` ``"pe_audio"``: local folders,
the tiny fixture :mod:`clap_helpers.devtools.fixtures.tiny_pe_audio`) and the audio-text part of
``PeAudioVideoModel`` checkpoints (``"pe_audio_video"``: ``facebook/pe-av-small|base|large``,
whose ``audio_model`` is a ``PeAudioModel``). The audio-text part is built alone
(:func:`load_audio_part`: a ``PeAudioModel`` from the nested ``text_config`` +
``audio_video_config.audio_config``, weights read from the checkpoint's safetensors files, the
video tower never built, so no ``timm``), with the keys transformers' ``PeAudioVideoModel`` would
give it: ``audio_model.<name>`` first, then, as its tied weights fall back,
``text_model.<name>`` (then ``video_model.text_model.<name>``) for the text tower and
``audio_video_encoder.embedder.audio_encoder.<name>`` for the audio encoder. A missing key is an
error; unexpected ``audio_model.*`` keys are a warning. Not yet run against the real hub files
(no network here): the key names come from transformers' source.

* Front-end (:meth:`PeAudio.features`): the raw 48 kHz waveform, as ``PeAudioFeatureExtractor``
  prepares it: each clip reflect-padded to a multiple of the 1920-sample hop (40 ms), the batch
  zero-padded to its longest clip, ``padding_mask`` 1 on each clip's (padded) samples.
* Audio tower (:class:`PeAudioTower`): ``get_audio_embeds`` (the class token of the audio
  transformer through ``audio_head``). Clips of equal padded length run together without
  padding, so a clip's embedding never depends on the other clips of its batch (the conv
  encoder's receptive field would otherwise reach into a neighbour's zero padding).
* Text: the text tower (ModernBERT) with ``output_hidden_states``, the first token of the last
  hidden state through ``text_audio_head``, exactly what ``PeAudioModel.forward`` returns as
  ``text_audio_embeds`` (``get_text_audio_embeds`` crashes in transformers 5.24: it reads hidden
  states it never requests). Run in fp32 by the encoder.
* Scores: the model is trained with a sigmoid loss, ``logit_scale * cosine + bias``; for a
  softmax over classes only the scale matters (:attr:`PeAudio.logit_scale`, not exponentiated).

Long clips: the model takes any length (rotary positions), but its cost grows with the square
of the length and it was trained on short clips, so the encoder cuts clips into consecutive
windows of ``window_seconds`` (default 10 s, as LAION-CLAP; a loader option:
``load_clap(model, window_seconds=30)``) and averages the window embeddings; ``window="first"``
keeps the first. A tail shorter than 1 s is dropped unless it is the whole clip. The window
length is part of the cache key.

Used by: clap_helpers.embedding.encoder (``load_clap``) for PE-Audio checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import ModelFamily
from .registry import register_family, resolve_revision, unreachable_message

__all__ = ["DEFAULT_WINDOW_SECONDS", "HOP", "PeAudio", "PeAudioTower", "load", "load_audio_part"]

NAME = "pe-audio"
SAMPLE_RATE = 48_000
HOP = 1920  # samples per encoder frame (40 ms): the product of the conv strides
DEFAULT_WINDOW_SECONDS = 10.0


class PeAudioTower(torch.nn.Module):
    """``PeAudioModel.get_audio_embeds`` as one module: (input_values, padding_mask) -> (B, D),
    rows grouped by their valid length (see the module doc)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        valid = padding_mask.sum(-1)
        out = None
        for n in torch.unique(valid).tolist():
            rows = (valid == n).nonzero().flatten()
            emb = self.model.get_audio_embeds(
                input_values=input_values[rows, :, :n], padding_mask=padding_mask[rows, :n]
            )
            if out is None:
                out = emb.new_empty((input_values.shape[0], emb.shape[-1]))
            out[rows] = emb
        return out


def _pad_to_hop(clip: torch.Tensor, hop: int) -> torch.Tensor:
    """Reflect-pad a clip (L,) to a multiple of ``hop`` samples, as the feature extractor does."""
    short = (-clip.shape[0]) % hop
    if short == 0:
        return clip
    if short < clip.shape[0]:
        return F.pad(clip[None, None], (0, short), mode="reflect")[0, 0]
    return torch.from_numpy(np.pad(clip.cpu().numpy(), (0, short), "reflect")).to(clip.device)


class PeAudio(ModelFamily):
    """A loaded ``PeAudioModel`` with its tokenizer (see the module doc).

    Attributes beyond :class:`ModelFamily`: ``model`` (the ``PeAudioModel``, eval mode),
    ``tokenizer``, ``hop``, ``window_seconds``, ``device``.
    """

    name = NAME
    openvino = False  # openvino.convert_model fails on its tower (unconverted ops)

    def __init__(self, model, tokenizer, *, model_id: str, revision: str, window_seconds: float):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.revision = revision
        self.sample_rate = SAMPLE_RATE
        self.hop = int(model.config.audio_config.dac_config.hop_length)
        self.window_seconds = float(window_seconds)
        window = int(round(self.window_seconds * SAMPLE_RATE / self.hop)) * self.hop
        if window <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_samples = window
        self.dim = int(model.config.text_config.hidden_size)
        self.audio_tower = PeAudioTower(model)
        self.device = next(model.parameters()).device

    def __repr__(self) -> str:
        return f"PeAudio({self.model_id!r}, window {self.window_seconds:g} s averaged)"

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        clips = [
            _pad_to_hop(waveforms[i, : int(n)].float(), self.hop) for i, n in enumerate(lengths)
        ]
        width = max(c.shape[0] for c in clips)
        values = torch.zeros((len(clips), 1, width))
        mask = torch.zeros((len(clips), width), dtype=torch.long)
        for i, c in enumerate(clips):
            values[i, 0, : c.shape[0]] = c
            mask[i, : c.shape[0]] = 1
        return values.to(self.device), mask.to(self.device)

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        tokens = tokens.to(self.device)
        out = self.model.text_model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            output_hidden_states=True,
        )
        return self.model.text_audio_head(out.hidden_states[-1][:, 0])

    @property
    def logit_scale(self) -> float:
        return float(self.model.text_audio_logit_scale.detach().reshape(-1)[0])

    def namespace(self) -> dict:
        return {
            "input": "waveform reflect-padded to the hop",
            "hop": self.hop,
            "window_s": self.window_seconds,
            "audio": "get_audio_embeds, rows grouped by length",
            "text": "text_audio_head(last hidden state[:, 0])",
        }

    def to(self, device: torch.device) -> PeAudio:
        self.model.to(device)
        self.device = torch.device(device)
        return self


def _weight_files(model_id: str, revision: str | None) -> list[Path]:
    """The safetensors files of a local folder or hub id (cached snapshot first; downloaded
    once unless offline): ``model.safetensors`` or the shards of ``model.safetensors.index.json``."""
    single, index = "model.safetensors", "model.safetensors.index.json"
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        if (folder / single).is_file():
            return [folder / single]
        if not (folder / index).is_file():
            raise FileNotFoundError(f"{model_id} holds neither {single} nor {index}")
        shards = json.loads((folder / index).read_text())["weight_map"].values()
        return [folder / f for f in sorted(set(shards))]
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def get(name: str) -> Path:
        found = try_to_load_from_cache(model_id, name, revision=revision)
        return Path(
            found if isinstance(found, str) else hf_hub_download(model_id, name, revision=revision)
        )

    cached = try_to_load_from_cache(model_id, single, revision=revision)
    if isinstance(cached, str):
        return [Path(cached)]
    try:
        index_file = get(index)
    except RemoteEntryNotFoundError:
        return [get(single)]
    except OSError:
        if isinstance(try_to_load_from_cache(model_id, index, revision=revision), str):
            raise
        return [get(single)]
    shards = json.loads(index_file.read_text())["weight_map"].values()
    return [get(f) for f in sorted(set(shards))]


def _sources(name: str, tied: bool) -> list[str]:
    """Checkpoint keys of ``PeAudioVideoModel`` that give ``audio_model.<name>`` its value, in
    the order transformers' loader (with its tied-weights fallback) would take them."""
    keys = [f"audio_model.{name}"]
    if tied and name.startswith("text_model."):
        keys += [name, f"video_model.{name}"]
    elif tied and name.startswith("audio_encoder."):
        keys.append(f"audio_video_encoder.embedder.{name}")
    return keys


def _stored_dtype(where: dict[str, Path]) -> torch.dtype:
    """dtype of the first floating-point ``audio_model.*`` tensor of the checkpoint."""
    from safetensors import safe_open

    names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for key in sorted(k for k in where if k.startswith("audio_model.")):
        with safe_open(str(where[key]), framework="pt") as st:
            kind = st.get_slice(key).get_dtype()
        if kind in names:
            return names[kind]
    return torch.float32


def load_audio_part(model_id: str, config, *, revision: str | None = None):
    """The ``PeAudioModel`` inside a ``pe_audio_video`` checkpoint (``config``: its
    ``PeAudioVideoConfig``), without building the video tower (see the module doc). Raises
    ``ValueError`` naming the audio-text keys the checkpoint lacks."""
    import warnings

    from safetensors import safe_open
    from transformers import PeAudioModel
    from transformers.initialization import no_init_weights

    where: dict[str, Path] = {}
    for f in _weight_files(model_id, revision):
        with safe_open(str(f), framework="pt") as st:
            where.update(dict.fromkeys(st.keys(), f))
    dtype = config.dtype or _stored_dtype(where)  # as from_pretrained's dtype="auto"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    with no_init_weights():
        model = PeAudioModel._from_config(config.audio_config, dtype=dtype)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    chosen, missing = {}, []
    for name in model.state_dict():
        key = next((k for k in _sources(name, tied) if k in where), None)
        if key is None:
            missing.append(f"audio_model.{name}")
        else:
            chosen[name] = key
    if missing:
        raise ValueError(
            f"{model_id}: the PE-AV checkpoint lacks {len(missing)} weight(s) of its audio-text "
            f"part, e.g. {', '.join(missing[:5])}"
        )
    used = set(chosen.values())
    unexpected = sorted(k for k in where if k.startswith("audio_model.") and k not in used)
    if unexpected:
        warnings.warn(
            f"{model_id}: {len(unexpected)} audio_model.* weight(s) of the checkpoint are not "
            f"used by PeAudioModel, e.g. {', '.join(unexpected[:5])}",
            stacklevel=2,
        )
    state = {}
    for f in sorted(set(where.values())):
        with safe_open(str(f), framework="pt") as st:
            for name, key in chosen.items():
                if where[key] == f:
                    state[name] = st.get_tensor(key)
    model.load_state_dict(state, strict=True)
    return model


def load(
    model_id: str,
    *,
    device: torch.device,
    revision: str | None = None,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> PeAudio:
    """Load a PE-Audio (``pe_audio``) or PE-AV (``pe_audio_video``: its audio-text part)
    checkpoint with its tokenizer on ``device``."""
    from transformers import AutoConfig, AutoTokenizer, PeAudioModel

    extra = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(model_id, **extra)
        if config.model_type == "pe_audio_video":
            model = load_audio_part(model_id, config, revision=revision)
        else:
            model = PeAudioModel.from_pretrained(model_id, **extra)
        tokenizer = AutoTokenizer.from_pretrained(model_id, **extra)
    except OSError as exc:
        if Path(model_id).expanduser().exists():
            raise
        raise OSError(unreachable_message(model_id, revision, exc)) from None
    model = model.eval().to(device)
    rev = resolve_revision(model_id, revision, config)
    return PeAudio(model, tokenizer, model_id=model_id, revision=rev, window_seconds=window_seconds)


register_family(
    NAME,
    load,
    model_types=("pe_audio", "pe_audio_video"),
    description="Meta Perception Encoder Audio (DAC conv + transformer, ModernBERT text)",
)
