"""Text prompts for zero-shot classification: label cleaning, templates, hand-written descriptions.

Used by 02_esc50_zeroshot (template prompts), 03_augmented_labels (all strategies through
:func:`prompt_sets` and :func:`ensemble_embeddings`), 04_urbansound8k_topk, 05_fma (music template),
06_audioset_subset and 07_tsne (label versus sentence embeddings).

Label cleaning rule (:func:`clean_label`): underscores become spaces, runs of whitespace collapse to
one space, and the text is lower-cased, except words written entirely in capitals (acronyms such as
"TV") which keep their case. One rule for every dataset: "chirping_birds" -> "chirping birds",
"Hip-Hop" -> "hip-hop", "Baby cry, infant cry" -> "baby cry, infant cry". Lower case is what the
LAION evaluation feeds the model for ESC-50/UrbanSound8K and reads naturally mid-sentence for genres
and AudioSet display names; pass ``lower=False`` to keep the original case.

Dataset names accepted wherever a ``dataset`` argument appears (case and punctuation are ignored):
"esc50"/"esc-50", "us8k"/"urbansound8k", "fma"/"fma_small", "audioset"/"audioset_subset".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..diagnostics import ClapWarning

__all__ = [
    "prompt_examples",
    "DATASET_TEMPLATE",
    "DESCRIPTIONS",
    "TEMPLATES",
    "canonical_dataset",
    "clean_label",
    "describe",
    "descriptive_prompts",
    "embed_prompt_sets",
    "ensemble_embeddings",
    "prompt_sets",
    "template_prompts",
]

# Templates; "default" is the one the transformers zero-shot-audio-classification pipeline and the
# LAION evaluation use, "music" the LAION genre template. Labels go in verbatim (no a/an fix, so
# "This is a electronic song."), as those evaluations do.
TEMPLATES: dict[str, str] = {
    "default": "This is a sound of {}.",
    "music": "This is a {} song.",
}

# Which template each dataset uses for the "template" strategy.
DATASET_TEMPLATE: dict[str, str] = {
    "esc50": "default",
    "us8k": "default",
    "fma": "music",
    "audioset": "default",
}


# Hand-written descriptions: what each class sounds like, one short sentence per variant. The first
# sentence is the "descriptive" prompt; all of them join the template in the "ensemble" strategy.
DESCRIPTIONS: dict[str, dict[str, list[str]]] = {
    "esc50": {
        "dog": [
            "A dog barks a few times.",
            "Short, sharp woofs from a dog.",
            "A dog growling and then barking.",
        ],
        "rooster": [
            "A rooster crows loudly in the morning.",
            "The long, rising call of a crowing cockerel.",
        ],
        "pig": [
            "A pig grunts and snorts.",
            "Low oinking and snuffling from a pig in its pen.",
        ],
        "cow": [
            "A cow moos with a long, low call.",
            "The deep, drawn-out mooing of cattle.",
        ],
        "frog": [
            "A frog croaks over and over.",
            "Frogs croaking beside a pond at night.",
        ],
        "cat": [
            "A cat meows.",
            "A cat mewing and yowling for attention.",
        ],
        "hen": [
            "A hen clucks and cackles.",
            "Chickens clucking in a farmyard.",
        ],
        "insects": [
            "Insects buzzing around.",
            "The droning hum of flying insects such as bees or flies.",
        ],
        "sheep": [
            "A sheep bleats.",
            "Sheep baaing in a field.",
        ],
        "crow": [
            "A crow caws harshly.",
            "Loud, rasping caws from a group of crows.",
        ],
        "rain": [
            "Rain falling steadily.",
            "Raindrops pattering on a roof and on the ground.",
        ],
        "sea_waves": [
            "Sea waves crashing on the shore.",
            "Ocean surf rolling in and washing over a beach.",
        ],
        "crackling_fire": [
            "A fire crackling and popping.",
            "Burning logs crackle in a fireplace.",
        ],
        "crickets": [
            "Crickets chirping at night.",
            "A steady, high-pitched trill of crickets in the grass.",
        ],
        "chirping_birds": [
            "Birds chirping and singing.",
            "Many small birds tweeting in the trees.",
        ],
        "water_drops": [
            "Water dripping drop by drop.",
            "Single drops of water plinking into a puddle.",
        ],
        "wind": [
            "Wind blowing in strong gusts.",
            "A howling wind rushing past the microphone.",
        ],
        "pouring_water": [
            "Water being poured into a glass.",
            "Liquid pouring from a jug with a rising gurgle.",
        ],
        "toilet_flush": [
            "A toilet being flushed.",
            "The rushing swirl of water draining from a toilet bowl.",
        ],
        "thunderstorm": [
            "Thunder rumbling during a storm.",
            "A loud clap of thunder over heavy rain.",
        ],
        "crying_baby": [
            "A baby crying.",
            "An infant wailing and sobbing.",
        ],
        "sneezing": [
            "A person sneezes.",
            "Someone sneezing loudly.",
        ],
        "clapping": [
            "People clapping their hands.",
            "Hands clapping together in applause.",
        ],
        "breathing": [
            "A person breathing heavily.",
            "Slow breaths in and out through the nose and mouth.",
        ],
        "coughing": [
            "A person coughing.",
            "Someone with a dry, hacking cough.",
        ],
        "footsteps": [
            "Footsteps walking across a hard floor.",
            "Shoes stepping one after another as someone walks.",
        ],
        "laughing": [
            "A person laughing.",
            "People laughing out loud.",
        ],
        "brushing_teeth": [
            "Someone brushing their teeth.",
            "A toothbrush scrubbing back and forth over teeth.",
        ],
        "snoring": [
            "A person snoring in their sleep.",
            "Loud, rattling snores of someone asleep.",
        ],
        "drinking_sipping": [
            "Someone sipping and swallowing a drink.",
            "A person drinking with small slurps and gulps.",
        ],
        "door_wood_knock": [
            "Knocking on a wooden door.",
            "Knuckles rapping on a wooden door.",
        ],
        "mouse_click": [
            "A computer mouse clicking.",
            "Quick clicks of a mouse button.",
        ],
        "keyboard_typing": [
            "Typing on a computer keyboard.",
            "Fingers tapping quickly on the keys of a keyboard.",
        ],
        "door_wood_creaks": [
            "A wooden door creaking open.",
            "The slow squeak of an old door hinge.",
        ],
        "can_opening": [
            "A drink can being opened.",
            "The crack and fizz of a soda can popping open.",
        ],
        "washing_machine": [
            "A washing machine running.",
            "The churning hum and slosh of a washing machine.",
        ],
        "vacuum_cleaner": [
            "A vacuum cleaner running.",
            "The loud, whirring drone of a vacuum cleaner.",
        ],
        "clock_alarm": [
            "An alarm clock ringing.",
            "The insistent beeping of an alarm clock.",
        ],
        "clock_tick": [
            "A clock ticking.",
            "The steady tick-tock of a clock.",
        ],
        "glass_breaking": [
            "Glass shattering.",
            "A glass smashing into pieces on the floor.",
        ],
        "helicopter": [
            "A helicopter flying overhead.",
            "The thumping rotor blades of a helicopter.",
        ],
        "chainsaw": [
            "A chainsaw cutting wood.",
            "The buzzing, revving motor of a chainsaw.",
        ],
        "siren": [
            "A siren wailing.",
            "An emergency vehicle siren rising and falling in pitch.",
        ],
        "car_horn": [
            "A car horn honking.",
            "A driver sounding a car horn.",
        ],
        "engine": [
            "An engine running.",
            "The low rumble of a motor engine.",
        ],
        "train": [
            "A train passing by.",
            "A train clattering along the railway tracks.",
        ],
        "church_bells": [
            "Church bells ringing.",
            "Large bells tolling from a church tower.",
        ],
        "airplane": [
            "An airplane flying overhead.",
            "The roar of a jet plane passing high in the sky.",
        ],
        "fireworks": [
            "Fireworks exploding.",
            "Bangs and crackles of fireworks going off in the sky.",
        ],
        "hand_saw": [
            "A hand saw cutting through wood.",
            "The rasping back-and-forth strokes of a hand saw.",
        ],
    },
    "us8k": {
        "air_conditioner": [
            "An air conditioner humming.",
            "The steady whirring drone of an air conditioning unit.",
        ],
        "car_horn": [
            "A car horn honking in traffic.",
            "A short, loud beep from a car horn on the street.",
        ],
        "children_playing": [
            "Children playing and shouting.",
            "Kids laughing and yelling in a playground.",
        ],
        "dog_bark": [
            "A dog barking.",
            "A dog barks loudly outside.",
        ],
        "drilling": [
            "A power drill drilling.",
            "The high-pitched whine of an electric drill boring into a wall.",
        ],
        "engine_idling": [
            "An engine idling.",
            "A vehicle engine ticking over while standing still.",
        ],
        "gun_shot": [
            "A gun being fired.",
            "The sharp bang of a gunshot.",
        ],
        "jackhammer": [
            "A jackhammer pounding.",
            "The rapid hammering of a pneumatic drill breaking up pavement.",
        ],
        "siren": [
            "A siren wailing in the street.",
            "A police car or ambulance siren going past.",
        ],
        "street_music": [
            "Music being played in the street.",
            "Street musicians performing outdoors.",
        ],
    },
    "fma": {
        "Electronic": [
            "An electronic music track with synthesizers and a drum machine.",
            "Electronic dance music with a steady programmed beat.",
        ],
        "Experimental": [
            "Experimental music with unusual sounds and structure.",
            "Abstract, avant-garde noises and textures.",
        ],
        "Folk": [
            "A folk song with acoustic guitar and singing.",
            "Traditional folk music played on acoustic instruments.",
        ],
        "Hip-Hop": [
            "A hip-hop song with rapping over a beat.",
            "Rap vocals over a heavy drum beat.",
        ],
        "Instrumental": [
            "Instrumental music without any vocals.",
            "A melodic piece played on instruments, with no singing.",
        ],
        "International": [
            "Music from around the world played on traditional instruments.",
            "A world music song with regional rhythms and instruments.",
        ],
        "Pop": [
            "A catchy pop song with vocals.",
            "Upbeat pop music with a singer and a memorable chorus.",
        ],
        "Rock": [
            "A rock song with electric guitars and drums.",
            "Loud rock music with distorted guitars.",
        ],
    },
    "audioset": {
        "Aircraft": [
            "An aircraft flying overhead.",
            "The engine roar of a plane passing in the sky.",
        ],
        "Baby cry, infant cry": [
            "A baby crying.",
            "An infant wailing.",
        ],
        "Bird": [
            "A bird singing.",
            "Birds chirping and calling to each other.",
        ],
        "Car": [
            "A car driving past.",
            "The engine and tyres of a passing car.",
        ],
        "Cat": [
            "A cat meowing.",
            "A cat mewing and purring.",
        ],
        "Child speech, kid speaking": [
            "A child talking.",
            "A young kid speaking in a high voice.",
        ],
        "Dog": [
            "A dog barking.",
            "A dog barking and whining.",
        ],
        "Drum": [
            "Someone playing a drum.",
            "Drums being beaten in a rhythm.",
        ],
        "Electric guitar": [
            "An electric guitar playing.",
            "An amplified electric guitar strumming chords.",
        ],
        "Explosion": [
            "A loud explosion.",
            "A deep, booming blast.",
        ],
        "Fart": [
            "Someone farting.",
            "A loud, rude fart noise.",
        ],
        "Female speech, woman speaking": [
            "A woman speaking.",
            "A female voice talking.",
        ],
        "Glass": [
            "Glass clinking.",
            "Glasses tapping and clinking together.",
        ],
        "Guitar": [
            "Someone playing a guitar.",
            "An acoustic guitar being strummed.",
        ],
        "Helicopter": [
            "A helicopter flying.",
            "The chopping rotor blades of a helicopter.",
        ],
        "Male speech, man speaking": [
            "A man speaking.",
            "A male voice talking.",
        ],
        "Pigeon, dove": [
            "A pigeon cooing.",
            "The soft, throaty cooing of doves.",
        ],
        "Ringtone": [
            "A phone ringtone playing.",
            "A mobile phone ringing with a little melody.",
        ],
        "Siren": [
            "A siren wailing.",
            "An emergency siren sounding.",
        ],
        "Telephone": [
            "A telephone ringing.",
            "The bell of an old telephone ringing.",
        ],
        "Walk, footsteps": [
            "Footsteps walking.",
            "A person walking with audible steps.",
        ],
        "Water": [
            "Water flowing.",
            "Running water splashing.",
        ],
    },
}


def canonical_dataset(dataset: str) -> str:
    """Map a dataset name or alias ("ESC-50", "urbansound8k", "fma_small", ...) to a key of
    :data:`DESCRIPTIONS` ("esc50", "us8k", "fma", "audioset"). Raises ``KeyError`` if unknown."""
    from ..data.registry import record

    try:
        return record(dataset).prompt_key
    except ValueError:
        raise KeyError(f"unknown dataset {dataset!r}; known: {sorted(DESCRIPTIONS)}") from None


def clean_label(label: object, lower: bool = True) -> str:
    """Readable class name for prompts (rule in the module docstring).

    >>> clean_label("chirping_birds"), clean_label(" Hip-Hop "), clean_label("TV_noise")
    ('chirping birds', 'hip-hop', 'TV noise')
    """
    words = str(label).replace("_", " ").split()
    if lower:
        words = [w if (len(w) > 1 and w.isupper()) else w.lower() for w in words]
    return " ".join(words)


def _template_text(template: str) -> str:
    text = TEMPLATES.get(template, template)
    if "{}" not in text:
        raise ValueError(f"template {template!r} is neither a key of TEMPLATES nor contains '{{}}'")
    return text


def template_prompts(classes: Sequence[str], template: str = "default") -> list[str]:
    """One prompt per class: ``template`` (a key of :data:`TEMPLATES` or a format string with
    ``{}``) filled with :func:`clean_label` of each class, e.g. "This is a sound of dog bark."."""
    text = _template_text(template)
    return [text.format(clean_label(c)) for c in classes]


def _dataset_template(dataset: str | None) -> str:
    if dataset is None:
        return "default"
    return DATASET_TEMPLATE[canonical_dataset(dataset)]


def describe(label: str, dataset: str | None = None) -> list[str] | None:
    """The hand-written sentences for one class, or None if there are none.

    ``dataset=None`` searches every dataset (ESC-50 first). A class matches by exact key, else by
    its cleaned form, so "chirping birds" and "hip-hop" find "chirping_birds" and "Hip-Hop"."""
    names = list(DESCRIPTIONS) if dataset is None else [canonical_dataset(dataset)]
    for name in names:
        table = DESCRIPTIONS[name]
        if label in table:
            return list(table[label])
        wanted = clean_label(label)
        for key, sentences in table.items():
            if clean_label(key) == wanted:
                return list(sentences)
    return None


def _warn_missing(missing: list[str], dataset: str | None) -> None:
    if missing:
        where = "any dataset" if dataset is None else repr(dataset)
        warnings.warn(
            f"no description for {len(missing)} class(es) in {where}: {missing}; "
            "using the template prompt instead",
            ClapWarning,
            stacklevel=3,
        )


def descriptive_prompts(classes: Sequence[str], dataset: str | None) -> list[str]:
    """One descriptive sentence per class (the first of :data:`DESCRIPTIONS`). A class without a
    description falls back to the dataset's template prompt, with one ``UserWarning`` naming the
    classes concerned."""
    template = _dataset_template(dataset)
    out, missing = [], []
    for c in classes:
        found = describe(c, dataset)
        if found:
            out.append(found[0])
        else:
            missing.append(c)
            out.append(template_prompts([c], template)[0])
    _warn_missing(missing, dataset)
    return out


def prompt_sets(classes: Sequence[str], dataset: str | None) -> dict[str, list[list[str]]]:
    """The prompt strategies compared in 03_augmented_labels, each a list of prompts per class:

    - "label": the bare cleaned label, e.g. ["chirping birds"];
    - "template": the dataset's template (music template for FMA);
    - "descriptive": the first hand-written sentence (template if none, with a warning);
    - "ensemble": the template prompt followed by every hand-written sentence.

    Embed with :func:`embed_prompt_sets` or :func:`ensemble_embeddings`."""
    template = _dataset_template(dataset)
    tmpl = template_prompts(classes, template)
    sets: dict[str, list[list[str]]] = {
        "label": [[clean_label(c)] for c in classes],
        "template": [[t] for t in tmpl],
        "descriptive": [],
        "ensemble": [],
    }
    missing = []
    for c, t in zip(classes, tmpl, strict=True):
        found = describe(c, dataset)
        if not found:
            missing.append(c)
        sets["descriptive"].append([found[0] if found else t])
        sets["ensemble"].append([t, *(found or [])])
    _warn_missing(missing, dataset)
    return sets


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()  # type: ignore[union-attr]
    return np.asarray(x, dtype=np.float32)


def ensemble_embeddings(
    embed_fn: Callable[[list[str]], object], prompts_per_class: Sequence[Sequence[str] | str]
) -> np.ndarray:
    """Class text embeddings from several prompts per class.

    ``embed_fn(list[str]) -> (n, D)`` (numpy or torch) is called once with every prompt; each
    class's rows are averaged and the mean is L2-normalised again. A bare string counts as a
    one-prompt class. Returns float32 (C, D)."""
    groups = [[p] if isinstance(p, str) else list(p) for p in prompts_per_class]
    if any(len(g) == 0 for g in groups):
        raise ValueError("every class needs at least one prompt")
    flat = [p for g in groups for p in g]
    emb = _to_numpy(embed_fn(flat))
    if emb.ndim != 2 or emb.shape[0] != len(flat):
        raise ValueError(f"embed_fn returned shape {emb.shape} for {len(flat)} prompts")
    bounds = np.cumsum([0] + [len(g) for g in groups])
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    means = np.stack([emb[a:b].astype(np.float64).mean(axis=0) for a, b in pairs])
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return (means / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def embed_prompt_sets(
    embed_fn: Callable[[list[str]], object], sets: dict[str, list[list[str]]]
) -> dict[str, np.ndarray]:
    """Embed every strategy of :func:`prompt_sets`: {strategy: (C, D) float32}, one
    ``embed_fn`` call per strategy."""
    return {name: ensemble_embeddings(embed_fn, groups) for name, groups in sets.items()}


def prompt_examples(
    sets: Mapping[str, Sequence[Sequence[str]]], classes: Sequence[str], n: int | None = 5
) -> pd.DataFrame:
    """The prompts of each strategy side by side for the first ``n`` classes (all if None), for
    03_augmented_labels: index "class", one column per strategy, several prompts of a class
    joined by " | "."""
    chosen = list(classes)[: n if n is not None else len(classes)]
    data = {
        name: [" | ".join(groups[i]) for i in range(len(chosen))] for name, groups in sets.items()
    }
    return pd.DataFrame(data, index=pd.Index(chosen, name="class"))
