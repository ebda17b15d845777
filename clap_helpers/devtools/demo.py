"""``make demo``: every notebook, run by papermill on the bundled fixtures, then a summary table.

Builds the synthetic datasets and the tiny random CLAPs under ``build/demo`` (reused when
present), runs each numbered notebook with fixture parameters, writes executed copies to
``build/demo/executed``, figures to ``figs/`` and results JSONs to ``build/demo/results``, and
prints one row per notebook (wrapped to the terminal's width). Accuracies are near chance: the
tiny model is random. The point is that every step runs; real numbers come from real data and
checkpoints (see README). The executed copies say so in a notice cell at the top, and their
figure titles start with "demo" (:func:`clap_helpers.devtools.runner.run_notebook`, ``demo=True``).

Usage: ``python -m clap_helpers.devtools.demo [--root build/demo] [--fig-dir figs] [--only 02 05]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
import time
import traceback
from pathlib import Path

from ..paths import project_root
from .runner import FixtureEnv, fixture_parameters, list_notebooks, run_notebook

__all__ = [
    "main",
    "summarise",
    "summary_rows",
    "SUMMARY_KEYS",
]

# Results shown in the summary, in this order, when a notebook records them. A dict of numbers
# (one per prompt strategy, model run or method) is shown entry by entry; a dict of records by
# their "mean" (or "n"); a list by its length.
SUMMARY_KEYS = (
    "present",
    "datasets",
    "n",
    "n_clips",
    "n_failed",
    "top1",
    "top3",
    "top5",
    "mAP",
    "top1_hit",
    "modes",
    "accuracy",
    "best_strategy",
    "epochs",
)


def _short(value) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            v = v.get("mean", v.get("n")) if isinstance(v, dict) else v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                parts.append(f"{k} {_short(v)}")
        return "{" + ", ".join(parts) + "}" if parts else None
    return None


def summarise(results: dict) -> str:
    """One line of a results JSON's key numbers (see SUMMARY_KEYS)."""
    parts = []
    for key in SUMMARY_KEYS:
        text = _short(results.get(key))
        if text is not None:
            parts.append(f"{key} {text}")
    return "; ".join(parts) or "(no summary numbers)"


def summary_rows(rows: list[tuple[str, str, float, str]], columns: int = 100) -> list[str]:
    """The summary table's lines: a header, then one row per ``(notebook, status, seconds,
    summary)`` with the summary wrapped between words to ``columns`` characters (at least 40 for the
    summary), continuation lines indented under it."""
    width = max((len(r[0]) for r in rows), default=10)
    indent = width + 2 + 6 + 2 + 7 + 2
    lines = [f"{'notebook':<{width}}  status  seconds  results (tiny random model: near chance)"]
    for name, status, seconds, summary in rows:
        wrapped = textwrap.wrap(
            summary, max(40, columns - indent), break_long_words=False, break_on_hyphens=False
        ) or [""]
        lines.append(f"{name:<{width}}  {status:<6}  {seconds:7.1f}  {wrapped[0]}")
        lines += [" " * indent + more for more in wrapped[1:]]
    return lines


def main(argv: list[str] | None = None) -> int:
    root = project_root(Path(__file__).parent)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=root / "build" / "demo")
    parser.add_argument("--fig-dir", type=Path, default=root / "figs")
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    print(f"building fixtures and tiny models in {args.root} ...", flush=True)
    env = FixtureEnv(args.root.resolve()).build()
    print(f"  ready in {time.perf_counter() - start:.1f} s", flush=True)

    notebooks = list_notebooks()
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) for o in args.only)]
    rows, failed = [], 0
    for nb in notebooks:
        print(f"running {nb.name} ...", flush=True)
        t0 = time.perf_counter()
        params = fixture_parameters(nb, env, args.fig_dir.resolve())
        try:
            results = run_notebook(nb, env.executed_dir / nb.name, params, demo=True)
            status, summary = "ok", summarise(results)
        except Exception as exc:  # report and go on with the next notebook
            failed += 1
            traceback.print_exc()
            status, summary = "FAILED", str(exc).strip().splitlines()[-1][:100]
        rows.append((nb.stem, status, time.perf_counter() - t0, summary))

    print()
    print("\n".join(summary_rows(rows, shutil.get_terminal_size((100, 24)).columns)))
    print(
        f"\nexecuted notebooks: {env.executed_dir}\nfigures: {args.fig_dir}\n"
        f"results: {env.results_dir}\ntotal {time.perf_counter() - start:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
