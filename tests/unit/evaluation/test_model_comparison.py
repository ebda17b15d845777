"""Tests for clap_helpers.evaluation.model_comparison on hand-made results (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from clap_helpers.evaluation import model_comparison as mc


@pytest.fixture
def comp():
    c = mc.Comparison()
    c.families = {"laion/clap-htsat-unfused": "laion-clap", "/x/pe": "pe-audio"}
    c.classes = {"esc50": ["dog", "rain", "siren"]}
    for model, top1, per_class in (
        ("laion/clap-htsat-unfused", 0.5, [1.0, 0.5, 0.0]),
        ("/x/pe", 0.6, [0.5, 0.5, 0.8]),
    ):
        for strategy in ("label", "template"):
            bump = 0.1 if strategy == "template" else 0.0
            c.rows.append(
                {
                    "model": model,
                    "family": c.families[model],
                    "dataset": "esc50",
                    "strategy": strategy,
                    "top1": top1 + bump,
                    "top3": 0.9,
                    "n": 40,
                    "n_failed": 0,
                }
            )
            c.per_class.setdefault("esc50", {})[(model, strategy)] = np.array(per_class)
    return c


def test_accuracy_tables(comp):
    wide = mc.accuracy_table(comp)
    assert list(wide.index) == comp.models
    assert wide.loc["/x/pe", ("esc50", "template")] == pytest.approx(0.7)
    one = mc.accuracy_table(comp, "top1", strategy="label")
    assert one.loc["laion/clap-htsat-unfused", "esc50"] == pytest.approx(0.5)


def test_class_winners_and_ties(comp):
    w = mc.class_winners(comp, "esc50")
    assert list(w["winner"]) == ["laion/clap-htsat-unfused", "tie", "/x/pe"]
    assert w["margin"].tolist() == pytest.approx([0.5, 0.0, 0.8])
    counts = mc.winner_counts(comp)
    assert counts["esc50"].to_dict() == {"laion/clap-htsat-unfused": 1, "/x/pe": 1, "tie": 1}


def test_published_beside_matches_models_and_lists_the_others(comp):
    t = mc.published_beside(comp)
    laion = t.loc["laion/clap-htsat-unfused"]
    assert laion["esc50_ours"] == pytest.approx(60.0)
    assert laion["esc50_published"] == pytest.approx(91.55)  # the transformers re-run first
    assert laion["urbansound8k_published"] == pytest.approx(75.16)
    assert np.isnan(laion["urbansound8k_ours"])  # not run here
    assert t.loc["/x/pe", "source"] == "none published"
    assert t.loc["MS-CLAP 2023", "esc50_published"] == pytest.approx(93.9)
    assert t.loc["MS-CLAP 2023", "source"] == "published only"
    assert "laion/larger_clap_general (MTEB/MAEB harness, own protocol)" in t.index


def test_model_entry_reads_paths_and_dicts():
    assert mc.model_entry("laion/clap-htsat-unfused") == (
        "clap-htsat-unfused",
        "laion/clap-htsat-unfused",
        {},
    )
    spec = {"model": "/w/CLAP_weights_2023.pth", "text_model": "/w/gpt2", "name": "ms"}
    assert mc.model_entry(spec) == ("ms", "/w/CLAP_weights_2023.pth", {"text_model": "/w/gpt2"})
    assert mc.model_entry({"model": "/w/a.pt"})[0] == "w/a.pt"  # the folder names the variant
    assert mc.model_entry("/tmp/pytest-of-root/x/tiny-clap")[0] == "tiny-clap"  # no machine path
    with pytest.raises(ValueError, match="'model' key"):
        mc.model_entry({"text_model": "/w/gpt2"})


def test_run_comparison_gives_each_model_its_own_load_options(
    fixture_env, data_root, other_families, tmp_path
):
    """Tiny MS-CLAP 2023 needs its text folder (offline, the default "gpt2" cannot load); M2D-CLAP
    (16 kHz) finds its own; both run side by side, each with its own options."""
    env = fixture_env
    models = [{"model": env.msclap_model, "text_model": str(env.msclap_text_model), "name": "ms"}]
    models.append(env.m2d_model)
    kwargs = dict(n_samples=10, batch_size=8, device="cpu", precision="fp32", cache_dir=tmp_path)
    comp = mc.run_comparison(models, ["esc50"], data_root, strategies=("label",), **kwargs)
    m2d = mc.display_name(env.m2d_model)
    assert comp.families == {"ms": "msclap-2023", m2d: "m2d-clap"}
    assert comp.sources == {"ms": str(env.msclap_model), m2d: str(env.m2d_model)}
    assert set(comp.table["model"]) == {"ms", m2d}
    assert not any(str(env.m2d_model.parent.parent) in name for name in comp.models)
    assert (comp.table["n"] == 10).all() and (comp.table["n_failed"] == 0).all()
    with pytest.raises(ValueError, match="same name"):
        mc.run_comparison([env.m2d_model, {"model": env.m2d_model}], ["esc50"], data_root)
