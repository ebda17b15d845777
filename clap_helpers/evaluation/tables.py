"""Tables for people: how a notebook shows a DataFrame of results.

pandas shows a float column of counts as ``50.0``, every float with six decimals, ``NaN`` where
nothing is defined (the std of a single fold) and cuts any text longer than 50 characters with
"...". :func:`for_people` fixes these for display only: counts are integers, numbers have the
same number of decimals, empty cells stay empty, rows and columns with nothing in them are
dropped, and text is shown whole. It returns a pandas ``Styler`` (HTML in JupyterLab, in the
HTML export and in papermill's output); the DataFrame itself, which the results files store, is
not changed.

Used by: every notebook that shows a table (01-11).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["COUNT_COLUMNS", "count_columns", "for_people"]

# Columns that hold counts wherever they appear (any column named n_* counts as well).
COUNT_COLUMNS = frozenset(
    {
        "n",
        "clips",
        "tracks",
        "items",
        "points",
        "classes",
        "folds",
        "support",
        "positives",
        "failed",
        "best_epoch",
        "epoch",
        "headers_read",
        "unreadable",
        "files_missing",
        "multi_label",
        "min_clips",
        "max_clips",
        "as primary",
        "total",
        "both_correct",
        "only_a",
        "only_b",
        "neither",
        "samplerate",
        "channels",
    }
)


def count_columns(table: pd.DataFrame, extra: Iterable[str] = ()) -> list:
    """The numeric columns of ``table`` that hold counts: named in :data:`COUNT_COLUMNS` or
    ``extra``, or ``n_*``, and whole numbers wherever defined."""
    names = COUNT_COLUMNS | set(extra)
    out = []
    for col in table.columns:
        label = col[-1] if isinstance(col, tuple) else col
        if not (str(label) in names or str(label).startswith("n_")):
            continue
        values = pd.to_numeric(table[col], errors="coerce")
        if not pd.api.types.is_numeric_dtype(table[col]) or values.isna().all():
            continue
        finite = values[np.isfinite(values.astype(float))]
        if (finite == finite.round()).all():
            out.append(col)
    return out


def for_people(
    table: pd.DataFrame | pd.Series,
    digits: int = 3,
    *,
    counts: Iterable[str] = (),
    empty: str = "",
    drop_empty: bool = True,
) -> Any:
    """``table`` ready to read: a pandas ``Styler`` with counts as integers (:func:`count_columns`,
    plus ``counts``), every other number with ``digits`` decimals, ``empty`` for missing values,
    text never cut, and (``drop_empty``) the rows and columns without a single value left out
    (e.g. a "std" row of one fold). A Series is shown as a one-column table."""
    df = table.to_frame() if isinstance(table, pd.Series) else table.copy()
    if drop_empty and len(df.columns) and len(df):
        df = df.dropna(axis=1, how="all")
        numeric = df.select_dtypes("number").columns
        if len(numeric):
            df = df[~df[numeric].isna().all(axis=1) | df.drop(columns=numeric).notna().any(axis=1)]
    whole = count_columns(df, counts)
    for col in whole:
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    styler = df.style.format(precision=digits, na_rep=empty, thousands=None)
    if whole:
        styler = styler.format("{:d}", subset=whole, na_rep=empty)
    return styler
