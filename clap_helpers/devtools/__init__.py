"""Developer tools: run the notebooks on fixtures and build those fixtures.

``runner`` (papermill with parameters, the fixture environment), ``demo`` (``make demo``: every
notebook on the fixtures), ``fixtures`` (synthetic datasets in the real layouts, tiny random CLAP).
"""

from .._lazy import attach

MODULES = {m: m for m in ("runner", "demo", "fixtures")}
__all__ = sorted(MODULES)
__getattr__, __dir__ = attach(__name__, MODULES)
