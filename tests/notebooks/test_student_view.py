"""What a student sees in the executed notebooks of ``make demo``: the demo notice on top, every
figure rendered once and as an image, no progress bars, decoder chatter, kernel log lines or
echoed helper source in the cells (see clap_helpers.devtools.runner.executed_problems)."""

from __future__ import annotations

import json

import nbformat
import pytest

from clap_helpers.devtools import runner

NOTEBOOKS = runner.list_notebooks()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_executed_notebook_reads_cleanly(notebook, executed):
    run = executed(notebook)
    assert runner.executed_problems(run.path) == []
    nb = nbformat.read(run.path, as_version=4)
    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert images >= len(run.results["figures"])  # every saved figure is also shown
    text = json.dumps(nb)
    assert "Kernel is running over TCP" not in text and "Loading weights" not in text
