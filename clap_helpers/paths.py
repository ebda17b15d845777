"""Resolve the relative paths notebooks take as parameters, from JupyterLab and papermill alike.

JupyterLab runs a notebook inside ``notebooks/``, papermill from wherever it is started (usually
the repository root). So a relative ``data_root="downloads"`` is looked up in the current folder
and then in each parent folder; the first that holds it wins. Outputs (figures, results) that do
not exist yet go under the project root: the nearest folder, from the current one upwards, that
holds both ``notebooks/`` and ``clap_helpers/`` (else the current folder).

Used by: every notebook (01-10) for data_root, cache_dir, fig_dir and results_path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "project_root",
    "resolve",
]


def project_root(start: str | os.PathLike | None = None) -> Path:
    """Nearest folder from ``start`` (default: cwd) upwards holding notebooks/ and clap_helpers/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "clap_helpers").is_dir():
            return folder
    return here


def resolve(path: str | os.PathLike, start: str | os.PathLike | None = None) -> Path:
    """Absolute path for ``path``: as is if absolute; else the first existing match in the
    current folder or a parent; else relative to :func:`project_root` (for new outputs)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / p).exists():
            return folder / p
    return project_root(here) / p
