"""Robustness of zero-shot and tgap classification to background noise, with domain adaptation.

The experiment of notebook 08_adaptation, in four steps:

1. **Backgrounds** (:func:`background_table`): recordings of ambient sound, either the dataset's
   own ambient classes (:data:`DEFAULT_BACKGROUND_CLASSES`, e.g. ESC-50 rain / sea waves / wind /
   crickets) or any folder of audio. Recordings that are silent for more than
   ``1 - min_active`` of their length are dropped (a silent stretch of background under the
   event would make the SNR undefined). Each background name's recordings are split by source
   recording into two disjoint roles: ``"mix"`` (mixed under the foregrounds) and ``"adapt"``
   (background-only examples for audio domain adaptation, never heard in a mixture).
2. **Foregrounds** (:func:`foreground_subset`): a deterministic subset of the dataset's clips,
   balanced over class and fold, excluding the background classes.
3. **Soundscapes** (:func:`build_soundscapes`): every foreground mixed into a seeded choice of
   ``"mix"`` background at each SNR with :func:`clap_helpers.data.soundscapes.make_soundscapes`. The same
   seed is used at every SNR, so a foreground gets the same background, crop and placement at
   every SNR: only the level changes (a paired design). The WAVs are written once into a folder
   named after a hash of the inputs and reused on later runs, so the embedding cache (keyed by
   file path, size and mtime) makes a re-run instant. The table also holds a ``"clean"`` row per
   foreground (the original clip, ``snr_db = inf``) as the noise-free reference.
4. **Evaluation** (:func:`evaluate_conditions`): the fold protocol of
   :func:`clap_helpers.evaluation.adapt.crossval`. For test fold ``f`` the test items are the soundscapes
   (and clean clips) whose foreground is in fold ``f``; the tgap prototypes come from the
   *clean* clips of the other folds (all classes, labels unused). So the prototypes are those
   of the clean experiment and the question is how they hold up when the test audio is noisy;
   domain adaptation is the tool meant to close that gap. The background of each soundscape is
   known: text adaptation uses the three prompts of
   :func:`clap_helpers.evaluation.adapt.text_background_prompts` for its background name, audio
   adaptation the ``"adapt"`` recordings of that name. ``s'_c = s_c - tau * beta_c``.

Tables: :func:`snr_table` (method x condition), :func:`tau_table`; figures:
:func:`accuracy_vs_snr`, :func:`tau_sweep`. The first half of the notebook (zs / tgap / sv /
linear next to the published numbers) uses :func:`summarize_modes`, :func:`fold_table` and
:func:`compare_bars`. Accuracies are fractions in [0, 1]; tables and figures show them in %.

Used by: notebook 08_adaptation.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.registry import RECORDS
from ..data.soundscapes import condition_label
from ..diagnostics import ClapWarning
from . import adapt, label_free, scoring

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "DEFAULT_BACKGROUND_CLASSES",
    "background_embeddings",
    "background_table",
    "evaluate_conditions",
    "method_label",
    "snr_table",
    "tau_table",
]

DEFAULT_BACKGROUND_CLASSES: dict[str, tuple[str, ...]] = {
    name: rec.background_classes for name, rec in RECORDS.items() if rec.background_classes
}
"""Stationary ambient classes used as backgrounds when no background folder is given (notebook
08), from the registry (e.g. ESC-50 rain, sea waves, wind, crickets)."""

_GROUP_COLUMNS = ("src_file", "fsID")  # columns naming a clip's source recording
# --------------------------------------------------------------------------------------------
# Part 2: backgrounds, foregrounds and soundscapes
# --------------------------------------------------------------------------------------------


def background_table(
    clips: pd.DataFrame | None = None,
    background_classes: Sequence[str] | None = None,
    *,
    background_dir: str | os.PathLike | None = None,
    background_name: str | None = None,
    adapt_fraction: float = 0.5,
    min_active: float = 0.9,
    seed: int = 0,
) -> pd.DataFrame:
    """Background recordings with their name and role (``"mix"`` or ``"adapt"``).

    Args:
        clips: the dataset table of :func:`clap_helpers.data.loaders.load` (used when
            ``background_dir`` is None).
        background_classes: dataset classes whose clips are the backgrounds (e.g. ``["rain"]``);
            their labels are the background names.
        background_dir: instead, any folder of audio files (searched recursively); all its files
            share one name, ``background_name`` (default: the folder's name).
        background_name: description of ``background_dir``'s sound for the text prompts
            (e.g. ``"street traffic"``); ignored for dataset classes.
        adapt_fraction: share of each name's source recordings given the ``"adapt"`` role
            (at least one, and at least one left for ``"mix"``).
        min_active: recordings whose active fraction (see
            :func:`clap_helpers.data.soundscapes.active_mask`) is below this are dropped, with a
            warning; files that cannot be decoded are dropped too.
        seed: seeds the split.

    Returns:
        DataFrame with columns ``path``, ``background`` (name), ``group`` (source recording:
        ESC-50 ``src_file``, UrbanSound8K ``fsID``, else the file), ``active`` (fraction) and
        ``role``; clips of one source recording always share a role, so the audio used for
        adaptation was never heard in a mixture.

    Raises:
        ValueError: unknown classes, or a name left with fewer than two source recordings.

    Used by: notebook 08_adaptation.
    """
    from ..data.audio import list_audio_files

    if background_dir is not None:
        folder = Path(background_dir).expanduser()
        files = [str(p) for p in list_audio_files(folder)]
        if not files:
            raise ValueError(f"{folder} holds no audio file")
        name = background_name or folder.resolve().name
        table = pd.DataFrame({"path": files, "background": name, "group": files})
    else:
        if clips is None or background_classes is None:
            raise ValueError("give clips and background_classes, or a background_dir")
        wanted = list(dict.fromkeys(str(c) for c in background_classes))
        if not wanted:
            raise ValueError("background_classes is empty")
        missing = sorted(set(wanted) - set(clips["label"]))
        if missing:
            raise ValueError(
                f"background classes {missing} are not in the dataset; it has "
                f"{sorted(clips['label'].unique())}"
            )
        rows = clips[clips["label"].isin(wanted)]
        group_col = next((c for c in _GROUP_COLUMNS if c in rows.columns), "path")
        table = pd.DataFrame(
            {
                "path": rows["path"].astype(str).to_numpy(),
                "background": rows["label"].astype(str).to_numpy(),
                "group": rows[group_col].astype(str).to_numpy(),
            }
        )

    table["active"] = [_active_fraction(p) for p in table["path"]]
    bad = ~(table["active"] >= min_active)  # NaN (undecodable) counts as bad
    if bad.any():
        warnings.warn(
            f"dropping {int(bad.sum())} of {len(table)} background recordings that are silent "
            f"for more than {1 - min_active:.0%} of their length or cannot be decoded",
            ClapWarning,
            stacklevel=2,
        )
    table = table[~bad].reset_index(drop=True)

    table["role"] = "mix"
    for name, part in table.groupby("background", sort=True):
        groups = sorted(pd.unique(part["group"]))
        if len(groups) < 2:
            raise ValueError(
                f"background {name!r} has {len(groups)} usable source recording(s); at least 2 "
                "are needed (one to mix, one for audio adaptation)"
            )
        n_adapt = min(len(groups) - 1, max(1, round(adapt_fraction * len(groups))))
        rng = np.random.default_rng([seed, _stable_int(name)])
        chosen = {groups[i] for i in rng.permutation(len(groups))[:n_adapt]}
        table.loc[part.index[part["group"].isin(chosen)], "role"] = "adapt"
    return table


def background_embeddings(
    backgrounds: pd.DataFrame,
    embed_text: Callable[[list[str]], np.ndarray],
    audio_emb: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per background name: text prompt embeddings and background-only audio embeddings.

    Args:
        backgrounds: :func:`background_table`.
        embed_text: e.g. ``enc.embed_text``; called once on all prompts.
        audio_emb: (M, D) embeddings of the rows of ``backgrounds`` with role ``"adapt"``, in
            that order (``enc.embed_audio(backgrounds.path[backgrounds.role == "adapt"])``).

    Returns:
        ``(text, audio)``: ``{name: (3, D)}`` embeddings of
        :func:`clap_helpers.evaluation.adapt.text_background_prompts` of the readable name
        (``"sea_waves"`` -> ``"sea waves"``), and ``{name: (M_name, D)}`` audio embeddings
        (empty dict when ``audio_emb`` is None).

    Used by: notebook 08_adaptation.
    """
    from .prompts import clean_label

    names = sorted(pd.unique(backgrounds["background"].astype(str)))
    prompts = [adapt.text_background_prompts(clean_label(n)) for n in names]
    flat = embed_text([p for group in prompts for p in group])
    text, start = {}, 0
    for name, group in zip(names, prompts, strict=True):
        text[name] = np.asarray(flat[start : start + len(group)], dtype=np.float32)
        start += len(group)
    audio: dict[str, np.ndarray] = {}
    if audio_emb is not None:
        rows = backgrounds[backgrounds["role"] == "adapt"]
        emb = np.asarray(audio_emb, dtype=np.float32)
        if emb.shape[0] != len(rows):
            raise ValueError(f"audio_emb has {emb.shape[0]} rows for {len(rows)} 'adapt' files")
        for name in names:
            audio[name] = emb[(rows["background"].astype(str) == name).to_numpy()]
    return text, audio


# --------------------------------------------------------------------------------------------
# Part 2: evaluation
# --------------------------------------------------------------------------------------------


def evaluate_conditions(
    items: pd.DataFrame,
    item_emb: np.ndarray,
    text_emb: np.ndarray,
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    train_folds: np.ndarray,
    *,
    modes: Sequence[str] = ("zs", "tgap"),
    text_backgrounds: Mapping[str, np.ndarray] | None = None,
    audio_backgrounds: Mapping[str, np.ndarray] | None = None,
    taus: Sequence[float] = (0.2, 0.5, 0.8),
    top_n: int = adapt.DEFAULT_TOP_N,
) -> pd.DataFrame:
    """Per-fold accuracy of each mode, with and without adaptation, in every condition.

    Args:
        items: :func:`build_soundscapes` table (``target``, ``fold``, ``background``,
            ``snr_db``); one row per test item.
        item_emb: (N, D) embeddings of ``items`` (NaN rows = failed files, left out).
        text_emb: (C, D) class text embeddings.
        train_emb, train_labels, train_folds: the clean dataset (embeddings (M, D), labels and
            folds (M,)); for test fold ``f`` the prototypes are built from the rows whose fold
            is not ``f`` (labels used by ``"sv"`` only).
        modes: prototype modes (``"zs"``, ``"tgap"``, ``"sv"``) and ``"label_free"``: the
            model of :func:`clap_helpers.evaluation.label_free.fit` on the clean clips of the other folds
            (their audio only), applied to the test items; domain adaptation does not apply to
            it (its scores are logits in another space), so it has only the ``"none"`` rows.
        text_backgrounds, audio_backgrounds: ``{background name: (K, D)}`` from
            :func:`background_embeddings`; each given mapping adds the ``"text"`` / ``"audio"``
            adaptation at every ``tau``, using the background of each item.
        taus: adaptation strengths.
        top_n: tgap clips per class.

    Returns:
        Long DataFrame, one row per (condition, mode, adapt, tau, fold): ``condition``,
        ``snr_db`` (inf for clean), ``mode``, ``adapt`` (``"none"``, ``"text"``, ``"audio"``),
        ``tau`` (0 for ``"none"``), ``fold``, ``accuracy`` (fraction), ``n`` (items).

    Used by: notebook 08_adaptation.
    """
    emb = np.asarray(item_emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(items):
        raise ValueError(f"item_emb has shape {emb.shape}, expected ({len(items)}, D)")
    A = np.asarray(train_emb, dtype=np.float32)
    y_train = np.asarray(train_labels)
    f_train = np.asarray(train_folds)
    train_ok = np.isfinite(A).all(axis=1)
    y = items["target"].to_numpy()
    folds = items["fold"].to_numpy()
    snr = items["snr_db"].to_numpy(dtype=float)
    names = items["background"].astype(str).to_numpy()
    ok = np.isfinite(emb).all(axis=1)
    banks = {"text": text_backgrounds, "audio": audio_backgrounds}
    for kind, bank in banks.items():
        if bank is not None:
            missing = sorted(set(names) - set(bank))
            if missing:
                raise KeyError(f"no {kind} background embeddings for {missing}")

    rows = []
    for fold in sorted(pd.unique(folds).tolist()):
        test = (folds == fold) & ok
        if not test.any():
            continue
        pool = (f_train != fold) & train_ok
        for mode in modes:
            if mode == adapt.LABEL_FREE:
                model = label_free.fit(A[pool], text_emb)
                variants = [("none", 0.0, model.logits(emb[test]))]
                active = {}
            else:
                P = adapt.prototypes(mode, A[pool], y_train[pool], text_emb, top_n=top_n)
                s = scoring.scores(emb[test], P, cosine=False)
                variants = [("none", 0.0, s)]
                active = banks
            for kind, bank in active.items():
                if bank is None:
                    continue
                offsets = {b: adapt.background_offsets(P, bank[b]) for b in set(names[test])}
                beta = np.stack([offsets[b] for b in names[test]])  # (n_test, C)
                variants += [(kind, float(t), s - np.float32(t) * beta) for t in taus]
            for kind, tau, sc in variants:
                correct = np.argmax(sc, axis=1) == y[test]
                for value in sorted(set(snr[test].tolist()), reverse=True):
                    at = snr[test] == value
                    rows.append(
                        (
                            condition_label(value),
                            value,
                            mode,
                            kind,
                            tau,
                            fold,
                            float(correct[at].mean()),
                            int(at.sum()),
                        )
                    )
    columns = ["condition", "snr_db", "mode", "adapt", "tau", "fold", "accuracy", "n"]
    return pd.DataFrame(rows, columns=columns)


def snr_table(
    long: pd.DataFrame, tau: float = adapt.DEFAULT_TAU, stat: str = "mean"
) -> pd.DataFrame:
    """Method (rows: ``zs``, ``zs + text DA``, ...) x condition (``clean``, ``20 dB``, ...).

    Values are the ``stat`` (``"mean"`` or ``"std"``, ddof=1) over folds of the accuracy
    (fraction) at adaptation strength ``tau``. Conditions run from clean to the lowest SNR.

    Used by: notebook 08_adaptation.
    """
    sel = long[(long["adapt"] == "none") | np.isclose(long["tau"], tau)]
    if sel.empty:
        raise ValueError(f"no rows at tau={tau}")
    sel = sel.assign(
        method=[method_label(m, a) for m, a in zip(sel["mode"], sel["adapt"], strict=True)]
    )
    table = sel.pivot_table(
        index="method", columns="condition", values="accuracy", aggfunc=stat, sort=False
    )
    table = table[_condition_order(sel)]
    table = table.loc[_method_order(sel)]
    table.columns.name = None
    return table


def tau_table(long: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy (fraction) over folds: rows (method, condition), columns tau.

    Column ``0`` is the unadapted score, so each row reads as the effect of increasing tau.
    Methods are the adapted ones (``zs + text DA`` ...). Used by: notebook 08_adaptation.
    """
    base = long[long["adapt"] == "none"]
    adapted = long[long["adapt"] != "none"]
    if adapted.empty:
        raise ValueError("no adapted rows in the table")
    parts = []
    for kind in pd.unique(adapted["adapt"]):
        parts.append(base.assign(adapt=kind))
    sweep = pd.concat([*parts, adapted], ignore_index=True)
    sweep["method"] = [
        method_label(m, a) for m, a in zip(sweep["mode"], sweep["adapt"], strict=True)
    ]
    table = sweep.pivot_table(
        index=["method", "condition"], columns="tau", values="accuracy", aggfunc="mean"
    )
    methods = _method_order(adapted)
    conditions = _condition_order(long)
    order = pd.MultiIndex.from_product([methods, conditions], names=["method", "condition"])
    table = table.reindex(order)
    table.columns = [f"{t:g}" for t in table.columns]
    return table


def method_label(mode: str, adapt_kind: str) -> str:
    """``"zs"`` / ``"zs + text DA"`` / ``"tgap + audio DA"`` (DA = domain adaptation)."""
    return mode if adapt_kind in ("none", None) else f"{mode} + {adapt_kind} DA"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _active_fraction(path) -> float:
    from ..data.audio import AudioError, load_audio_with_rate
    from ..data.soundscapes import active_mask

    try:
        x, sr = load_audio_with_rate(path)
    except AudioError:
        return float("nan")
    return float(active_mask(x, sr).mean()) if x.size else 0.0


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha1(str(text).encode()).digest()[:4], "little")


def _condition_order(df: pd.DataFrame) -> list[str]:
    values = sorted(set(df["snr_db"].astype(float).tolist()), reverse=True)
    return [condition_label(v) for v in values]


def _method_order(df: pd.DataFrame) -> list[str]:
    order = []
    for mode in dict.fromkeys(df["mode"]):
        for kind in ("none", "text", "audio"):
            if ((df["mode"] == mode) & (df["adapt"] == kind)).any():
                order.append(method_label(mode, kind))
    return order
