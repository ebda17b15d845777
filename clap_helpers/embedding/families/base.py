"""The model-family interface: what every audio-text model family gives the encoder.

A *family* is one kind of audio-text model (LAION-CLAP through transformers, PE-Audio, MS-CLAP,
M2D-CLAP, AudioCLIP ...). It owns everything that differs between families: how its checkpoint is
read, its front-end (sample rate, window, features), its audio tower and its text tower. The
encoder (:class:`clap_helpers.embedding.encoder.ClapEncoder`) owns everything that does not:
decoding and resampling to :attr:`ModelFamily.sample_rate`, cutting long clips into
:attr:`ModelFamily.window_samples` windows, batching, precision, the cache, bad-file handling and
L2 normalisation. A speed backend (torch eager, OpenVINO ...) runs :attr:`ModelFamily.audio_tower`
on the tensors :meth:`ModelFamily.features` returns, so every family gets every backend where its
tower can be exported.

Per window the encoder computes::

    feats = family.features(waveforms, lengths)     # tuple of fp32 tensors, deterministic
    emb = family.audio_tower(*feats)                # (B, D), in the chosen precision
    rows = F.normalize(emb.float(), dim=-1)

Used by: clap_helpers.embedding.encoder and every family module in this package.
"""

from __future__ import annotations

import abc

import torch

__all__ = ["ModelFamily"]


class ModelFamily(abc.ABC):
    """One loaded audio-text model: front-end, audio tower and text tower on one device.

    Attributes (set by each family's loader):
        name: family name as users pass it, e.g. ``"laion-clap"``, ``"pe-audio"``,
            ``"msclap-2023"``, ``"m2d-clap"``, ``"audioclip"``.
        model_id: hub id, local folder or checkpoint file it was loaded from.
        revision: hub commit or a content hash of the local files (part of the cache key).
        sample_rate: Hz the audio tower expects; the encoder decodes and resamples to it.
        window_samples: native window length in samples at ``sample_rate``; the encoder cuts
            longer clips into consecutive windows of this length and averages their embeddings
            (``None``: the family takes whole clips of any length itself).
        dim: embedding size D.
        fused: whether the family has a fusion branch for long clips (LAION fused checkpoints).
        openvino: whether ``backend="auto"`` may export :attr:`audio_tower` to OpenVINO
            (class attribute; False where the export fails or traces data-dependent shapes
            or branches wrongly: :mod:`clap_helpers.embedding.backends`).
        audio_tower: ``torch.nn.Module`` mapping ``*features(...)`` to (B, D) embeddings
            (not necessarily normalised). Backends convert or autocast this module only.
    """

    name: str
    model_id: str
    revision: str
    sample_rate: int
    window_samples: int | None
    dim: int
    fused: bool = False
    openvino: bool = True
    audio_tower: torch.nn.Module

    @abc.abstractmethod
    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Front-end in fp32 of a batch of windows: waveforms (B, T) float32 at
        :attr:`sample_rate` (zero-padded after each clip's true length), lengths (B,) int ->
        the inputs of :attr:`audio_tower`, on the family's device. Deterministic."""

    @abc.abstractmethod
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Text tower in fp32: C texts -> (C, D) float32 (not necessarily normalised)."""

    @property
    @abc.abstractmethod
    def logit_scale(self) -> float:
        """Temperature the family multiplies cosines by before a softmax (exp of its logit scale)."""

    @abc.abstractmethod
    def namespace(self) -> dict:
        """Every family setting that changes the numbers (front-end constants, text pooling,
        checkpoint variant): JSON-able, part of the embedding cache key beside ``name``,
        ``model_id`` and ``revision``."""

    @property
    def window_frontend(self):
        """A picklable CPU callable ``(waveforms (B, T), lengths (B,)) -> features`` equal to
        :meth:`features` for families whose features have the same shape for every window and
        never depend on the other rows of the batch (LAION-CLAP's log-mel), else ``None``.
        Where it exists and the family runs on a CPU, the encoder computes each clip's
        features in the decode worker (:class:`clap_helpers.embedding.decoding.WindowFeatures`)."""
        return None

    def to(self, device: torch.device) -> ModelFamily:
        """Move the towers (and any front-end buffers) to ``device``; returns self."""
        self.audio_tower.to(device)
        return self
