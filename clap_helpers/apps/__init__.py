"""Apps: interactive use of embeddings.

``search`` (a sound collection indexed by text and by example, and its notebook widget), ``web``
(the Gradio search app: ``python -m clap_helpers.apps.web``).
"""

from .._lazy import attach

MODULES = {m: m for m in ("search", "web")}
__all__ = sorted(MODULES)
__getattr__, __dir__ = attach(__name__, MODULES)
