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
