"""Developer tools: run the notebooks on fixtures and build those fixtures.

``runner`` (papermill with parameters, the fixture environment), ``demo`` (``make demo``: every
notebook on the fixtures), ``fixtures`` (synthetic datasets in the real layouts, tiny random CLAP),
``screenshot`` (the usage.md picture of the web app, on the fixtures).
"""

from .._lazy import attach

MODULES = {m: m for m in ("runner", "demo", "fixtures", "screenshot")}
__all__ = sorted(MODULES)
__getattr__, __dir__ = attach(__name__, MODULES)
