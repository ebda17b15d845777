"""Data: everything about datasets before a model sees them.

``registry`` (one record per dataset: folders, files, archives, sizes, aliases, published numbers),
``loaders`` (metadata -> clip tables), ``audio`` (decoding and resampling), ``overview`` (what is on
disk, durations, class balance, formats), ``soundscapes`` (synthetic mixtures), ``download``
(HTTP with resume and checksums, safe extraction, AudioSet, the ``dataset.sh`` command line).
"""

from .._lazy import attach

MODULES = {m: m for m in ("registry", "loaders", "audio", "overview", "soundscapes", "download")}
__all__ = sorted(MODULES)
__getattr__, __dir__ = attach(__name__, MODULES)
