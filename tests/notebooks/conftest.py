"""Each numbered notebook is executed once per test session, as ``make demo`` runs it (demo
notice, demo kernel), into one shared folder; every notebook test reads that executed copy.

Run in number order (the tests are parametrised in that order), so notebook 09 finds the
results of 02 and 08 next to its own, as in ``make demo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from clap_helpers.devtools import runner


@dataclass
class Executed:
    path: Path  # the executed copy
    results: dict  # its results JSON
    fig_dir: Path


@pytest.fixture(scope="session")
def executed(fixture_env, data_root, tiny_clap, tiny_clap_fused, tiny_pe_audio, tmp_path_factory):
    """``executed(notebook) -> Executed``: runs the notebook the first time it is asked for
    (a failure is raised again for every test that asks)."""
    folder = tmp_path_factory.mktemp("executed")
    done: dict[str, Executed | BaseException] = {}

    def run(notebook: Path) -> Executed:
        if notebook.stem not in done:
            params = runner.fixture_parameters(notebook, fixture_env, folder / "figs")
            params["results_path"] = str(folder / f"{notebook.stem}.json")
            try:
                results = runner.run_notebook(notebook, folder / notebook.name, params, demo=True)
                done[notebook.stem] = Executed(folder / notebook.name, results, folder / "figs")
            except Exception as exc:  # noqa: BLE001 - reported by each test that needs it
                done[notebook.stem] = exc
        outcome = done[notebook.stem]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return run
