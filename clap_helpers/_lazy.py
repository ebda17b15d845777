"""Lazy attribute access for the package and its subpackages (owns nothing else).

``attach(__name__, {"short": "relative.module", ...})`` returns the ``__getattr__`` and ``__dir__``
a package module needs so that ``pkg.short`` imports ``pkg.relative.module`` on first use. Importing
``clap_helpers`` therefore costs nothing, and ``python -m clap_helpers.data.download`` does not pay
for torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["attach"]


def attach(
    package: str, modules: Mapping[str, str], names: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        modules: attribute -> module path relative to ``package`` (``"loaders"``, ``"data.audio"``).
        names: attribute -> module path relative to ``package`` that defines an object of that name.
    """
    names = dict(names or {})

    def __getattr__(attr: str) -> Any:
        if attr in modules:
            return importlib.import_module(f"{package}.{modules[attr]}")
        if attr in names:
            return getattr(importlib.import_module(f"{package}.{names[attr]}"), attr)
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted({*vars(module), *modules, *names})

    return __getattr__, __dir__
