"""Side-by-side comparisons: several models (or window modes) on the same clips, several datasets
in one embedding space, and sanity checks on text embeddings.

::

    runs = ch.compare.embed_runs({"general_average": (model, "average"),
                                  "music_average": (music_model, "average")},
                                 clips["path"], {"template": prompts}, device="cpu")
    evals = ch.compare.evaluate_runs(runs, clips["target"])
    ch.compare.runs_table(runs, evals)

- :func:`text_spread` warns when a model's prompt embeddings are nearly collinear (maximum
  pairwise cosine above 0.99): its zero-shot scores then hardly depend on the class.
- :func:`embed_runs` / :func:`evaluate_runs` / :func:`runs_table` / :func:`spread_table` /
  :func:`per_split` / :func:`agreement_table` / :func:`clap_helpers.plots.confusion_grid`: one model per run, the same
  clips and prompts, tables and side-by-side confusion matrices.
- :func:`window_breakdown`, :func:`clap_helpers.plots.window_accuracy`: what each 10 s window of a long track says,
  against the average.
- :func:`collect_embeddings`, :func:`embedding_summary`, :func:`modality_gap`: the embeddings of
  every downloaded dataset for the t-SNE/PCA maps; missing datasets are skipped with a note.

Used by 05_fma (model and window comparison), 06_audioset_subset (:func:`text_spread`) and
07_tsne (:func:`collect_embeddings`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..diagnostics import ClapWarning

__all__ = [
    "CollinearTextWarning",
    "DatasetEmbeddings",
    "ModelRun",
    "agreement",
    "agreement_table",
    "collect_embeddings",
    "embed_runs",
    "embedding_summary",
    "evaluate_runs",
    "modality_gap",
    "per_split",
    "runs_table",
    "spread_table",
    "text_spread",
    "window_breakdown",
]

COLLINEAR_COSINE = 0.99
"""Maximum pairwise cosine of class prompt embeddings above which :func:`text_spread` warns."""


class CollinearTextWarning(ClapWarning):
    """A model maps different class prompts to nearly the same text embedding."""


def _unit_rows(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms > 0, norms, 1.0)


# ------------------------------------------------------------------------------ text embeddings
def text_spread(
    text_emb: Any,
    names: Sequence[str] | None = None,
    threshold: float = COLLINEAR_COSINE,
    label: str = "text embeddings",
    warn: bool = True,
) -> dict[str, Any]:
    """How far apart the class prompt embeddings are (05_fma, 06_audioset_subset).

    text_emb (C, D), one row per class (rows are re-normalised). Returns

    - ``max_cosine``, ``mean_cosine``, ``min_cosine``: over the C (C - 1) / 2 distinct pairs
      (NaN when C < 2);
    - ``closest_pair``: the two ``names`` (default the row indices) of the most similar pair;
    - ``collinear``: ``max_cosine > threshold``.

    When ``collinear`` and ``warn``, a :class:`CollinearTextWarning` names ``label`` (e.g. the
    model) and the pair: such a model ranks classes by tiny differences, so its accuracy says
    little about the audio side. A healthy CLAP keeps unrelated prompts well below 0.99; the
    ``laion/larger_clap_music`` text tower was reported to give cosines about 0.999."""
    t = _unit_rows(text_emb)
    n = t.shape[0]
    names = [str(i) for i in range(n)] if names is None else [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} embeddings")
    if n < 2:
        return {
            "max_cosine": math.nan,
            "mean_cosine": math.nan,
            "min_cosine": math.nan,
            "closest_pair": None,
            "collinear": False,
        }
    sims = t @ t.T
    iu = np.triu_indices(n, 1)
    pairs = sims[iu]
    best = int(np.argmax(pairs))
    pair = (names[iu[0][best]], names[iu[1][best]])
    out = {
        "max_cosine": float(pairs[best]),
        "mean_cosine": float(pairs.mean()),
        "min_cosine": float(pairs.min()),
        "closest_pair": pair,
        "collinear": bool(pairs[best] > threshold),
    }
    if out["collinear"] and warn:
        warnings.warn(
            f"{label}: class prompts are nearly collinear (max pairwise cosine "
            f"{out['max_cosine']:.4f} > {threshold}, between {pair[0]!r} and {pair[1]!r}); "
            "zero-shot scores will hardly depend on the class",
            CollinearTextWarning,
            stacklevel=2,
        )
    return out


# ----------------------------------------------------------------------------- model comparison
@dataclass
class ModelRun:
    """One model in one window mode, embedded on the clips of a comparison (05_fma).

    Attributes:
        name: the run's key (e.g. ``"general_average"``).
        model: hub id or folder; window: ``"average"``, ``"first"`` or ``"fusion"``.
        audio_emb: (N, D) float32, NaN rows for clips that failed.
        text_embs: {prompt strategy: (C, D) float32}.
        spread: {prompt strategy: :func:`text_spread` result}.
        failures: ``[(path, reason)]`` from the encoder.
    """

    name: str
    model: str
    window: str
    audio_emb: np.ndarray
    text_embs: dict[str, np.ndarray]
    spread: dict[str, dict[str, Any]]
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        """Clips without an embedding (NaN rows): undecodable or missing files."""
        return int((~np.isfinite(self.audio_emb).all(axis=1)).sum())


def embed_runs(
    specs: Mapping[str, tuple],
    paths: Sequence[str | os.PathLike],
    prompts: Mapping[str, Sequence[str | Sequence[str]]],
    *,
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    threshold: float = COLLINEAR_COSINE,
    load_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, ModelRun]:
    """Embed the same clips and prompts with each model / window mode (05_fma).

    Args:
        specs: {run name: (model, window)}, e.g. ``{"general_average": (model, "average"),
            "general_first": (model, "first"), "music_average": (music_model, "average")}``; a
            third item, a dict of ``load_clap`` options for that run's model only (``family``,
            ``text_model``, ...), e.g. ``(msclap_file, "average", {"text_model": folder})``.
            Models load one at a time (:func:`clap_helpers.embedding.loading.load_clap`), so only one is in
            memory; a model listed twice is loaded twice (its text embeddings come from the cache).
        paths: the N audio files.
        prompts: {strategy: one prompt or a list of prompts per class}; a list is averaged
            (:func:`clap_helpers.evaluation.prompts.ensemble_embeddings`).
        batch_size, device, precision, cache_dir: as for ``load_clap`` / ``embed_audio``.
        threshold: :func:`text_spread` warns above this cosine.
        load_kwargs: more ``load_clap`` arguments (e.g. ``num_workers=0``).

    Returns {run name: :class:`ModelRun`} in the order of ``specs``.
    """
    from ..embedding.loading import load_clap
    from .prompts import ensemble_embeddings

    paths = [str(p) for p in paths]
    runs: dict[str, ModelRun] = {}
    for name, (model, window, *rest) in specs.items():
        options = {**dict(load_kwargs or {}), **dict(rest[0] if rest else {})}
        enc = load_clap(
            model, device=device, precision=precision, window=window, cache_dir=cache_dir, **options
        )
        audio = enc.embed_audio(paths, batch_size=batch_size)
        texts = {s: ensemble_embeddings(enc.embed_text, groups) for s, groups in prompts.items()}
        spread = {}
        for strategy, groups in prompts.items():
            first = [g if isinstance(g, str) else g[0] for g in groups]
            spread[strategy] = text_spread(
                texts[strategy], first, threshold, label=f"{name} ({model}, {strategy} prompts)"
            )
        runs[name] = ModelRun(
            name=name,
            model=str(model),
            window=window,
            audio_emb=audio,
            text_embs=texts,
            spread=spread,
            failures=list(enc.failures),
        )
        del enc
    return runs


def spread_table(runs: Mapping[str, ModelRun]) -> pd.DataFrame:
    """The :func:`text_spread` of every run and prompt strategy (05_fma): index ``setup``
    (``"run / strategy"``), columns ``model`` (its short name,
    :func:`clap_helpers.evaluation.model_comparison.display_name`: no machine path), ``max_cosine``,
    ``mean_cosine``, ``min_cosine``, ``closest_pair`` (``"a / b"``) and ``collinear``."""
    from .model_comparison import display_name

    rows = {}
    for name, run in runs.items():
        for strategy, sp in run.spread.items():
            pair = sp["closest_pair"]
            rows[f"{name} / {strategy}"] = {
                "model": display_name(run.model),
                "max_cosine": sp["max_cosine"],
                "mean_cosine": sp["mean_cosine"],
                "min_cosine": sp["min_cosine"],
                "closest_pair": " / ".join(pair) if pair else None,
                "collinear": sp["collinear"],
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "setup"
    return table


def evaluate_runs(
    runs: Mapping[str, ModelRun], labels: Any, ks: Sequence[int] = (1, 3)
) -> dict[str, dict[str, dict[str, Any]]]:
    """{run: {strategy: :func:`clap_helpers.evaluation.zeroshot.evaluate` result}} on labels (N,) (05_fma)."""
    from .zeroshot import evaluate

    y = np.asarray(labels)
    return {
        name: {s: evaluate(run.audio_emb, y, t, ks) for s, t in run.text_embs.items()}
        for name, run in runs.items()
    }


def runs_table(
    runs: Mapping[str, ModelRun], evaluations: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> pd.DataFrame:
    """One row per (run, prompt strategy) (05_fma).

    Index ``setup`` = ``"run / strategy"``; columns ``run``, ``model``, ``window``, ``prompts``,
    the ``top{k}`` metrics found (fractions), ``n``, ``n_failed`` and ``text_max_cosine`` (from
    :func:`text_spread`). Pass it to :func:`clap_helpers.plots.strategy_bars` for bars."""
    rows = []
    for name, per_strategy in evaluations.items():
        run = runs[name]
        for strategy, res in per_strategy.items():
            row = {"run": name, "model": run.model, "window": run.window, "prompts": strategy}
            topk = sorted((k for k in res if k[:3] == "top" and k[3:].isdigit()), key=_k)
            row.update({k: float(res[k]) for k in topk})
            row.update(n=int(res["n"]), n_failed=int(res["n_failed"]))
            row["text_max_cosine"] = run.spread[strategy]["max_cosine"]
            rows.append(row)
    table = pd.DataFrame(rows)
    table.index = pd.Index([f"{r['run']} / {r['prompts']}" for r in rows], name="setup")
    return table


def _k(key: str) -> int:
    return int(key[3:])


def per_split(
    runs: Mapping[str, ModelRun],
    labels: Any,
    splits: Any,
    strategy: str,
    k: int = 1,
) -> pd.DataFrame:
    """Top-``k`` accuracy of every run on each split of the clips (05_fma: FMA's
    training/validation/test).

    Zero-shot uses no training data, so every split is a test set here; the table shows how much
    the number moves between them. Index ``split`` (sorted split names, then ``"all"``), one
    column per run (fraction of the split's scored clips), and ``clips`` (clips in the split,
    failed ones included)."""
    from .zeroshot import scores, topk_accuracy

    y = np.asarray(labels)
    s = np.asarray(splits)
    if s.shape != y.shape:
        raise ValueError(f"splits has shape {s.shape}, labels {y.shape}")
    names = sorted(pd.unique(s).tolist())
    table = pd.DataFrame(index=pd.Index([*names, "all"], dtype=object, name="split"))
    for name, run in runs.items():
        sc = scores(run.audio_emb, run.text_embs[strategy])
        col = [topk_accuracy(sc[s == v], y[s == v], k) for v in names]
        table[name] = [*col, topk_accuracy(sc, y, k)]
    table["clips"] = [*(int((s == v).sum()) for v in names), len(y)]
    return table


def agreement(res_a: Mapping[str, Any], res_b: Mapping[str, Any]) -> dict[str, Any]:
    """Compare two :func:`clap_helpers.evaluation.zeroshot.evaluate` results on the same clips (05_fma).

    Over the clips scored by both: ``n``; ``same_prediction`` (fraction with the same top-1
    class); ``both_correct``, ``only_a``, ``only_b``, ``neither`` (top-1 counts, summing to
    ``n``). ``only_a`` vs ``only_b`` says whether a difference in accuracy comes from a few
    clips or from many that swap."""
    pa, pb = np.asarray(res_a["predictions"]), np.asarray(res_b["predictions"])
    ra, rb = np.asarray(res_a["true_rank"]), np.asarray(res_b["true_rank"])
    if pa.shape != pb.shape:
        raise ValueError(f"results cover different clips: {pa.shape} vs {pb.shape}")
    ok = (ra >= 0) & (rb >= 0)
    ca, cb = ra[ok] == 0, rb[ok] == 0
    n = int(ok.sum())
    return {
        "n": n,
        "same_prediction": float(np.mean(pa[ok] == pb[ok])) if n else math.nan,
        "both_correct": int((ca & cb).sum()),
        "only_a": int((ca & ~cb).sum()),
        "only_b": int((~ca & cb).sum()),
        "neither": int((~ca & ~cb).sum()),
    }


def agreement_table(
    evaluations: Mapping[str, Mapping[str, Mapping[str, Any]]],
    pairs: Sequence[tuple[str, str]],
    strategy: str,
) -> pd.DataFrame:
    """:func:`agreement` for each (run a, run b) in ``pairs`` on one prompt strategy (05_fma).

    evaluations: :func:`evaluate_runs` output. Index ``pair`` (``"a vs b"``), the columns of
    :func:`agreement` (counts as int)."""
    rows = [agreement(evaluations[a][strategy], evaluations[b][strategy]) for a, b in pairs]
    index = pd.Index([f"{a} vs {b}" for a, b in pairs], name="pair", dtype=object)
    return pd.DataFrame(rows, index=index)


# -------------------------------------------------------------------------------- long audio
def window_breakdown(
    enc: Any,
    path: str | os.PathLike,
    text_emb: Any,
    classes: Sequence[str],
) -> pd.DataFrame:
    """What each 10 s window of one long clip says (05_fma).

    The clip is decoded at the model family's rate (48 kHz for LAION-CLAP) and cut exactly as
    the engine cuts it
    (:func:`clap_helpers.embedding.frontend.split_windows`: consecutive windows, a tail of at least 1 s kept);
    each window is embedded alone with ``enc.embed_waveforms``. Rows: one per window (index
    ``"0-10 s"`` ...; the first is what ``window="first"`` embeds), then ``"average"`` (the
    re-normalised mean of the windows: what ``window="average"`` embeds). Columns: ``start_s``,
    ``end_s``, ``predicted`` (class with the highest cosine), ``cos_to_average`` (cosine of the
    window embedding to the average), then the cosine to each class prompt."""
    import torch

    from ..data.audio import load_audio
    from ..embedding.frontend import split_windows

    sr = int(enc.sample_rate)  # the model family's rate and window (48 kHz, 10 s for LAION)
    x = load_audio(path, sr)
    size = int(enc.family.window_samples or len(x))
    windows, lengths = split_windows(torch.from_numpy(x), size, min_last=min(sr, size))
    parts = [w[: int(n)].numpy() for w, n in zip(windows, lengths, strict=True)]
    emb = np.asarray(enc.embed_waveforms(parts), dtype=np.float64)
    mean = _unit_rows(emb.mean(axis=0, keepdims=True))
    rows = np.concatenate([emb, mean])
    t = _unit_rows(text_emb)
    if t.shape[0] != len(classes):
        raise ValueError(f"{t.shape[0]} text embeddings for {len(classes)} classes")
    sims = rows @ t.T
    starts = np.arange(len(parts)) * size / sr
    ends = starts + np.asarray(lengths, dtype=np.float64) / sr
    index = [f"{a:g}-{b:g} s" for a, b in zip(starts, ends, strict=True)] + ["average"]
    table = pd.DataFrame(
        {
            "start_s": [*starts, 0.0],
            "end_s": [*ends, float(ends[-1])],
            "predicted": [classes[i] for i in sims.argmax(axis=1)],
            "cos_to_average": rows @ mean[0],
        },
        index=pd.Index(index, name="window"),
    )
    for j, c in enumerate(classes):
        table[str(c)] = sims[:, j]
    return table


# ----------------------------------------------------------------------- several datasets (07)
@dataclass
class DatasetEmbeddings:
    """One dataset's clips, audio embeddings and class text embeddings (07_tsne).

    Attributes: ``name`` (loader name), ``clips`` (DataFrame of
    :func:`clap_helpers.data.loaders.load`), ``classes``, ``audio_emb`` (N, D) with NaN rows for
    failed clips, ``text_embs`` {prompt kind: (C, D)}, ``failures`` [(path, reason)]."""

    name: str
    clips: pd.DataFrame
    classes: list[str]
    audio_emb: np.ndarray
    text_embs: dict[str, np.ndarray]
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """(N,) class index of each clip (AudioSet: its first label)."""
        return self.clips["target"].to_numpy()

    @property
    def n(self) -> int:
        """Clips with an embedding (the points of a map)."""
        return int(np.isfinite(self.audio_emb).all(axis=1).sum())


def collect_embeddings(
    names: Sequence[str],
    data_root: str | os.PathLike,
    enc: Any,
    *,
    n_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    log: Callable[[str], Any] = print,
) -> dict[str, DatasetEmbeddings]:
    """Embeddings of every dataset in ``names`` that is downloaded under ``data_root`` (07_tsne).

    Each dataset is loaded with :func:`clap_helpers.data.loaders.load` (``n_samples`` caps its clips
    with a class-stratified subset, ``seed`` picks it), its audio embedded with ``enc`` and its
    classes with two prompt kinds: ``"label"`` (the cleaned class name alone) and ``"sentence"``
    (the hand-written descriptive prompt of :func:`clap_helpers.evaluation.prompts.descriptive_prompts`).
    A dataset that is not on disk is skipped with a note through ``log`` naming its
    ``bash dataset.sh NAME`` command. Raises ``DatasetNotFoundError`` (naming every command)
    when none is present; an unknown name raises ``ValueError``."""
    from ..data.loaders import DatasetNotFoundError, download_command, load_available
    from ..paths import resolve
    from .prompts import clean_label, descriptive_prompts

    loaded, missing = load_available(names, data_root, n_samples=n_samples, seed=seed)
    for name, message in missing.items():
        log(f"skipping {name}: {message}")
    out: dict[str, DatasetEmbeddings] = {}
    for name, (clips, classes) in loaded.items():
        audio = enc.embed_audio(clips["path"], batch_size=batch_size)
        texts = {
            "label": enc.embed_text([clean_label(c) for c in classes]),
            "sentence": enc.embed_text(descriptive_prompts(classes, name)),
        }
        out[name] = DatasetEmbeddings(name, clips, classes, audio, texts, list(enc.failures))
        failed = len(clips) - out[name].n
        log(f"{name}: {len(clips)} clips, {len(classes)} classes, {failed} failed")
    if not out:
        root = resolve(data_root)
        commands = "; ".join(f"`{download_command(n, root)}`" for n in missing)
        raise DatasetNotFoundError(
            f"none of the datasets {list(names)} is downloaded under {root}. "
            f"Download at least one: {commands}"
        )
    return out


def modality_gap(audio_emb: Any, text_emb: Any) -> dict[str, float]:
    """How far the text embeddings sit from the audio ones (07_tsne).

    NaN audio rows are ignored. Returns the mean cosine between distinct audio clips
    (``audio_audio``), between distinct texts (``text_text``), between every clip and every text
    (``audio_text``), and ``centroid_distance``, the Euclidean distance between the mean audio and
    the mean text embedding (0 = no gap; at most 2). CLAP's audio and text embeddings live in
    separate cones of the shared space, so ``audio_text`` is usually well below the other two."""
    a = _unit_rows(audio_emb)
    a = a[np.isfinite(a).all(axis=1)]
    t = _unit_rows(text_emb)
    if len(a) == 0 or len(t) == 0:
        raise ValueError("need at least one audio and one text embedding")

    def mean_pairwise(x: np.ndarray) -> float:
        n = len(x)
        if n < 2:
            return math.nan
        total = float(np.square(x.sum(axis=0)).sum())  # sum over all ordered pairs, self incl.
        return (total - n) / (n * (n - 1))

    ma, mt = a.mean(axis=0), t.mean(axis=0)
    return {
        "audio_audio": mean_pairwise(a),
        "text_text": mean_pairwise(t),
        "audio_text": float(ma @ mt),
        "centroid_distance": float(np.linalg.norm(ma - mt)),
    }


def embedding_summary(data: Mapping[str, DatasetEmbeddings]) -> pd.DataFrame:
    """One row per dataset of :func:`collect_embeddings` (07_tsne): ``clips``, ``points``
    (embedded clips), ``failed``, ``classes``, and per prompt kind the mean cosine between clips
    and texts and the centroid distance of :func:`modality_gap`, next to ``audio_audio``."""
    rows = {}
    for name, d in data.items():
        row: dict[str, Any] = {
            "clips": len(d.clips),
            "points": d.n,
            "failed": len(d.clips) - d.n,
            "classes": len(d.classes),
        }
        for kind, t in d.text_embs.items():
            if d.n == 0:
                continue
            gap = modality_gap(d.audio_emb, t)
            row["audio_audio"] = gap["audio_audio"]
            row[f"audio_text_{kind}"] = gap["audio_text"]
            row[f"gap_{kind}"] = gap["centroid_distance"]
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "dataset"
    return table
