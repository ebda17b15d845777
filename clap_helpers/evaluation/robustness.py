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
   ``"mix"`` background at each SNR with :func:`clap_helpers.soundscape.make_soundscapes`. The same
   seed is used at every SNR, so a foreground gets the same background, crop and placement at
   every SNR: only the level changes (a paired design). The WAVs are written once into a folder
   named after a hash of the inputs and reused on later runs, so the embedding cache (keyed by
   file path, size and mtime) makes a re-run instant. The table also holds a ``"clean"`` row per
   foreground (the original clip, ``snr_db = inf``) as the noise-free reference.
4. **Evaluation** (:func:`evaluate_conditions`): the fold protocol of
   :func:`clap_helpers.adapt.crossval`. For test fold ``f`` the test items are the soundscapes
   (and clean clips) whose foreground is in fold ``f``; the tgap prototypes come from the
   *clean* clips of the other folds (all classes, labels unused). So the prototypes are those
   of the clean experiment and the question is how they hold up when the test audio is noisy;
   domain adaptation is the tool meant to close that gap. The background of each soundscape is
   known: text adaptation uses the three prompts of
   :func:`clap_helpers.adapt.text_background_prompts` for its background name, audio
   adaptation the ``"adapt"`` recordings of that name. ``s'_c = s_c - tau * beta_c``.

Tables: :func:`snr_table` (method x condition), :func:`tau_table`; figures:
:func:`accuracy_vs_snr`, :func:`tau_sweep`. The first half of the notebook (zs / tgap / sv /
linear next to the published numbers) uses :func:`summarize_modes`, :func:`fold_table` and
:func:`compare_bars`. Accuracies are fractions in [0, 1]; tables and figures show them in %.

Used by: notebook 08_adaptation.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import adapt, label_free

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_BACKGROUND_CLASSES",
    "accuracy_vs_snr",
    "background_embeddings",
    "background_table",
    "build_soundscapes",
    "compare_bars",
    "condition_label",
    "evaluate_conditions",
    "fold_table",
    "foreground_subset",
    "method_label",
    "snr_table",
    "summarize_modes",
    "tau_sweep",
    "tau_table",
]

DEFAULT_BACKGROUND_CLASSES: dict[str, tuple[str, ...]] = {
    # Stationary ambient sounds that can last a whole scene and are not events themselves.
    "esc50": ("rain", "sea_waves", "wind", "crickets"),
    "urbansound8k": ("air_conditioner", "engine_idling"),
}
"""Dataset classes used as backgrounds when no background folder is given (notebook 08)."""

SOUNDSCAPE_VERSION = 1  # part of the soundscape folder key: bump when the mixing changes
_MANIFEST = "soundscapes.csv"
_GROUP_COLUMNS = ("src_file", "fsID")  # columns naming a clip's source recording
_MODE_COLOURS = {
    "zs": "tab:blue",
    "tgap": "tab:orange",
    "sv": "tab:green",
    "linear": "tab:red",
    "label_free": "tab:purple",
}
_METHOD_COLOURS = {
    "zero-shot": "tab:blue",
    "tgap": "tab:orange",
    "sv": "tab:green",
    "linear probe": "tab:red",
    "label_free (inductive)": "tab:purple",
    "label_free (transductive)": "tab:purple",
    "training-free": "tab:purple",
}
_ADAPT_STYLES = {"none": "-", "text": "--", "audio": ":"}
_ADAPT_MARKERS = {"none": "o", "text": "s", "audio": "^"}


# --------------------------------------------------------------------------------------------
# Part 1: the four modes next to the published numbers
# --------------------------------------------------------------------------------------------


def summarize_modes(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{mode: {"mean", "std", "per_fold"}}`` from ``{mode: adapt.crossval(...) result}``.

    The compact form written to the results JSON of notebook 08_adaptation (notebook 09 reads
    ``modes["zs"]["mean"]`` and ``modes["linear"]["mean"]``); accuracies are fractions.
    """
    return {
        mode: {
            "mean": float(res["mean"]),
            "std": float(res["std"]),
            "per_fold": {k: float(v) for k, v in res["per_fold"].items()},
        }
        for mode, res in results.items()
    }


def fold_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Accuracy (fraction) per fold (rows, then ``mean`` and ``std``) and mode (columns).

    ``results``: ``{mode: adapt.crossval(...) result}``. Used by: notebook 08_adaptation.
    """
    table = pd.DataFrame({mode: pd.Series(res["per_fold"]) for mode, res in results.items()})
    table.index.name = "fold"
    table.loc["mean"] = [float(res["mean"]) for res in results.values()]
    table.loc["std"] = [float(res["std"]) for res in results.values()]
    return table


def compare_bars(
    table: pd.DataFrame, ax: Axes | None = None, title: str | None = None, max_chars: int = 44
) -> Figure:
    """Horizontal bars: our modes (mean ± std over folds) above the published accuracies.

    Args:
        table: :func:`clap_helpers.adapt.compare_table` output (``source``, ``model``,
            ``method``, ``accuracy`` and ``std`` in %).
        ax: draw into this Axes, else a new figure.
        title: axes title.
        max_chars: published model names are shortened to this many characters.

    Our bars are solid with error bars (std over folds); published bars are pale and hatched,
    coloured by method (zero-shot blue, linear probe red), so each of our bars can be read
    against the published numbers of the same method. Returns the Figure.

    Used by: notebook 08_adaptation.
    """
    ours = table[table["source"] == "ours"]
    published = table[table["source"] == "published"].sort_values(
        ["method", "accuracy"], ascending=[False, False], kind="stable"
    )
    n = len(ours) + len(published)
    fig, ax = _fig_ax(ax, (8.0, max(3.0, 0.32 * n + 1.2)))
    gap = 0.8 if len(ours) and len(published) else 0.0
    y_ours = np.arange(len(ours), dtype=float)
    y_pub = len(ours) + gap + np.arange(len(published), dtype=float)

    def colour(method: str) -> str:
        return _METHOD_COLOURS.get(method, "tab:gray")

    if len(ours):
        acc = ours["accuracy"].to_numpy(dtype=float)
        err = np.nan_to_num(ours["std"].to_numpy(dtype=float), nan=0.0)
        bars = ax.barh(y_ours, acc, xerr=err, color=[colour(m) for m in ours["method"]], capsize=3)
        ax.bar_label(bars, labels=list(ours["text"]), fontsize=7, padding=4)
    if len(published):
        acc = published["accuracy"].to_numpy(dtype=float)
        bars = ax.barh(
            y_pub,
            acc,
            color=[colour(m) for m in published["method"]],
            alpha=0.35,
            hatch="//",
            edgecolor="white",
        )
        ax.bar_label(bars, labels=list(published["text"]), fontsize=7, padding=2)
    labels = [f"ours ({m}) · {meth}" for m, meth in zip(ours["model"], ours["method"], strict=True)]
    labels = [_shorten(s, max_chars + 12) for s in labels]
    labels += [
        f"{_shorten(m, max_chars)} · {meth}"
        for m, meth in zip(published["model"], published["method"], strict=True)
    ]
    ax.set_yticks(np.concatenate([y_ours, y_pub]), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return fig


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
        clips: the dataset table of :func:`clap_helpers.datasets.load` (used when
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
            :func:`clap_helpers.soundscape.active_mask`) is below this are dropped, with a
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
    from .audio import list_audio_files

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
            UserWarning,
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


def foreground_subset(
    clips: pd.DataFrame,
    n: int | None = None,
    exclude_classes: Sequence[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """A deterministic subset of ``n`` clips (all if None), spread evenly over class and fold.

    Clips of ``exclude_classes`` (the background classes) are left out first. The clips of each
    (class, fold) cell are shuffled; round r takes the r-th clip of every cell. Within a round,
    pick t (0, 1, ...) goes to class ``t mod C`` and fold ``(t + t // lcm(C, F)) mod F`` (classes
    and folds in seeded orders), which visits every cell once while classes and folds take
    turns. So any prefix of this order has class counts, and fold counts, within one of each
    other (up to cells that run out of clips): e.g. 4 clips of 4 classes come from 4 different
    folds. The same ``seed`` gives the same clips, a smaller ``n`` a subset of a larger one.
    Rows keep the index and order of ``clips`` (to pick their embeddings).

    Used by: notebook 08_adaptation.
    """
    pool = clips[~clips["label"].isin(list(exclude_classes))]
    if pool.empty:
        raise ValueError("no foreground clip left after excluding the background classes")
    if n is None or n >= len(pool):
        return pool.copy()
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    classes = sorted(pd.unique(pool["label"]).tolist())
    fold_values = sorted(pd.unique(pool["fold"]).tolist())
    class_order = [classes[i] for i in rng.permutation(len(classes))]
    fold_order = [fold_values[i] for i in rng.permutation(len(fold_values))]
    n_c, n_f = len(class_order), len(fold_order)
    period = np.lcm(n_c, n_f)
    turn = {
        (class_order[t % n_c], fold_order[(t + t // period) % n_f]): t for t in range(n_c * n_f)
    }
    order = rng.permutation(len(pool))
    shuffled = pool.iloc[order]
    rank = shuffled.groupby(["label", "fold"], sort=False).cumcount().to_numpy()
    t = np.array([turn[cell] for cell in zip(shuffled["label"], shuffled["fold"], strict=True)])
    picked = order[np.lexsort((t, rank))[: int(n)]]  # by round, then turn within the round
    return pool.iloc[np.sort(picked)].copy()


def build_soundscapes(
    foregrounds: pd.DataFrame,
    backgrounds: pd.DataFrame,
    snrs: Sequence[float],
    out_dir: str | os.PathLike,
    seed: int = 0,
    duration_s: float = 10.0,
    include_clean: bool = True,
) -> pd.DataFrame:
    """Mix every foreground into a ``"mix"`` background at each SNR; reuse earlier WAVs.

    Args:
        foregrounds: rows of the dataset table (:func:`foreground_subset`): ``path``, ``label``,
            ``target``, ``fold``.
        backgrounds: :func:`background_table`; only rows with role ``"mix"`` are used.
        snrs: SNRs in dB (constant per set).
        out_dir: root folder; the WAVs go to ``out_dir/<key>/snr_<snr>dB/`` where ``key`` hashes
            the inputs (paths, seed, duration, mixing version). A set whose manifest exists is
            read back instead of re-mixed, so files (and their cache keys) stay the same.
        seed: mixing seed, the same for every SNR (paired design, see module docstring).
        duration_s: soundscape length in seconds (48 kHz, 16-bit WAV: about 1 MB per 10 s).
        include_clean: add one row per foreground with its original clip (``snr_db = inf``).

    Returns:
        DataFrame with one row per test item: ``path``, ``foreground``, ``label``, ``target``,
        ``fold``, ``background`` (name), ``background_path``, ``snr_db`` (inf for clean) and
        ``condition`` (:func:`condition_label`). Foregrounds the mixer skipped (undecodable or
        silent) are missing from every condition. ``attrs["failures"]`` lists ``(snr, path,
        reason)`` for each file skipped while mixing (foreground or background),
        ``attrs["n_failed"]`` counts them and ``attrs["folder"]`` is the key folder.

    Used by: notebook 08_adaptation.
    """
    from .soundscape import make_soundscapes

    mix_bg = backgrounds[backgrounds["role"] == "mix"]
    if mix_bg.empty:
        raise ValueError("no background with role 'mix'")
    snrs = list(dict.fromkeys(float(v) for v in np.atleast_1d(snrs)))
    if not snrs or not all(np.isfinite(snrs)):
        raise ValueError(f"snrs must be finite numbers in dB, got {snrs}")
    fg_paths = [str(p) for p in foregrounds["path"]]
    bg_paths = [str(p) for p in mix_bg["path"]]
    key = _hash(
        {
            "version": SOUNDSCAPE_VERSION,
            "fg": fg_paths,
            "bg": bg_paths,
            "seed": int(seed),
            "duration_s": float(duration_s),
        }
    )
    folder = Path(out_dir).expanduser() / key
    bg_name = dict(zip(bg_paths, mix_bg["background"].astype(str), strict=True))
    fg_info = foregrounds.assign(foreground=fg_paths).set_index("foreground")[
        ["label", "target", "fold"]
    ]

    parts, failures = [], []
    for snr in snrs:
        sub = folder / f"snr_{snr:g}dB"
        manifest = sub / _MANIFEST
        df = _read_manifest(manifest)
        if df is None:
            fails: list[tuple[str, str]] = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                df = make_soundscapes(
                    fg_paths,
                    bg_paths,
                    snr,
                    out_dir=sub,
                    seed=seed,
                    duration_s=duration_s,
                    failures=fails,
                )
            for w in caught:  # re-emit anything other than the per-file skips we summarise
                if not str(w.message).startswith("soundscape: skipping"):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            df = df.assign(failure="")
            if fails:
                extra = pd.DataFrame(
                    {
                        "path": "",
                        "foreground": [f[0] for f in fails],
                        "background": "",
                        "snr_db": snr,
                        "failure": [f[1] for f in fails],
                    }
                )
                df = pd.concat([df, extra], ignore_index=True)
            tmp = manifest.with_suffix(".tmp")
            df.to_csv(tmp, index=False)
            os.replace(tmp, manifest)
        failed = df["failure"].fillna("").astype(str) != ""
        failures += [
            (snr, f, r)
            for f, r in zip(df.loc[failed, "foreground"], df.loc[failed, "failure"], strict=True)
        ]
        ok = df[~failed]
        parts.append(
            pd.DataFrame(
                {
                    "path": ok["path"].astype(str).to_numpy(),
                    "foreground": ok["foreground"].astype(str).to_numpy(),
                    "background_path": ok["background"].astype(str).to_numpy(),
                    "snr_db": snr,
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["background"] = out["background_path"].map(bg_name)
    if include_clean:
        first = out.drop_duplicates("foreground")[["foreground", "background_path", "background"]]
        clean = first.assign(path=first["foreground"], snr_db=np.inf)
        out = pd.concat([clean, out], ignore_index=True)
    out = out.join(fg_info, on="foreground")
    out["condition"] = [condition_label(s) for s in out["snr_db"]]
    out = out[
        [
            "path",
            "foreground",
            "label",
            "target",
            "fold",
            "background",
            "background_path",
            "snr_db",
            "condition",
        ]
    ].reset_index(drop=True)
    out["target"] = out["target"].astype(int)
    out.attrs["failures"] = failures
    out.attrs["n_failed"] = len(failures)
    out.attrs["folder"] = str(folder)
    if failures:
        warnings.warn(
            f"{len(failures)} files were skipped while mixing (see attrs['failures'])",
            UserWarning,
            stacklevel=2,
        )
    return out


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
        :func:`clap_helpers.adapt.text_background_prompts` of the readable name
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
            model of :func:`clap_helpers.label_free.fit` on the clean clips of the other folds
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
                s = adapt.scores(emb[test], P)
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


def condition_label(snr_db: float) -> str:
    """``"clean"`` for inf (no background), else ``"{snr:g} dB"``."""
    return "clean" if np.isinf(snr_db) and snr_db > 0 else f"{float(snr_db):g} dB"


# --------------------------------------------------------------------------------------------
# Part 2: figures
# --------------------------------------------------------------------------------------------


def accuracy_vs_snr(
    long: pd.DataFrame,
    tau: float = adapt.DEFAULT_TAU,
    ax: Axes | None = None,
    title: str | None = None,
    chance: float | None = None,
) -> Figure:
    """Accuracy (%) against condition, one line per method, error bars = std over folds.

    x runs from ``clean`` to the lowest SNR (equally spaced); colour = mode, line style =
    adaptation (solid none, dashed text, dotted audio) at strength ``tau``. Lines are shifted
    sideways a little so the error bars do not hide each other. ``chance`` (a fraction, e.g.
    ``1 / n_classes``) adds a grey reference line. Returns the Figure.

    Used by: notebook 08_adaptation.
    """
    mean = snr_table(long, tau, "mean")
    std = snr_table(long, tau, "std")
    fig, ax = _fig_ax(ax, (7.0, 4.2))
    x = np.arange(mean.shape[1], dtype=float)
    n = len(mean)
    for i, method in enumerate(mean.index):
        mode, _, rest = method.partition(" + ")
        kind = rest.split(" ")[0] if rest else "none"
        shift = (i - (n - 1) / 2) * min(0.05, 0.3 / max(n, 1))
        ax.errorbar(
            x + shift,
            100 * mean.loc[method].to_numpy(dtype=float),
            yerr=100 * np.nan_to_num(std.loc[method].to_numpy(dtype=float)),
            color=_MODE_COLOURS.get(mode, "tab:gray"),
            ls=_ADAPT_STYLES.get(kind, "-"),
            marker=_ADAPT_MARKERS.get(kind, "o"),
            ms=5,
            capsize=2,
            lw=1.5,
            label=method,
        )
    if chance is not None:
        ax.axhline(100 * chance, color="gray", ls="-.", lw=1, label="chance")
    ax.set_xticks(x, list(mean.columns))
    ax.set_xlabel("foreground-to-background SNR")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title if title else f"accuracy against background level (DA tau = {tau:g})")
    return fig


def tau_sweep(
    long: pd.DataFrame, axes: Sequence[Axes] | None = None, title: str | None = None
) -> Figure:
    """One panel per condition: accuracy (%) of each adapted method against tau.

    tau = 0 is the unadapted method, so a line going up means adaptation helps at that strength.
    ``axes``: one Axes per condition (clean first), else a new figure. Returns the Figure.

    Used by: notebook 08_adaptation.
    """
    table = tau_table(long)
    conditions = list(dict.fromkeys(table.index.get_level_values("condition")))
    methods = list(dict.fromkeys(table.index.get_level_values("method")))
    taus = np.array([float(t) for t in table.columns])
    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            1,
            len(conditions),
            figsize=(2.6 * len(conditions) + 1.8, 3.4),
            sharey=True,
            layout="constrained",
            squeeze=False,
        )
        axes = list(axes[0])
    else:
        axes = list(axes)
        if len(axes) != len(conditions):
            raise ValueError(f"need {len(conditions)} axes (one per condition), got {len(axes)}")
        fig = _root_figure(axes[0])
    for ax, cond in zip(axes, conditions, strict=True):
        for method in methods:
            mode, _, rest = method.partition(" + ")
            kind = rest.split(" ")[0]
            ax.plot(
                taus,
                100 * table.loc[(method, cond)].to_numpy(dtype=float),
                color=_MODE_COLOURS.get(mode, "tab:gray"),
                ls=_ADAPT_STYLES.get(kind, "-"),
                marker=_ADAPT_MARKERS.get(kind, "o"),
                ms=4,
                label=method,
            )
        ax.set_title(cond, fontsize=10)
        ax.set_xticks(taus, [f"{t:g}" for t in taus])
        ax.set_xlabel("tau")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title if title else "domain adaptation strength (tau 0: not adapted)")
    return fig


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _fig_ax(ax, figsize):
    if ax is not None:
        return _root_figure(ax), ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _root_figure(ax):
    from matplotlib.figure import Figure

    fig = ax.figure
    while not isinstance(fig, Figure) and hasattr(fig, "figure"):  # SubFigure -> its parent
        fig = fig.figure
    return fig


def _shorten(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _active_fraction(path) -> float:
    from .audio import AudioError, load_audio_with_rate
    from .soundscape import active_mask

    try:
        x, sr = load_audio_with_rate(path)
    except AudioError:
        return float("nan")
    return float(active_mask(x, sr).mean()) if x.size else 0.0


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha1(str(text).encode()).digest()[:4], "little")


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> pd.DataFrame | None:
    """A finished set's manifest, or None if missing or any listed WAV is gone."""
    if not path.is_file():
        return None
    df = pd.read_csv(path, keep_default_na=False)
    if "failure" not in df.columns:
        return None
    made = df[df["failure"].astype(str) == ""]
    if not all(Path(p).is_file() for p in made["path"]):
        return None
    df["snr_db"] = df["snr_db"].astype(float)
    return df


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
