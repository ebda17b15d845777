"""Tables for people: counts as integers, one number of decimals, nothing cut, no empty rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clap_helpers.evaluation import tables
from clap_helpers.evaluation import zeroshot as zs


def test_fold_table_reads_well():
    rng = np.random.default_rng(0)
    text = np.eye(4, dtype=np.float32)
    labels = np.repeat(np.arange(4), 6)
    audio = text[labels] + 0.5 * rng.normal(size=(24, 4)).astype(np.float32)
    folds = np.tile([1, 2, 3], 8)
    table = zs.per_fold(audio, labels, folds, text, ks=(1, 3))
    html = tables.for_people(table).to_html()
    assert ">8</td>" in html and ">24</td>" in html  # n per fold and in total, as integers
    assert "8.0" not in html and "nan" not in html.lower()
    shown = {f"{v:.3f}" for v in table["top1"]}
    assert all(f">{v}</td>" in html for v in shown)  # three decimals everywhere


def test_long_text_is_never_cut_and_empty_rows_and_columns_go():
    command = "bash dataset.sh urbansound8k --dest /a/very/long/folder/that/pandas/would/cut/off"
    df = pd.DataFrame(
        {"command": [command, command], "accuracy": [0.5, 0.25], "std": [np.nan, np.nan]},
        index=["a", "b"],
    )
    html = tables.for_people(df).to_html()
    assert command in html and "..." not in html and ">std<" not in html
    numbers = pd.DataFrame({"top1": [0.2, np.nan], "n": [10.0, np.nan]}, index=["fold 1", "std"])
    shown = tables.for_people(numbers).data
    assert list(shown.index) == ["fold 1"] and str(shown["n"].dtype) == "Int64"


def test_counts_are_recognised_by_name_and_value():
    df = pd.DataFrame({"n_train": [35.0], "top5": [1.0], "clips": [2.5], "best_epoch": [2.0]})
    assert tables.count_columns(df) == ["n_train", "best_epoch"]
    assert tables.count_columns(df, extra=["top5"]) == ["n_train", "top5", "best_epoch"]
    series = tables.for_people(pd.Series([0.1234], index=["x"], name="top-1")).to_html()
    assert ">0.123</td>" in series
