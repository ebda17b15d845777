"""The runner marks fixture runs as demos and finds what a student should not see."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from clap_helpers.devtools import runner


def _notebook(tmp_path, *cells, notice=True):
    nb = new_notebook(cells=list(cells))
    if notice:
        first = new_markdown_cell(runner.DEMO_NOTICE)
        first.metadata["tags"] = [runner.NOTICE_TAG]
        nb.cells.insert(0, first)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def _code(*outputs):
    return new_code_cell("x", outputs=list(outputs))


def _png(data="iVBORw0KGgo=", kind="execute_result"):
    extra = {"execution_count": 1} if kind == "execute_result" else {}
    return new_output(kind, data={"image/png": data, "text/plain": "<Figure>"}, **extra)


def test_a_clean_notebook_has_no_problems(tmp_path):
    warning = new_output("stream", name="stderr", text="EmbeddingWarning: 1 of 9 files ...\n")
    path = _notebook(tmp_path, _code(_png("A")), _code(_png("B", "display_data"), warning))
    assert runner.executed_problems(path) == []


def test_each_thing_a_student_should_not_see_is_found(tmp_path):
    bar = new_output(
        "display_data",
        data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
            "text/plain": "Loading weights:   0%|          | 0/101",
        },
    )
    bare = new_output("execute_result", data={"text/plain": "<Figure size 1300x550 with 2 Axes>"})
    echo = new_output(
        "stream",
        name="stderr",
        text="/x/compare.py:201: EmbeddingWarning: a.mp3: truncated\n  audio = enc.embed(...)\n",
    )
    chatter = new_output("stream", name="stderr", text="Note: Illegal Audio-MPEG-Header\n")
    path = _notebook(
        tmp_path,
        _code(bar),
        _code(bare),
        _code(echo),
        _code(chatter),
        _code(_png("A", "display_data"), _png("A")),  # shown by the backend, then as `fig`
        notice=False,
    )
    found = "\n".join(runner.executed_problems(path))
    assert "no demo notice" in found
    assert "cell 0: progress bar 'Loading weights" in found
    assert "cell 1: figure shown as text" in found
    assert "cell 2: noise on stderr" in found and "cell 3: noise on stderr" in found
    assert "cell 4: image already shown in cell 4" in found
    assert runner.executed_problems(path, demo=False)[0].startswith("cell 0")


def test_a_demo_run_has_the_notice_the_demo_kernel_and_no_noise(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "MPLBACKEND", "Agg"
    )  # as the tests set it: the kernel must draw inline anyway
    source = tmp_path / "src.ipynb"
    nbformat.write(
        new_notebook(
            cells=[
                new_markdown_cell("# title"),
                new_code_cell("import os\nprint(os.environ.get('CLAP_HELPERS_DEMO'))"),
                new_code_cell(
                    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1])\n"
                    "plt.close(fig)\nfig"
                ),
            ],
            metadata={
                "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}
            },
        ),
        source,
    )
    out = tmp_path / "out" / "run.ipynb"
    assert runner.run_notebook(source, out, {}, demo=True) == {}
    nb = nbformat.read(out, as_version=4)
    assert runner.NOTICE_TAG in nb.cells[0].metadata["tags"]
    assert "synthetic fixtures, random tiny model" in nb.cells[0].source
    assert nb.cells[1].source == "# title"
    assert nb.cells[2].outputs[0]["text"] == "1\n"
    assert "image/png" in nb.cells[3].outputs[0]["data"]  # shown once, as an image
    assert len(nb.cells[3].outputs) == 1
    assert runner.executed_problems(out) == []
    runner.run_notebook(source, out, {})
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[0].source == "# title" and nb.cells[1].outputs[0]["text"] == "None\n"
