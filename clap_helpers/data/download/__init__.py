"""Download the datasets: verified, resumable, idempotent (``bash dataset.sh``).

``cli`` (:func:`fetch` and the command line), ``http`` (resumable HTTP and checksums),
``archives`` (safe, atomic extraction), ``audioset`` (the per-clip AudioSet subset). The public API
is re-exported here: ``ch.download.fetch("esc50", "downloads")``. Standard library only (tqdm when
installed), so ``dataset.sh`` runs before ``make venv``.

Used by: notebook 01_download.
"""

from .archives import MARKER, is_present
from .audioset import (
    AUDIOSET_CLASSES,
    MANIFEST_COLUMNS,
    UNAVAILABLE_COLUMNS,
    AudioSetSummary,
    ClipFetcher,
    ClipUnavailable,
    Segment,
    fetch_audioset,
    read_class_labels,
    read_segments,
)
from .cli import fetch, main
from .http import DownloadError

__all__ = [
    "AUDIOSET_CLASSES",
    "MANIFEST_COLUMNS",
    "MARKER",
    "UNAVAILABLE_COLUMNS",
    "AudioSetSummary",
    "ClipFetcher",
    "ClipUnavailable",
    "DownloadError",
    "Segment",
    "fetch",
    "fetch_audioset",
    "is_present",
    "main",
    "read_class_labels",
    "read_segments",
]
