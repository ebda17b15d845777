"""Prompts: label cleaning, templates, descriptions for every class, ensembling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clap_helpers.data.download import AUDIOSET_CLASSES
from clap_helpers.evaluation import prompts as pr

ESC50 = (
    "dog rooster pig cow frog cat hen insects sheep crow rain sea_waves crackling_fire crickets "
    "chirping_birds water_drops wind pouring_water toilet_flush thunderstorm crying_baby sneezing "
    "clapping breathing coughing footsteps laughing brushing_teeth snoring drinking_sipping "
    "door_wood_knock mouse_click keyboard_typing door_wood_creaks can_opening washing_machine "
    "vacuum_cleaner clock_alarm clock_tick glass_breaking helicopter chainsaw siren car_horn "
    "engine train church_bells airplane fireworks hand_saw"
).split()
US8K = (
    "air_conditioner car_horn children_playing dog_bark drilling engine_idling gun_shot "
    "jackhammer siren street_music"
).split()
FMA = [
    "Electronic",
    "Experimental",
    "Folk",
    "Hip-Hop",
    "Instrumental",
    "International",
    "Pop",
    "Rock",
]
AUDIOSET = list(AUDIOSET_CLASSES)  # the default subset dataset.sh downloads


@pytest.mark.parametrize(
    ("dataset", "classes"),
    [("esc50", ESC50), ("us8k", US8K), ("fma", FMA), ("audioset", AUDIOSET)],
)
def test_every_class_has_descriptions(dataset, classes):
    assert len(set(classes)) == {"esc50": 50, "us8k": 10, "fma": 8, "audioset": 22}[dataset]
    table = pr.DESCRIPTIONS[dataset]
    assert set(table) == set(classes)
    for c in classes:
        sentences = table[c]
        assert len(sentences) >= 2, c
        for s in sentences:
            assert isinstance(s, str) and s.strip() == s and s.endswith(".") and len(s) < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning for known classes
        prompts = pr.descriptive_prompts(sorted(classes), dataset)
    assert prompts == [table[c][0] for c in sorted(classes)]


def test_descriptions_are_distinct_within_dataset():
    for dataset, table in pr.DESCRIPTIONS.items():
        firsts = [v[0] for v in table.values()]
        assert len(set(firsts)) == len(firsts), dataset


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("chirping_birds", "chirping birds"),
        ("door_wood_knock", "door wood knock"),
        ("Hip-Hop", "hip-hop"),
        ("  Rock ", "rock"),
        ("Baby cry, infant cry", "baby cry, infant cry"),
        ("dog__bark", "dog bark"),
        ("TV_static", "TV static"),
        ("A", "a"),
    ],
)
def test_clean_label(raw, clean):
    assert pr.clean_label(raw) == clean


def test_clean_label_keep_case():
    assert pr.clean_label("Hip-Hop", lower=False) == "Hip-Hop"


def test_templates():
    assert pr.TEMPLATES["default"] == "This is a sound of {}."
    assert pr.TEMPLATES["music"] == "This is a {} song."
    assert pr.template_prompts(["dog_bark", "siren"]) == [
        "This is a sound of dog bark.",
        "This is a sound of siren.",
    ]
    assert pr.template_prompts(["Rock"], "music") == ["This is a rock song."]
    assert pr.template_prompts(["cat"], "A {} nearby.") == ["A cat nearby."]
    with pytest.raises(ValueError):
        pr.template_prompts(["cat"], "no placeholder")


def test_unknown_class_falls_back_with_warning():
    with pytest.warns(UserWarning, match="unicorn"):
        out = pr.descriptive_prompts(["dog", "unicorn"], "esc50")
    assert out[0] == pr.DESCRIPTIONS["esc50"]["dog"][0]
    assert out[1] == "This is a sound of unicorn."


def test_lookup_aliases_and_cleaned_names():
    assert pr.canonical_dataset("ESC-50") == "esc50"
    assert pr.canonical_dataset("UrbanSound8K") == "us8k"
    assert pr.canonical_dataset("fma_small") == "fma"
    with pytest.raises(KeyError):
        pr.canonical_dataset("gtzan")
    assert pr.describe("chirping birds", "esc50") == pr.DESCRIPTIONS["esc50"]["chirping_birds"]
    assert pr.describe("hip-hop", "fma") == pr.DESCRIPTIONS["fma"]["Hip-Hop"]
    assert pr.describe("dog_bark") == pr.DESCRIPTIONS["us8k"]["dog_bark"]
    assert pr.describe("nothing") is None


def test_prompt_sets_structure():
    classes = ["dog", "rain"]
    sets = pr.prompt_sets(classes, "esc50")
    assert list(sets) == ["label", "template", "descriptive", "ensemble"]
    assert sets["label"] == [["dog"], ["rain"]]
    assert sets["template"] == [["This is a sound of dog."], ["This is a sound of rain."]]
    assert sets["descriptive"] == [[pr.DESCRIPTIONS["esc50"][c][0]] for c in classes]
    for c, group in zip(classes, sets["ensemble"], strict=True):
        assert group == [f"This is a sound of {c}.", *pr.DESCRIPTIONS["esc50"][c]]
    music = pr.prompt_sets(["Hip-Hop"], "fma")
    assert music["template"] == [["This is a hip-hop song."]]


def test_prompt_sets_unknown_class_warns_once():
    with pytest.warns(UserWarning) as record:
        sets = pr.prompt_sets(["dog", "yeti"], "esc50")
    assert len(record) == 1 and "yeti" in str(record[0].message)
    assert sets["descriptive"][1] == ["This is a sound of yeti."]
    assert sets["ensemble"][1] == ["This is a sound of yeti."]


class FakeEmbedder:
    """Deterministic fake text encoder: one random unit vector per distinct prompt."""

    def __init__(self, dim: int = 6):
        self.dim = dim
        self.calls: list[list[str]] = []
        self.table: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(0)

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        for t in texts:
            if t not in self.table:
                v = self.rng.normal(size=self.dim)
                self.table[t] = v / np.linalg.norm(v)
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def test_ensemble_embeddings_average_and_renormalise():
    embed = FakeEmbedder()
    groups = [["a", "b", "c"], ["d"], "e"]
    out = pr.ensemble_embeddings(embed, groups)
    assert len(embed.calls) == 1 and embed.calls[0] == ["a", "b", "c", "d", "e"]
    assert out.shape == (3, 6) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    mean = np.mean([embed.table[t] for t in "abc"], axis=0)
    np.testing.assert_allclose(out[0], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(out[1], embed.table["d"], atol=1e-6)
    np.testing.assert_allclose(out[2], embed.table["e"], atol=1e-6)
    with pytest.raises(ValueError):
        pr.ensemble_embeddings(embed, [["a"], []])
    with pytest.raises(ValueError):
        pr.ensemble_embeddings(lambda texts: np.zeros((1, 6)), [["a"], ["b"]])


def test_embed_prompt_sets():
    embed = FakeEmbedder()
    sets = pr.prompt_sets(["dog", "cat"], "esc50")
    embs = pr.embed_prompt_sets(embed, sets)
    assert list(embs) == list(sets)
    assert all(e.shape == (2, 6) for e in embs.values())
    assert len(embed.calls) == 4
