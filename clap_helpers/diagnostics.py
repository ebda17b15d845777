"""Warnings and third-party chatter: what a student sees when something is worth saying.

Owns :class:`ClapWarning`, the base class of every warning the package emits (``AudioWarning``,
``EmbeddingWarning``, ``CacheWarning``, ``FeatureWarning``, ``CollinearTextWarning`` and the
plain notes of the evaluation modules). A ``ClapWarning`` is shown

* as **one line**, ``EmbeddingWarning: 1 of 9 files could not be embedded (NaN rows):
  000002.mp3: truncated (skipped)``, without the file and source line of the helper that raised
  it (Python's default format echoes ``compare.py:201`` and a line of helper code in red);
* **once** per process and message (Python's ``"once"`` action), so a warning about the same
  file in three runs of a comparison appears once; a helper that warns about many files says it
  in one warning with a count (:func:`name_files`).

Both are installed when this module is imported (every module that defines a warning imports
it); other packages' warnings keep Python's format. :func:`quiet_loading` silences the
"Loading weights" progress bar of ``from_pretrained``; :func:`bars_off` lets ``TQDM_DISABLE=1``
(set in the kernels of ``make demo``) switch off the package's own bars, which pass ``disable=``
explicitly and so would not see it.

Used by: every module that warns; clap_helpers.embedding.encoder (model loading).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import PurePath

__all__ = [
    "ClapWarning",
    "bars_off",
    "format_warning",
    "install",
    "name_files",
    "quiet_loading",
]


class ClapWarning(UserWarning):
    """Base class of the package's warnings: shown as one line, once per message."""


_python_format = warnings.formatwarning
# Messages already shown. Python's "once" alone is not enough: CPython forgets what it has shown
# whenever any package changes the warning filters (importing scipy or sympy does, and loading a
# model imports them), so a comparison of five models printed the same warning five times.
_SHOWN: set[str] = set()


def format_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` for the package's warnings: ``"Category: message"`` on one
    line, and nothing for a message already shown in this process; any other warning keeps the
    format it had."""
    if isinstance(category, type) and issubclass(category, ClapWarning):
        text = f"{category.__name__}: {' '.join(str(message).split())}\n"
        if text in _SHOWN:
            return ""
        _SHOWN.add(text)
        return text
    return _python_format(message, category, filename, lineno, line)


def install() -> None:
    """Show :class:`ClapWarning` as one line, once per message (idempotent; run on import)."""
    if warnings.formatwarning is not format_warning:
        warnings.formatwarning = format_warning
    if not any(f[0] == "once" and f[2] is ClapWarning for f in warnings.filters):
        warnings.filterwarnings("once", category=ClapWarning)


def name_files(items: Iterable[tuple[str, str]], limit: int = 3) -> str:
    """``[(path, reason)]`` as ``"a.wav: reason; b.wav: reason and 2 more"``: file names, not
    folders, so a warning about many files stays one readable line."""
    items = list(items)
    shown = "; ".join(f"{PurePath(str(p)).name}: {r}" for p, r in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def bars_off(progress: bool = True) -> bool:
    """``disable=`` for a tqdm bar the caller asked for with ``progress``: True when it did not,
    or when the environment says ``TQDM_DISABLE=1`` (``true``, ``yes``)."""
    return not progress or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Inside: no tqdm bars from transformers and huggingface_hub ("Loading weights", frozen at
    0 % in a saved notebook); they come back on exit. Warnings and errors are not touched."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


install()
