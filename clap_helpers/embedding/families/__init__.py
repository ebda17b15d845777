"""Model families: one module per kind of audio-text model, all behind :class:`ModelFamily`.

``base`` (the interface), ``registry`` (which family loads a checkpoint: ``register_family``,
``load_family``, detection from ``config.json`` ``model_type`` or a family's own ``detect``) and
one module per family: ``laion`` (LAION-CLAP through transformers' ``ClapModel``),
``pe_audio`` (Meta's PE-Audio / PE-AV through ``PeAudioModel``), ``msclap`` (MS-CLAP 2022/2023
from the official files; towers in ``msclap_audio``), ``m2d_clap`` (M2D-CLAP from its release
``.pth``) and ``audioclip`` (AudioCLIP from ``AudioCLIP-Full-Training.pt``).

Used by: clap_helpers.embedding.encoder (``load_clap``) and notebooks 02-11 through it.
"""

from .base import ModelFamily
from .registry import (
    FAMILIES,
    FamilySpec,
    UnknownFamilyError,
    detect_family,
    family_names,
    load_family,
    register_family,
)

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "ModelFamily",
    "UnknownFamilyError",
    "detect_family",
    "family_names",
    "load_family",
    "register_family",
]
