"""Run the numbered notebooks headlessly with papermill, on real data or on the fixtures.

Every notebook has a cell tagged ``parameters`` whose defaults target real data; papermill
injects overrides after it. Its last cell writes a results JSON (:func:`save_results`), which
``make demo`` summarises and the tests check.

A run on the fixtures (``demo=True``) is marked as such for whoever opens the executed copy: a
notice cell at the top (:data:`DEMO_NOTICE`), "demo" in every figure title (the kernel gets
``CLAP_HELPERS_DEMO=1``, read by :func:`clap_helpers.plots.save`) and no progress bars. Every
kernel runs quietly (no "running over TCP" log line in the terminal). :func:`executed_problems`
lists what a student should not see in an executed notebook: a missing notice, a figure shown
twice or as ``<Figure ...>`` text, progress bars and stderr noise.

Used by: ``make demo`` (:mod:`clap_helpers.devtools.demo`) and tests/notebooks/test_notebooks.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..evaluation.results import load_results, save_results
from ..paths import project_root

__all__ = [
    "load_results",  # re-exported from clap_helpers.evaluation.results (ch.runner.save_results)
    "save_results",
    "declared_parameters",
    "DEMO_ENV",
    "DEMO_NOTICE",
    "KERNEL_ARGUMENTS",
    "KERNEL_ENV",
    "executed_problems",
    "NOTICE_TAG",
    "FIXTURE_OVERRIDES",
    "fixture_parameters",
    "FixtureEnv",
    "list_notebooks",
    "notebook_dir",
    "run_notebook",
    "stored_problems",
]

NOTICE_TAG = "demo-notice"
DEMO_NOTICE = (
    "> **Demo run: synthetic fixtures, random tiny model.** This copy was executed by `make demo`"
    " (or the tests) on small synthetic datasets laid out like the real ones, with a randomly"
    " initialised tiny CLAP. Its numbers show that every step runs, not how good CLAP is: do not"
    " compare them with the published results quoted below. For real numbers, run the notebook"
    " on the real data (see the README)."
)
# The kernel of a fixture run: figure titles say "demo" (clap_helpers.plots.save), no tqdm bars
# (tqdm reads TQDM_* defaults; huggingface_hub and transformers read the HF_HUB_ switch).
DEMO_ENV = {"CLAP_HELPERS_DEMO": "1", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# Every kernel: no "Kernel is running over TCP without encryption" log line in the terminal.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
# Every kernel draws inline, whatever the caller's MPLBACKEND (the tests set Agg, under which a
# notebook shows each figure as "<Figure size ... with 1 Axes>" text).
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}

# Parameters a notebook needs on the fixtures besides the common ones; values may name
# FixtureEnv attributes as "{env.attr}".
FIXTURE_OVERRIDES: dict[str, dict] = {
    "05_fma": {"music_model": "{env.model}"},
    "08_adaptation": {"n_robust": 12, "snrs": [10, 0], "background_classes": ["rain"], "top_n": 8},
    "09_cnn_baseline": {"epochs": 2, "cnn_model": "cnn4", "window_s": 2.0},
    "11_model_comparison": {"models": ["{env.model}", "{env.pe_model}"]},
}


def notebook_dir() -> Path:
    return project_root(Path(__file__).parent) / "notebooks"


def list_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order."""
    folder = Path(folder) if folder else notebook_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def stored_problems(path: str | os.PathLike) -> list[str]:
    """What is wrong with a notebook as stored: outputs, execution counts, no parameters cell."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if any(c.get("outputs") for c in code):
        problems.append("stored with outputs")
    if any(c.get("execution_count") is not None for c in code):
        problems.append("stored with execution counts")
    if not any("parameters" in c.metadata.get("tags", []) for c in code):
        problems.append("no cell tagged 'parameters'")
    if (
        not nb.cells
        or nb.cells[0].cell_type != "markdown"
        or not nb.cells[0].source.startswith("#")
    ):
        problems.append("does not start with a markdown title")
    if not problems:
        # papermill silently ignores a parameter line it cannot parse (e.g. "=" in a comment)
        cell = next(c for c in code if "parameters" in c.metadata.get("tags", []))
        assigned = {m.group(1) for m in re.finditer(r"^(\w+)\s*(?::[^=]+)?=", cell.source, re.M)}
        missing = sorted(assigned - set(declared_parameters(path)))
        if missing:
            problems.append(f"papermill cannot parse parameters {missing} (no '=' in comments)")
    return problems


def declared_parameters(path: str | os.PathLike) -> dict:
    """Names and default values (as source text) of the notebook's ``parameters`` cell."""
    import papermill

    return {name: p["default"] for name, p in papermill.inspect_notebook(str(path)).items()}


@dataclass
class FixtureEnv:
    """Where the fixture datasets, the tiny models and the outputs of a fixture run live."""

    root: Path

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "tiny-clap"

    @property
    def fused_model(self) -> Path:
        return self.root / "tiny-clap-fused"

    @property
    def pe_model(self) -> Path:
        return self.root / "tiny-pe-audio"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def executed_dir(self) -> Path:
        return self.root / "executed"

    def build(self) -> FixtureEnv:
        """Write the fixture datasets and the tiny models (reused when already built)."""
        from .fixtures import make_datasets, make_tiny_clap, make_tiny_pe_audio

        make_datasets(self.data_root)
        make_tiny_clap(self.model)
        make_tiny_clap(self.fused_model, fused=True)
        make_tiny_pe_audio(self.pe_model)
        return self


def fixture_parameters(notebook: str | os.PathLike, env: FixtureEnv, fig_dir) -> dict:
    """Parameters that run ``notebook`` on the fixtures (only those it declares)."""
    stem = Path(notebook).stem
    wanted = {
        "data_root": str(env.data_root),
        "n_samples": None,
        "model": str(env.model),
        "batch_size": 8,
        "device": "cpu",
        "precision": "fp32",
        "seed": 0,
        "cache_dir": str(env.cache_dir),
        "fig_dir": str(Path(fig_dir)),
        "results_path": str(env.results_dir / f"{stem}.json"),
    }
    for name, value in FIXTURE_OVERRIDES.get(stem, {}).items():
        if isinstance(value, list):
            value = [v.format(env=env) if isinstance(v, str) else v for v in value]
        wanted[name] = value.format(env=env) if isinstance(value, str) else value
    declared = declared_parameters(notebook)
    return {k: v for k, v in wanted.items() if k in declared}


def run_notebook(
    notebook: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict,
    *,
    demo: bool = False,
    progress: bool = False,
    timeout: int = 1800,
) -> dict:
    """Execute ``notebook`` with papermill into ``output``; return its results JSON (or {}).

    ``demo=True`` (a run on the fixtures): :data:`DEMO_NOTICE` becomes the first cell, and the
    kernel runs with :data:`DEMO_ENV` ("demo" in figure titles, no progress bars). Every kernel
    gets :data:`KERNEL_ENV` (inline figures) and :data:`KERNEL_ARGUMENTS` (no log lines).
    ``progress``: papermill's own cell-by-cell bar in the terminal."""
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    if demo:
        notice = nbformat.v4.new_markdown_cell(DEMO_NOTICE)
        notice.metadata["tags"] = [NOTICE_TAG]
        nb.cells.insert(0, notice)
    with _environ({**KERNEL_ENV, **(DEMO_ENV if demo else {})}):
        papermill.execute_notebook(
            nb,
            str(output),
            parameters=parameters,
            progress_bar=progress,
            cwd=str(Path(notebook).parent),
            execution_timeout=timeout,
            kernel_name="python3",
            extra_arguments=KERNEL_ARGUMENTS,
        )
    results = parameters.get("results_path")
    return load_results(results) if results and Path(results).is_file() else {}


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside (a kernel started inside inherits it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- what a student sees in an executed notebook ------------------------------------------------
_BARE_FIGURE = re.compile(r"^<(Figure|matplotlib\.figure\.Figure)\b.*>$", re.S)
_PROGRESS = re.compile(r"\d+%\||\r|it/s\]|Loading weights")
_WARNING_LINE = re.compile(r"^\w*Warning: \S.*$")  # the one-line format of clap_helpers warnings


def executed_problems(path: str | os.PathLike, demo: bool = True) -> list[str]:
    """What a student should not see in an executed notebook, one entry per finding.

    Checked: the demo notice is the first cell (``demo=True``); no image is shown twice; no
    figure is shown as bare ``<Figure ...>`` text; no progress bar (text or widget); stderr
    holds nothing but one-line warnings of clap_helpers (``EmbeddingWarning: ...``): no echoed
    source lines, no decoder chatter, no kernel log lines; no cell raised."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    if demo and not (nb.cells and NOTICE_TAG in nb.cells[0].metadata.get("tags", [])):
        problems.append("no demo notice at the top")
    seen: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                problems.append(f"cell {i}: raised {out.get('ename')}")
            elif kind == "stream":
                text = out.get("text", "")
                noisy = _PROGRESS.search(text) is not None
                if out.get("name") == "stderr":
                    lines = [line for line in text.splitlines() if line.strip()]
                    noisy = noisy or not all(_WARNING_LINE.match(line) for line in lines)
                if noisy:
                    problems.append(f"cell {i}: noise on {out.get('name')}: {text[:120]!r}")
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                plain = str(data.get("text/plain", ""))
                if "application/vnd.jupyter.widget-view+json" in data and _PROGRESS.search(plain):
                    problems.append(f"cell {i}: progress bar {plain[:60]!r}")
                elif "image/png" in data:
                    digest = hashlib.sha1(str(data["image/png"]).encode()).hexdigest()
                    if digest in seen:
                        problems.append(f"cell {i}: image already shown in cell {seen[digest]}")
                    seen.setdefault(digest, i)
                elif _BARE_FIGURE.match(plain.strip()):
                    problems.append(f"cell {i}: figure shown as text {plain.strip()[:60]!r}")
    return problems
