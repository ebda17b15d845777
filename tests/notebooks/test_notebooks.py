"""Every numbered notebook: stored clean, and run end to end by papermill on the fixtures
(executed once per session by the ``executed`` fixture, tests/notebooks/conftest.py)."""

from __future__ import annotations

import pytest

from clap_helpers.devtools import runner

# Results keys each notebook's last cell must record. A notebook missing here fails
# test_every_notebook_is_tested, so no notebook goes untested.
EXPECTED_RESULTS = {
    "01_download": ["present", "missing", "status", "datasets", "class_balance", "example"],
    "02_esc50_zeroshot": ["top1", "top3", "top5", "n", "n_failed", "per_fold_top1"],
    "03_augmented_labels": ["strategies", "top1", "best_strategy", "gains", "losses"],
    "04_urbansound8k_topk": ["top1", "top3", "top5", "n", "n_failed", "per_fold_top1"],
    "05_fma": ["n", "n_failed", "top1", "top3", "text_max_cosine", "per_split_top1", "window_demo"],
    "06_audioset_subset": [
        "mAP",
        "top1_hit",
        "top3_hit",
        "top5_hit",
        "top1_primary",
        "per_class_ap",
    ],
    "07_tsne": ["datasets", "skipped"],
    "08_adaptation": ["modes", "comparison", "robustness", "tau_sweep", "n_soundscapes"],
    "09_cnn_baseline": ["accuracy", "f1", "per_fold", "comparison", "n_clips", "n_failed"],
    "10_sound_search": ["n_clips", "text_hits", "top1_label", "example_hits", "text_to_text"],
    "11_model_comparison": [
        "models",
        "families",
        "datasets",
        "top1",
        "top3",
        "winners",
        "published",
    ],
}

# Checks of the numbers themselves on the fixtures. The tiny CLAP is random, so zero-shot is near
# chance, but the fixture classes sound different: methods that learn from labelled embeddings
# must separate them, which a label mix-up anywhere in the pipeline would prevent.
CHECKS = {
    "01_download": lambda r: len(r["present"]) == 4 and not r["missing"],
    "02_esc50_zeroshot": lambda r: r["n"] == 50 and r["n_failed"] == 0,
    "03_augmented_labels": lambda r: (
        r["n"] == 50 and set(r["top1"]) == {"label", "template", "descriptive", "ensemble"}
    ),
    "04_urbansound8k_topk": lambda r: (  # 4 classes: top-5 would be 100 % whatever happens
        r["n"] == 40 and r["n_failed"] == 0 and r["top1"] <= r["top3"] and r["top5"] is None
    ),
    "05_fma": lambda r: (
        r["n"] == 9
        and set(r["n_failed"].values()) == {1}  # the truncated fixture track, named and skipped
        and all(r["top3"][k] >= r["top1"][k] for k in r["top1"])
        and max(r["text_max_cosine"].values()) < 0.99
    ),
    "06_audioset_subset": lambda r: (
        r["n"] == 16 and r["top1_hit"] <= r["top3_hit"] <= 1.0 and r["top5_hit"] is None
    ),
    "07_tsne": lambda r: (
        r["skipped"] == []
        and {k: v["n"] for k, v in r["datasets"].items()}
        == {"esc50": 50, "urbansound8k": 40, "fma_small": 8, "audioset": 16}
    ),
    "08_adaptation": lambda r: (
        r["modes"]["linear"]["mean"] >= 0.5
        and r["modes"]["sv"]["mean"] >= 0.5
        and set(r["modes"])
        == {"zs", "tgap", "sv", "linear", "label_free (inductive)", "label_free (transductive)"}
        and r["n_soundscapes"] == 24
    ),
    "09_cnn_baseline": lambda r: (
        r["n_clips"] == 50
        and r["epochs"] == 2
        and 0 <= r["accuracy"]["cnn4"] <= 1
        and len(r["comparison"]) >= 3
    ),
    "10_sound_search": lambda r: (
        r["n_clips"] == 50
        and len(r["text_hits"]) == len(r["top1_label"]) * r["top_k"]
        and len(r["example_hits"]) == r["top_k"]
        and len(r["text_to_text"]) > 0
    ),
    "11_model_comparison": lambda r: (
        r["families"] == ["laion-clap", "pe-audio"]
        and r["datasets"] == ["audioset", "esc50", "fma_small", "urbansound8k"]
        and r["n"]["esc50"] == 50
        and len(r["table"]) == 2 * 4 * 4  # models x datasets x prompt strategies
        and all(0 <= v <= 1 for m in r["top1"].values() for v in m.values())
    ),
}

NOTEBOOKS = runner.list_notebooks()


def test_every_notebook_is_tested():
    assert NOTEBOOKS, "no notebooks found"
    assert {nb.stem for nb in NOTEBOOKS} == set(EXPECTED_RESULTS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(notebook):
    assert runner.stored_problems(notebook) == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_fixtures(notebook, executed):
    run = executed(notebook)
    results, fig_dir = run.results, run.fig_dir
    assert results.get("notebook") == notebook.stem
    missing = [k for k in EXPECTED_RESULTS[notebook.stem] if k not in results]
    assert not missing, f"results JSON lacks {missing}"
    check = CHECKS.get(notebook.stem)
    assert check is None or check(results), f"unexpected results: {results}"
    assert results.get("figures"), "the notebook recorded no figure"
    for name in results["figures"]:
        figure = fig_dir / name
        assert figure.is_file() and figure.stat().st_size > 1000, f"{figure} missing or empty"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
