"""Which model for which sounds: every model family x datasets x prompt strategies (notebook 11).

::

    comp = ch.model_comparison.run_comparison(
        ["laion/clap-htsat-unfused", "laion/larger_clap_general", "facebook/pe-av-small"],
        ["esc50", "urbansound8k", "fma_small", "audioset"], "downloads", n_samples=500)
    ch.model_comparison.accuracy_table(comp)            # model x (dataset, strategy) top-1
    ch.model_comparison.class_winners(comp, "esc50")    # per class: each model's top-1, winner
    ch.model_comparison.published_beside(comp)          # our numbers beside the published ones

A model is a hub id, folder or checkpoint file, or a dict ``{"model": path, **options}`` whose
other keys are :func:`clap_helpers.load_clap` options for that model alone (``family``,
``text_model``, ``window``, ...; ``"name"``: how tables name it, default :func:`display_name`:
the model's short name, never a machine path), e.g.
``{"model": "/weights/CLAP_weights_2023.pth", "text_model": "/weights/gpt2"}``.

Models load one at a time (:func:`clap_helpers.load_clap`: any family, recognised from its
checkpoint), each embeds every dataset's clips once (cached) and every prompt strategy's texts
(:func:`clap_helpers.evaluation.prompts.prompt_sets`: label, template, descriptive, ensemble);
:func:`clap_helpers.evaluation.zeroshot.evaluate_strategies` scores them (top-k against the
primary label; mAP and top-k hit too for the multi-label AudioSet subset). A dataset that is not
downloaded is skipped with its reason. Published numbers come from the dataset registry
(:mod:`clap_helpers.data.registry`), matched to the models by :data:`PUBLISHED_NAMES`.

Used by: notebook 11_model_comparison.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Comparison",
    "PUBLISHED_NAMES",
    "STRATEGIES",
    "accuracy_table",
    "class_winners",
    "display_name",
    "model_entry",
    "published_beside",
    "results_record",
    "run_comparison",
    "winner_counts",
]

STRATEGIES = ("label", "template", "descriptive", "ensemble")
#: Model (hub id, or family name for checkpoint files) -> its rows in the registry's published
#: numbers, most comparable protocol first.
PUBLISHED_NAMES: dict[str, tuple[str, ...]] = {
    "laion/clap-htsat-unfused": (
        "laion/clap-htsat-unfused (third-party re-run through transformers)",
        "LAION-CLAP (paper, 630k + AudioSet)",
    ),
    "laion/larger_clap_general": ("laion/larger_clap_general (MTEB/MAEB harness, own protocol)",),
    "msclap-2023": ("MS-CLAP 2023",),
    "msclap-2022": ("MS-CLAP 2022",),
    "m2d-clap": ("M2D-CLAP (2024)",),
    "audioclip": ("AudioCLIP",),
}


@dataclass
class Comparison:
    """What :func:`run_comparison` measured.

    ``rows``: one record per (model, dataset, strategy) with ``family``, ``top1``, ``top3``,
    ``top5``, ``n``, ``n_failed`` (and ``mAP``, ``top{k}_hit`` for AudioSet); ``per_class``:
    {dataset: {(model, strategy): (C,) top-1 per class}}; ``classes``: {dataset: names};
    ``families``: {model: family name}; ``sources``: {model: hub id, folder or file as given};
    ``skipped``: {dataset: reason}. Models are keyed by their table name (:func:`model_entry`).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    per_class: dict[str, dict[tuple[str, str], np.ndarray]] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    @property
    def models(self) -> list[str]:
        return list(self.families)


ModelSpec = str | os.PathLike | Mapping[str, Any]


_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def display_name(model: str | os.PathLike) -> str:
    """How tables and figures name a model: a hub id's or folder's last part
    (``laion/clap-htsat-unfused`` -> ``clap-htsat-unfused``), a checkpoint file with its folder
    (``/w/m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth`` ->
    ``m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth``: the folder names the variant),
    never the machine path before it."""
    from ..plots.core import model_name

    text = str(model).rstrip("/\\")
    if text.lower().endswith(_CHECKPOINT_SUFFIXES):
        parts = [p for p in re.split(r"[/\\]", text) if p]
        return "/".join(parts[-2:])
    return model_name(text)


def model_entry(spec: ModelSpec) -> tuple[str, str | os.PathLike, dict[str, Any]]:
    """``(name, model, load options)`` of a :func:`run_comparison` model entry: a path or hub id
    (no options), or a dict ``{"model": ..., "name": ..., **load_clap options}``; ``name``
    defaults to :func:`display_name`."""
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "model" not in options:
            raise ValueError(f"a model entry given as a dict needs a 'model' key: {spec!r}")
        model = options.pop("model")
        name = options.pop("name", None)
        return str(name if name is not None else display_name(model)), model, options
    return display_name(spec), spec, {}


def run_comparison(
    models: Sequence[ModelSpec],
    datasets: Sequence[str],
    data_root: str | os.PathLike = "downloads",
    *,
    n_samples: int | None = None,
    seed: int = 0,
    strategies: Sequence[str] = STRATEGIES,
    ks: Sequence[int] = (1, 3, 5),
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    **load_kwargs: Any,
) -> Comparison:
    """Embed and score every dataset with every model (see the module doc).

    ``models``: hub ids, folders or checkpoint files, or dicts ``{"model": path, "name": label,
    **options}`` whose options (``family``, ``text_model``, ...) go to
    :func:`clap_helpers.load_clap` for that model only (:func:`model_entry`); they override
    ``load_kwargs``, which every model gets. Rows and tables name a model by its ``name`` (default:
    :func:`display_name`; where two models would get the same short name, the paths as given)."""
    from ..data.loaders import DatasetNotFoundError, load
    from ..embedding.loading import load_clap
    from .prompts import embed_prompt_sets, prompt_sets
    from .zeroshot import evaluate_strategies

    comp = Comparison()
    data = {}
    for name in datasets:
        try:
            data[name] = load(name, data_root, n_samples=n_samples, seed=seed)
        except DatasetNotFoundError as exc:
            comp.skipped[name] = str(exc).strip().splitlines()[0]
    entries = [model_entry(spec) for spec in models]
    short = [name for name, _, _ in entries]
    entries = [
        (str(model) if short.count(name) > 1 and not _named(spec) else name, model, options)
        for spec, (name, model, options) in zip(models, entries, strict=True)
    ]
    names = [name for name, _, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"two models have the same name: {names}; give each a 'name'")
    for key, model, options in entries:
        kwargs = {"device": device, "precision": precision, "cache_dir": cache_dir}
        enc = load_clap(model, **{**kwargs, **load_kwargs, **options})
        comp.families[key] = enc.family.name
        comp.sources[key] = str(model)
        for name, (clips, classes) in data.items():
            comp.classes[name] = list(classes)
            audio = enc.embed_audio(clips["path"], batch_size=batch_size)
            sets = prompt_sets(classes, name)
            texts = embed_prompt_sets(enc.embed_text, {s: sets[s] for s in strategies})
            results = evaluate_strategies(audio, clips, classes, texts, ks)
            for strategy, res in results.items():
                row = {"model": key, "family": enc.family.name, "dataset": name}
                row["strategy"] = strategy
                row.update({f"top{int(k)}": res[f"top{int(k)}"] for k in ks})
                row.update(n=res["n"], n_failed=res["n_failed"])
                row.update({k: v for k, v in res.items() if k == "mAP" or k.endswith("_hit")})
                comp.rows.append(row)
                comp.per_class.setdefault(name, {})[(key, strategy)] = res["per_class"]
        del enc
    return comp


def _named(spec: ModelSpec) -> bool:
    return isinstance(spec, Mapping) and spec.get("name") is not None


def accuracy_table(
    comp: Comparison, metric: str = "top1", strategy: str | None = None
) -> pd.DataFrame:
    """``metric`` per model (rows) and dataset x strategy (columns); with ``strategy``, one
    column per dataset."""
    table = comp.table
    if table.empty:
        return pd.DataFrame()
    if strategy is not None:
        table = table[table["strategy"] == strategy]
        return table.pivot(index="model", columns="dataset", values=metric).reindex(comp.models)
    out = table.pivot_table(index="model", columns=["dataset", "strategy"], values=metric)
    return out.reindex(comp.models)


def class_winners(comp: Comparison, dataset: str, strategy: str = "template") -> pd.DataFrame:
    """Per class of ``dataset``: each model's top-1 (fraction), the best model (``winner``;
    ``"tie"`` when the best are equal) and its ``margin`` over the runner-up."""
    per = comp.per_class.get(dataset, {})
    data = {m: per[(m, strategy)] for m in comp.models if (m, strategy) in per}
    df = pd.DataFrame(data, index=pd.Index(comp.classes.get(dataset, []), name="class"))
    if df.empty:
        return df
    values = df.to_numpy(dtype=np.float64)
    ordered = np.sort(np.nan_to_num(values, nan=-1.0), axis=1)
    best = ordered[:, -1]
    second = ordered[:, -2] if values.shape[1] > 1 else np.full(len(df), np.nan)
    names = np.array(df.columns, dtype=object)
    winner = [
        "tie" if values.shape[1] > 1 and b == s else names[int(np.nanargmax(row))]
        for row, b, s in zip(np.nan_to_num(values, nan=-1.0), best, second, strict=True)
    ]
    df["winner"] = winner
    df["margin"] = best - second
    return df


def winner_counts(comp: Comparison, strategy: str = "template") -> pd.DataFrame:
    """How many classes each model wins outright, per dataset (rows: models; ``tie`` last)."""
    counts = {
        name: class_winners(comp, name, strategy)["winner"].value_counts()
        for name in comp.per_class
    }
    index = [*comp.models, "tie"]
    return pd.DataFrame(counts).reindex(index).fillna(0).astype(int)


def _published_rows(dataset: str) -> dict[str, float]:
    from ..data import registry

    rec = registry.RECORDS.get(dataset)
    if rec is None:
        return {}
    return {p.model: p.top1 for p in rec.published if p.method == "zero-shot"}


def published_beside(
    comp: Comparison,
    strategy: str = "template",
    datasets: Sequence[str] = ("esc50", "urbansound8k"),
    extra: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Our zero-shot top-1 (%) per model beside the published numbers (%) for the same model
    (:data:`PUBLISHED_NAMES`; ``extra`` adds {model: published name}), then the published
    models we did not run. Columns ``<dataset>_ours``, ``<dataset>_published``, ``source``."""
    names = {**PUBLISHED_NAMES, **dict(extra or {})}
    ours = accuracy_table(comp, strategy=strategy) if comp.rows else pd.DataFrame()
    published = {d: _published_rows(d) for d in datasets}
    rows, used = [], set()
    for model in comp.models:
        given = comp.sources.get(model, model)
        candidates = (
            names.get(given, ()) or names.get(model, ()) or names.get(comp.families[model], ())
        )
        candidates = (candidates,) if isinstance(candidates, str) else candidates
        source = next((c for c in candidates if any(c in published[d] for d in datasets)), None)
        row: dict[str, Any] = {"model": model, "source": source or "none published"}
        for d in datasets:
            value = ours[d].get(model, math.nan) if d in getattr(ours, "columns", []) else math.nan
            row[f"{d}_ours"] = 100.0 * value
            row[f"{d}_published"] = published[d].get(source, math.nan) if source else math.nan
        used.add(source)
        rows.append(row)
    for source in dict.fromkeys(s for d in datasets for s in published[d]):
        if source in used:
            continue
        row = {"model": source, "source": "published only"}
        for d in datasets:
            row[f"{d}_ours"] = math.nan
            row[f"{d}_published"] = published[d].get(source, math.nan)
        rows.append(row)
    columns = ["model", *(f"{d}_{k}" for d in datasets for k in ("ours", "published")), "source"]
    return pd.DataFrame(rows).reindex(columns=columns).set_index("model")


def results_record(comp: Comparison, strategy: str = "template") -> dict[str, Any]:
    """What notebook 11 records in its results JSON: ``models``, ``families``, ``datasets``,
    ``skipped``, ``n`` per dataset, ``top1`` / ``top3`` {model: {dataset: fraction}} for
    ``strategy``, the full ``table``, each model's ``best_strategy`` (highest mean top-1 over the
    datasets), ``winners`` (:func:`winner_counts`) and ``published`` (:func:`published_beside`)."""
    table = comp.table
    record: dict[str, Any] = {
        "models": comp.models,
        "families": [comp.families[m] for m in comp.models],
        "datasets": sorted(comp.per_class),
        "skipped": comp.skipped,
        "table": comp.rows,
    }
    if table.empty:
        return record
    by_dataset = table.groupby("dataset")["n"].first()
    record["n"] = {d: int(by_dataset[d]) for d in comp.per_class}
    for metric in ("top1", "top3"):
        wide = accuracy_table(comp, metric, strategy=strategy)
        record[metric] = {m: wide.loc[m].to_dict() for m in wide.index}
    mean_top1 = table.groupby(["model", "strategy"])["top1"].mean()
    record["best_strategy"] = {m: mean_top1.loc[m].idxmax() for m in comp.models}
    record["winners"] = winner_counts(comp, strategy).to_dict()
    record["published"] = published_beside(comp, strategy).reset_index().to_dict(orient="records")
    return record
