"""Results files and published numbers: the one way a notebook's results are written and read.

Schema of a results file (``results/NN_name.json``, written by the last cell of every notebook):
one JSON object, strict JSON (NaN and inf are written as ``null``), keys are strings; numpy arrays
become nested lists, numpy scalars plain numbers, a pandas DataFrame a list of row records (its
index as the first column), a Series an object, paths strings. Accuracies are fractions in [0, 1]
under ``top1``/``mean`` (with ``std`` where folds exist); notebook 08 keeps its cross-validated
modes under ``[dataset]["modes"][mode] = {"mean", "std", ...}``. :func:`read_accuracy` reads a
mean and std from any of these shapes, so summaries never guess keys.

The published accuracies come from the dataset registry
(:attr:`clap_helpers.data.registry.DatasetRecord.published`); :func:`published_table`,
:func:`published_comparison` and :func:`compare_table` put ours next to them.

Used by: the last cell of every notebook (01-11), notebooks 04, 08 and 09 (tables), ``make demo``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import registry
from ..paths import resolve

__all__ = [
    "PUBLISHED_TOP1",
    "compare_table",
    "load_results",
    "published_comparison",
    "published_table",
    "read_accuracy",
    "save_results",
    "to_jsonable",
]

_NAN = float("nan")


# ------------------------------------------------------------------------------- results files
def to_jsonable(value: Any) -> Any:
    """Plain Python for strict JSON, following the schema in the module docstring."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return to_jsonable(value.reset_index().to_dict(orient="records"))
    if isinstance(value, pd.Series):
        return to_jsonable(value.to_dict())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_results(path: str | os.PathLike, results: dict) -> Path:
    """Write a notebook's results as strict JSON (schema above), atomically; return the path.

    A relative ``path`` goes under the project root (:func:`clap_helpers.paths.resolve`).
    Used by: the last cell of every notebook.
    """
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(results), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def load_results(path: str | os.PathLike) -> dict:
    """A results file as written by :func:`save_results` (``FileNotFoundError`` if absent)."""
    return json.loads(resolve(path).read_text())


def read_accuracy(value: Any) -> tuple[float, float]:
    """``(mean, std)`` fractions from a result entry: a number, or a mapping holding ``mean``,
    ``accuracy`` or ``top1`` (and optionally ``std``). NaN where absent."""
    if isinstance(value, Mapping):
        for key in ("mean", "accuracy", "top1"):
            if isinstance(value.get(key), (int, float)) and not isinstance(value[key], bool):
                std = value.get("std")
                return float(value[key]), float(std) if isinstance(std, (int, float)) else _NAN
        return _NAN, _NAN
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), _NAN
    return _NAN, _NAN


# --------------------------------------------------------------------------- published numbers
_TABLE_DATASETS = {"esc50": "esc50", "urbansound8k": "us8k"}  # column prefixes of the table


def published_table() -> pd.DataFrame:
    """Published top-1 accuracies (%) on ESC-50 and UrbanSound8K; NaN where none is published.

    Columns: ``model``, ``esc50_zs``, ``us8k_zs``, ``esc50_linear``, ``us8k_linear``, ``note``;
    one row per model, in the registry's order.

    Used by: notebook 08_adaptation.
    """
    rows: dict[str, dict[str, Any]] = {}
    for name, prefix in _TABLE_DATASETS.items():
        for p in registry.RECORDS[name].published:
            method = {"zero-shot": "zs", "linear probe": "linear"}.get(p.method)
            if method is None:
                continue
            row = rows.setdefault(p.model, {"model": p.model, "note": p.note})
            row[f"{prefix}_{method}"] = p.top1
    columns = ["model", "esc50_zs", "us8k_zs", "esc50_linear", "us8k_linear", "note"]
    return pd.DataFrame(list(rows.values())).reindex(columns=columns)


def _published_top1() -> dict[str, dict[str, float]]:
    """Zero-shot top-1 (fractions) of laion/clap-htsat-unfused and its paper, per dataset."""
    out = {}
    for name, rec in registry.RECORDS.items():
        rows = [
            p
            for p in rec.published
            if p.method == "zero-shot" and p.model.startswith(("LAION-CLAP", "laion/clap-htsat"))
        ]
        if rows:
            out[name] = {p.model: p.top1 / 100.0 for p in rows}
    return out


PUBLISHED_TOP1 = _published_top1()
"""{dataset: {source: top-1 fraction}} for the LAION-CLAP paper and the transformers re-run."""


def published_comparison(dataset: str, top1: float, label: str = "this run") -> pd.DataFrame:
    """Our top-1 next to the published zero-shot numbers (04_urbansound8k_topk; ESC-50 too).

    Index "source" (``label`` first, then :data:`PUBLISHED_TOP1`'s entries), columns
    ``top1_percent`` and ``difference_points`` (our top-1 minus that row's, in points; 0 for our
    row). ``dataset``: "esc50" or "urbansound8k" (any registry alias, e.g. "us8k")."""
    try:
        key = registry.canonical_name(dataset)
    except ValueError:
        key = str(dataset)
    if key not in PUBLISHED_TOP1:
        raise ValueError(f"no published numbers for {dataset!r}; known: {sorted(PUBLISHED_TOP1)}")
    rows = {label: float(top1), **PUBLISHED_TOP1[key]}
    return pd.DataFrame(
        {
            "top1_percent": [100.0 * v for v in rows.values()],
            "difference_points": [100.0 * (float(top1) - v) for v in rows.values()],
        },
        index=pd.Index(list(rows), name="source"),
    )


_METHOD_NAMES = {"zs": "zero-shot", "linear": "linear probe"}
# What each of our methods reads besides the text prompts (by label prefix).
_USES = (
    ("zs", "nothing"),
    ("zero-shot", "nothing"),
    ("tgap", "unlabelled audio"),
    ("label_free (transductive)", "unlabelled audio (transductive)"),
    ("label_free", "unlabelled audio"),
    ("sv", "labels"),
    ("linear", "labels"),
)


def compare_table(
    ours: Mapping[str, Mapping[str, Any] | float], dataset: str, model: str = "ours"
) -> pd.DataFrame:
    """Our per-mode mean ± std next to the published numbers for ``dataset``.

    Args:
        ours: {method label: :func:`clap_helpers.evaluation.adapt.crossval` result} (anything
            :func:`read_accuracy` reads, as fractions in [0, 1]). The label is shown as-is,
            except ``"zs"``/``"linear"`` which become ``"zero-shot"``/``"linear probe"``.
        dataset: ``"esc50"`` or ``"urbansound8k"`` (any registry alias, e.g. ``"us8k"``).
        model: name shown in the ``model`` column of our rows.

    Returns:
        DataFrame with columns ``source`` ("published"/"ours"), ``model``, ``method``,
        ``accuracy`` (%), ``std`` (%, NaN for published), ``uses`` (what the method reads besides
        the prompts: ``"nothing"``, ``"unlabelled audio"``, ``"unlabelled audio
        (transductive)"`` when the evaluation clips are in the pool, or ``"labels"``; empty for
        an unknown label of ours), ``text`` ("91.2 ± 1.3"); published rows first (zero-shot,
        linear probe, then training-free methods beyond zero-shot), then ours in given order.

    Used by: notebook 08_adaptation.
    """
    try:
        key = registry.canonical_name(dataset)
    except ValueError:
        key = None
    if key not in _TABLE_DATASETS:
        titles = " or ".join(registry.RECORDS[n].title for n in _TABLE_DATASETS)
        raise ValueError(f"dataset must be {titles}, got {dataset!r}")
    published = registry.RECORDS[key].published
    rows = [
        ("published", p.model, p.method, float(p.top1), _NAN, p.uses)
        for method in ("zero-shot", "linear probe", "training-free")
        for p in published
        if p.method == method and np.isfinite(p.top1)
    ]
    for label, res in ours.items():
        mean, std = read_accuracy(res)
        method = _METHOD_NAMES.get(label, label)
        uses = next((u for prefix, u in _USES if str(label).startswith(prefix)), "")
        rows.append(("ours", model, method, 100.0 * mean, 100.0 * std, uses))
    columns = ["source", "model", "method", "accuracy", "std", "uses"]
    out = pd.DataFrame(rows, columns=columns)
    out["text"] = [
        f"{a:.1f}" if not np.isfinite(s) else f"{a:.1f} ± {s:.1f}"
        for a, s in zip(out["accuracy"], out["std"], strict=True)
    ]
    return out
