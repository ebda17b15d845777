"""Model families: one module per kind of audio-text model, all behind :class:`ModelFamily`.

Used by: clap_helpers.embedding.encoder (``load_clap``) and notebooks 02-11 through it.
"""

from .base import ModelFamily

__all__ = ["ModelFamily"]
