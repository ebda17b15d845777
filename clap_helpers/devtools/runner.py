"""Run the numbered notebooks headlessly with papermill, on real data or on the fixtures.

Every notebook has a cell tagged ``parameters`` whose defaults target real data; papermill
injects overrides after it. Its last cell writes a results JSON (:func:`save_results`), which
``make demo`` summarises and the tests check.

Used by: ``make demo`` (:mod:`clap_helpers.devtools.demo`) and tests/notebooks/test_notebooks.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..evaluation.results import load_results, save_results
from ..paths import project_root

__all__ = [
    "load_results",  # re-exported from clap_helpers.evaluation.results (ch.runner.save_results)
    "save_results",
    "declared_parameters",
    "FIXTURE_OVERRIDES",
    "fixture_parameters",
    "FixtureEnv",
    "list_notebooks",
    "notebook_dir",
    "run_notebook",
    "stored_problems",
]

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
    progress: bool = False,
    timeout: int = 1800,
) -> dict:
    """Execute ``notebook`` with papermill into ``output``; return its results JSON (or {})."""
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        progress_bar=progress,
        cwd=str(Path(notebook).parent),
        execution_timeout=timeout,
        kernel_name="python3",
    )
    results = parameters.get("results_path")
    return load_results(results) if results and Path(results).is_file() else {}
