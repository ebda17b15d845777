"""A non-LAION family through a zero-shot notebook: 04_urbansound8k_topk on the tiny MS-CLAP 2023,
its text tower given through the notebook's ``model_options`` parameter (one run, not a matrix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clap_helpers.data.loaders import load
from clap_helpers.devtools import runner
from clap_helpers.embedding.loading import load_clap
from clap_helpers.evaluation import zeroshot
from clap_helpers.evaluation.prompts import template_prompts

REPO = Path(__file__).resolve().parents[3]


def test_notebook_04_runs_msclap_through_model_options(
    fixture_env, data_root, other_families, tmp_path
):
    options = {"text_model": str(fixture_env.msclap_text_model)}
    notebook = REPO / "notebooks" / "04_urbansound8k_topk.ipynb"
    params = runner.fixture_parameters(notebook, fixture_env, tmp_path / "figs")
    params.update(
        model=str(fixture_env.msclap_model),
        model_options=options,
        cache_dir=str(tmp_path / "cache"),
        results_path=str(tmp_path / "04.json"),
    )
    results = runner.run_notebook(notebook, tmp_path / "04.ipynb", params, demo=True)
    assert runner.executed_problems(tmp_path / "04.ipynb") == []

    clips, classes = load("urbansound8k", data_root)
    enc = load_clap(fixture_env.msclap_model, "cpu", "fp32", num_workers=0, **options)
    assert enc.family.name == "msclap-2023" and enc.sample_rate == 44_100
    audio = enc.embed_audio(clips["path"], batch_size=8, cache_dir=False, progress=False)
    text = enc.embed_text(template_prompts(classes, "This is a sound of {}."), cache_dir=False)
    ks = zeroshot.useful_ks((1, 3, 5), len(classes))
    expected = zeroshot.evaluate(audio, clips["target"].to_numpy(), text, ks=ks)
    assert (results["n"], results["n_failed"]) == (len(clips), 0)
    assert results["top1"] == pytest.approx(expected["top1"])
    assert results["model"] == str(fixture_env.msclap_model)
