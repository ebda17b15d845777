"""Sound search: find clips by text or by example audio, rank texts for clips and texts for texts.

::

    index = ch.search.SoundIndex.build(enc, ["esc50", "urbansound8k"], "downloads")
    index.search_text("a dog barking in the distance", k=10)   # DataFrame: rank, path, ..., score
    index.search_audio("my_recording.wav", k=10)               # query by example
    index.audio_to_text(index.clips.path[0], ["a dog", "rain", "a siren"])
    ch.search.text_to_text(enc, ["rock music", "folk music"], ["happy", "sad", "calm"], k=3)

Search is exact: cosine similarity (a dot product of L2-normalised rows) against every clip, in
numpy. Rows whose file failed to embed (NaN) are never returned; equal scores keep the collection
order (lower row first). Query texts and query files go through the encoder's cache like the
collection, so repeating a query is instant.

:class:`EmbeddingMap` puts the collection on a 2-D map (PCA or t-SNE) and places a query on it.
PCA projects the query with the PCA fitted on the collection. t-SNE has no transform for new
points, so a query goes to the similarity-weighted mean of the map positions of its nearest
clips (:data:`MAP_NEIGHBOURS` of them, weights = cosine clipped at 0). Text queries sit far from
all clips in embedding space (the modality gap), so on the PCA map they land off to one side, while
on the t-SNE map they land among the clips they retrieve.

Used by: notebook 10_sound_search, clap_helpers.apps.web.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data import audio as _audio
from ..data import loaders as _datasets
from ..diagnostics import ClapWarning

__all__ = [
    "collection_roots",
    "EmbeddingMap",
    "load_collection",
    "MAP_NEIGHBOURS",
    "MAX_QUERY_CHARS",
    "PathNotInIndexError",
    "QueryError",
    "rank_texts",
    "RESULT_COLUMNS",
    "results_text",
    "search_widget",
    "SoundIndex",
    "text_to_text",
    "top_k",
    "validate_query",
    "wide_table",
]

if TYPE_CHECKING:  # pragma: no cover
    from ..embedding.encoder import ClapEncoder

MAX_QUERY_CHARS = 500
"""Longest text query accepted (CLAP learnt from captions of a sentence or two)."""

MAP_NEIGHBOURS = 10
"""Clips whose t-SNE positions place a query on a t-SNE map (weighted mean)."""

RESULT_COLUMNS = ["rank", "path", "dataset", "label", "score", "row"]


class QueryError(ValueError):
    """A query that cannot be searched: empty, too long, unreadable audio, outside the collection."""


class PathNotInIndexError(QueryError):
    """A file was asked for that is not part of the indexed collection."""


# ------------------------------------------------------------------------------------- ranking
def top_k(
    queries: Any, embeddings: Any, k: int, exclude: Sequence[int | None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: ``(rows (Q, k'), scores (Q, k'))`` with ``k' = min(k, valid rows)``.

    queries (Q, D) or (D,) and embeddings (N, D) are L2-normalised (cosine = dot product). Rows
    of ``embeddings`` with any NaN are never returned. Scores descend; ties keep the lower row
    first. ``exclude[q]`` (a row index or None) is left out of query q's results (e.g. the query
    clip itself), so that query may get one row fewer; its ``rows`` then end in -1 and its
    ``scores`` in NaN.
    """
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or q.shape[1] != emb.shape[1]:
        raise ValueError(f"queries {q.shape} and embeddings {emb.shape} do not match")
    if not np.isfinite(q).all():
        raise QueryError("the query could not be embedded (NaN embedding)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    valid = np.isfinite(emb).all(axis=1)
    valid_rows = np.flatnonzero(valid)
    kk = min(k, len(valid_rows))
    rows = np.full((len(q), kk), -1, dtype=np.int64)
    scores = np.full((len(q), kk), np.nan, dtype=np.float32)
    if kk == 0:
        return rows, scores
    sims = q @ emb[valid].T  # (Q, V)
    for i, s in enumerate(sims):
        cand_rows = valid_rows
        if exclude is not None and exclude[i] is not None:
            keep = cand_rows != exclude[i]
            cand_rows, s = cand_rows[keep], s[keep]
        n = min(kk, len(s))
        if n == 0:
            continue
        if n < len(s):  # partition first, but keep every row tied with the k-th score
            kth = np.partition(s, len(s) - n)[len(s) - n]
            cand = np.flatnonzero(s >= kth)
        else:
            cand = np.arange(len(s))
        order = cand[np.lexsort((cand_rows[cand], -s[cand]))][:n]
        rows[i, :n] = cand_rows[order]
        scores[i, :n] = s[order]
    return rows, scores


def rank_texts(
    query_emb: Any, text_emb: Any, texts: Sequence[str], k: int | None = None
) -> pd.DataFrame:
    """Rank ``texts`` (C,) by cosine to each query (Q, D) or (D,): long DataFrame with columns
    ``query`` (query index), ``rank`` (1-based), ``text``, ``score``; ``k=None`` keeps all."""
    texts = [str(t) for t in texts]
    rows, scores = top_k(query_emb, text_emb, k or len(texts))
    out = [
        {"query": qi, "rank": r + 1, "text": texts[row], "score": float(sc)}
        for qi in range(rows.shape[0])
        for r, (row, sc) in enumerate(zip(rows[qi], scores[qi], strict=True))
        if row >= 0
    ]
    return pd.DataFrame(out, columns=["query", "rank", "text", "score"])


def text_to_text(
    encoder: ClapEncoder,
    queries: Sequence[str],
    candidates: Sequence[str],
    k: int = 3,
    candidate_template: str = "{}",
) -> pd.DataFrame:
    """For each query text, the k closest candidate texts (e.g. the top-3 moods of each genre).

    ``candidate_template`` wraps each candidate before embedding (e.g. ``"{} music"``); the
    table shows the bare candidate. Returns a long DataFrame: ``query`` (the text), ``rank``,
    ``text``, ``score`` (cosine), Q * min(k, C) rows. :func:`wide_table` makes it one row per query.
    """
    queries = [validate_query(q) for q in queries]
    candidates = [str(c) for c in candidates]
    q_emb = encoder.embed_text(queries)
    c_emb = encoder.embed_text([candidate_template.format(c) for c in candidates])
    table = rank_texts(q_emb, c_emb, candidates, k)
    table["query"] = [queries[i] for i in table["query"]]
    return table


def wide_table(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """One row per query, one column per rank, cells ``"text (score)"``: (Q, k) DataFrame."""
    cells = long.assign(
        cell=[f"{t} ({s:.{digits}f})" for t, s in zip(long["text"], long["score"], strict=True)]
    )
    wide = cells.pivot(index="query", columns="rank", values="cell")
    wide = wide.reindex(pd.unique(long["query"]))
    wide.columns = [f"top {c}" for c in wide.columns]
    return wide


def validate_query(text: Any, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The query with surrounding whitespace removed; :class:`QueryError` if empty or too long."""
    text = "" if text is None else str(text).strip()
    if not text:
        raise QueryError("Type a description of a sound to search for (the query is empty).")
    if len(text) > max_chars:
        raise QueryError(
            f"The query is {len(text)} characters long; the limit is {max_chars}. "
            "CLAP learnt from short captions: describe the sound in a sentence."
        )
    return text


# ------------------------------------------------------------------------------------ the index
def load_collection(
    datasets: Iterable[str],
    data_root: str | os.PathLike = "downloads",
    n_samples: int | None = None,
    seed: int = 0,
    skip_missing: bool = False,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Clips of several datasets in one table: ``(clips, missing)``.

    ``clips`` has the columns of :func:`clap_helpers.data.loaders.load` that all datasets share
    (path, label, target, fold, dataset), rows dataset after dataset; ``n_samples`` applies per
    dataset. A dataset that is not downloaded raises :class:`~clap_helpers.data.loaders.
    DatasetNotFoundError` (message names ``bash dataset.sh NAME``), or with ``skip_missing`` goes
    to ``missing`` ({name: message}) and the others are loaded.
    """
    names = list(dict.fromkeys(datasets))
    if not names:
        raise ValueError(f"no datasets given; choose from {', '.join(_datasets.NAMES)}")
    loaded, missing = _datasets.load_available(names, data_root, n_samples=n_samples, seed=seed)
    if missing and not skip_missing:
        raise _datasets.DatasetNotFoundError(next(iter(missing.values())))
    parts = [clips[["path", "label", "target", "fold", "dataset"]] for clips, _ in loaded.values()]
    if not parts:
        return pd.DataFrame(columns=["path", "label", "target", "fold", "dataset"]), missing
    clips = pd.concat(parts, ignore_index=True)
    clips["fold"] = clips["fold"].astype(str)  # int folds (ESC-50) and str splits (FMA) mixed
    return clips, missing


def collection_roots(
    datasets: Iterable[str], data_root: str | os.PathLike = "downloads"
) -> list[Path]:
    """The audio folders of ``datasets`` under ``data_root``
    (:func:`clap_helpers.data.loaders.audio_folders`): the :attr:`SoundIndex.roots` of a collection
    loaded with :func:`load_collection`."""
    return [f for name in dict.fromkeys(datasets) for f in _datasets.audio_folders(name, data_root)]


@dataclass
class SoundIndex:
    """Cached CLAP embeddings of a sound collection, searchable by text and by audio.

    Attributes:
        clips: one row per clip, at least ``path``; ``dataset`` and ``label`` are shown in
            results when present.
        embeddings: (N, D) float32, L2-normalised rows, NaN rows for files that failed.
        encoder: the :class:`~clap_helpers.embedding.encoder.ClapEncoder` that made them; needed to embed
            text and audio queries (not for :meth:`search`).
        missing: {dataset: message} of datasets :meth:`build` skipped (``skip_missing``).
        roots: the folders the collection's files may come from: the datasets' audio folders
            (:func:`collection_roots`), never derived from the clip paths. Resolved; a clip
            whose resolved path is outside all of them is dropped (one warning names them). The
            app serves files from these folders only; empty: no check, and nothing is served.
    """

    clips: pd.DataFrame
    embeddings: np.ndarray
    encoder: ClapEncoder | None = None
    missing: dict[str, str] = field(default_factory=dict)
    roots: Sequence[str | os.PathLike] = ()

    def __post_init__(self) -> None:
        self.clips = self.clips.reset_index(drop=True).copy()
        if "path" not in self.clips:
            raise ValueError("clips needs a 'path' column")
        for col in ("dataset", "label"):
            if col not in self.clips:
                self.clips[col] = ""
        self.clips["path"] = self.clips["path"].astype(str)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.clips):
            raise ValueError(
                f"embeddings {self.embeddings.shape} do not match {len(self.clips)} clips"
            )
        self.roots = [Path(os.path.realpath(r)) for r in self.roots]
        if self.roots:
            inside = np.array([self.serves(p) for p in self.clips["path"]], dtype=bool)
            if not inside.all():
                bad = self.clips["path"][~inside].tolist()
                warnings.warn(
                    f"{len(bad)} of {len(self.clips)} clips lie outside the collection's folders "
                    f"({', '.join(map(str, self.roots))}) and are left out: "
                    + ", ".join(bad[:5])
                    + (" ..." if len(bad) > 5 else ""),
                    ClapWarning,
                    stacklevel=3,
                )
                self.clips = self.clips[inside].reset_index(drop=True)
                self.embeddings = self.embeddings[inside]
        self.valid = np.isfinite(self.embeddings).all(axis=1)
        self._rows = {_norm(p): i for i, p in enumerate(self.clips["path"])}

    @classmethod
    def build(
        cls,
        encoder: ClapEncoder,
        datasets: Iterable[str] = ("esc50",),
        data_root: str | os.PathLike = "downloads",
        n_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 32,
        skip_missing: bool = False,
        progress: bool = True,
    ) -> SoundIndex:
        """Load ``datasets`` (see :func:`load_collection`) and embed their clips (cached)."""
        clips, missing = load_collection(datasets, data_root, n_samples, seed, skip_missing)
        if clips.empty:
            raise _datasets.DatasetNotFoundError(
                "none of the datasets is downloaded:\n" + "\n".join(missing.values())
            )
        emb = encoder.embed_audio(clips["path"], batch_size=batch_size, progress=progress)
        roots = collection_roots(pd.unique(clips["dataset"]), data_root)
        return cls(clips, emb, encoder, missing, roots)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def n_failed(self) -> int:
        """Clips whose embedding is NaN (never returned by a search)."""
        return int((~self.valid).sum())

    def serves(self, path: str | os.PathLike) -> bool:
        """True if ``path``, resolved (links followed), lies inside one of :attr:`roots`: the
        check Gradio's file route makes with ``allowed_paths=roots``."""
        real = Path(_norm(path))
        return any(real.is_relative_to(r) for r in self.roots)

    # -- files --------------------------------------------------------------------------------
    def row_of(self, path: str | os.PathLike) -> int | None:
        """Row of ``path`` in the collection (compared after resolving symlinks), else None."""
        return self._rows.get(_norm(path))

    def resolve_path(self, path: str | os.PathLike) -> Path:
        """``path`` resolved, if it is one of the indexed clips; else :class:`PathNotInIndexError`.

        The app uses this before touching any file a user names."""
        text = "" if path is None else str(path).strip()
        if not text:
            raise PathNotInIndexError("Give the path of a clip of the collection.")
        row = self.row_of(text)
        if row is None:
            raise PathNotInIndexError(
                f"{text} is not a clip of the indexed collection "
                f"({', '.join(pd.unique(self.clips['dataset']))}); only those can be used."
            )
        return Path(self.clips["path"].iloc[row]).resolve()

    # -- queries ------------------------------------------------------------------------------
    def _encoder(self) -> ClapEncoder:
        if self.encoder is None:
            raise RuntimeError("this SoundIndex has no encoder; pass one to embed queries")
        return self.encoder

    def embed_texts(self, texts: str | Sequence[str]) -> np.ndarray:
        """Validated query texts -> (Q, D) (cached by the encoder)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._encoder().embed_text([validate_query(t) for t in texts])

    def embed_files(self, paths: str | os.PathLike | Sequence) -> np.ndarray:
        """Query audio files -> (Q, D): rows of the collection are reused, other files embedded
        (cached). :class:`QueryError` names a file that cannot be read or decoded."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        out = np.full((len(paths), self.dim), np.nan, dtype=np.float32)
        todo = []
        for i, p in enumerate(paths):
            row = self.row_of(p)
            if row is not None and self.valid[row]:
                out[i] = self.embeddings[row]
            elif not Path(p).is_file():
                raise QueryError(f"{p}: no such audio file")
            else:
                todo.append(i)
        if todo:
            enc = self._encoder()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a failure is reported below, as a QueryError
                out[todo] = enc.embed_audio(  # in-process: a few files, maybe in a server thread
                    [str(paths[i]) for i in todo], num_workers=0, progress=False
                )
            bad = [str(paths[i]) for i in todo if not np.isfinite(out[i]).all()]
            if bad:
                raise QueryError(f"could not decode {', '.join(bad)} as audio")
        return out

    def decode_query(self, path: str | os.PathLike, max_seconds: float | None = None) -> np.ndarray:
        """Decode a query file (e.g. an upload) to a mono 48 kHz waveform (T,) float32, without
        touching the model (the app does this outside its model lock). The duration is read
        from the header first: :class:`QueryError` if the file cannot be read or decoded, or is
        longer than ``max_seconds``."""
        name = Path(path).name
        try:
            seconds = float(_audio.audio_info(path)["duration"])
        except _audio.AudioError as exc:
            raise QueryError(f"could not read {name} as audio ({exc.reason})") from None
        if max_seconds is not None and not seconds <= max_seconds:
            raise QueryError(
                f"{name} is {seconds:.1f} s long; the limit is {max_seconds:g} s. "
                "Upload or record a shorter sound (trim it to the part you want to find)."
            )
        try:
            return _audio.load_audio(path, warn=False)
        except _audio.AudioError as exc:
            raise QueryError(f"could not decode {name} as audio ({exc.reason})") from None

    def embed_waveform(self, waveform: Any) -> np.ndarray:
        """Embedding (D,) of a decoded query waveform (T,) at 48 kHz (not cached)."""
        emb = self._encoder().embed_waveforms([np.asarray(waveform, dtype=np.float32)])[0]
        if not np.isfinite(emb).all():
            raise QueryError("the sound could not be embedded (NaN embedding)")
        return emb

    def search(self, query_emb: Any, k: int = 10, exclude: Sequence | None = None) -> pd.DataFrame:
        """Top-k clips for query embeddings (Q, D) or (D,): DataFrame with ``query`` (index),
        ``rank`` (1-based), ``path``, ``dataset``, ``label``, ``score`` (cosine), ``row``."""
        rows, scores = top_k(query_emb, self.embeddings, k, exclude)
        records = []
        for qi in range(rows.shape[0]):
            for r, (row, sc) in enumerate(zip(rows[qi], scores[qi], strict=True)):
                if row < 0:
                    continue
                clip = self.clips.iloc[row]
                records.append(
                    {
                        "query": qi,
                        "rank": r + 1,
                        "path": clip["path"],
                        "dataset": clip["dataset"],
                        "label": clip["label"],
                        "score": float(sc),
                        "row": int(row),
                    }
                )
        return pd.DataFrame(records, columns=["query", *RESULT_COLUMNS])

    def search_text(self, queries: str | Sequence[str], k: int = 10) -> pd.DataFrame:
        """Clips closest to each text query: :meth:`search` with ``query`` = the text."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        hits = self.search(self.embed_texts(texts), k)
        hits["query"] = [validate_query(texts[i]) for i in hits["query"]]
        return hits

    def search_audio(
        self, paths: str | os.PathLike | Sequence, k: int = 10, exclude_self: bool = True
    ) -> pd.DataFrame:
        """Clips closest to each query audio file (query by example); ``query`` = the path.
        A query that is itself in the collection is left out of its own results
        (``exclude_self``)."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        exclude = [self.row_of(p) for p in paths] if exclude_self else None
        hits = self.search(self.embed_files(paths), k, exclude)
        hits["query"] = [str(paths[i]) for i in hits["query"]]
        return hits

    def audio_to_text(
        self, paths: str | os.PathLike | Sequence, texts: Sequence[str], k: int | None = None
    ) -> pd.DataFrame:
        """Rank ``texts`` for each audio file: long DataFrame ``query`` (path), ``rank``,
        ``text``, ``score``; ``k=None`` ranks all texts."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        table = rank_texts(self.embed_files(paths), self._encoder().embed_text(texts), texts, k)
        table["query"] = [str(paths[i]) for i in table["query"]]
        return table


def _norm(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


# -------------------------------------------------------------------------------- the 2-D map
class EmbeddingMap:
    """2-D positions of a collection's clips and a way to place queries among them.

    ``xy`` is (N, 2) with NaN rows where the embedding is NaN. Build with :meth:`fit`.
    """

    def __init__(self, method: str, xy: np.ndarray, embeddings: np.ndarray, pca=None):
        self.method = method
        self.xy = xy
        self.embeddings = embeddings
        self._pca = pca

    @property
    def explained(self) -> np.ndarray | None:
        """Share of the variance along each PCA axis (2,); None for t-SNE."""
        return None if self._pca is None else self._pca.explained_variance_ratio_

    @classmethod
    def fit(cls, embeddings: Any, method: str = "pca", seed: int = 0) -> EmbeddingMap:
        """Fit ``"pca"`` (sklearn, 2 components) or ``"tsne"`` (via
        :func:`clap_helpers.plots.embedding_coords`: seconds for a few thousand clips, minutes
        for tens of thousands) on the finite rows of ``embeddings`` (N, D)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        valid = np.isfinite(emb).all(axis=1)
        xy = np.full((len(emb), 2), np.nan)
        pca = None
        if method == "pca":
            from sklearn.decomposition import PCA

            if valid.sum() < 2:
                raise ValueError("a PCA map needs at least 2 clips")
            pca = PCA(n_components=2, svd_solver="full", random_state=seed)
            xy[valid] = pca.fit_transform(emb[valid].astype(np.float64))
        elif method == "tsne":
            from ..plots import embedding_coords

            xy[valid] = embedding_coords(emb[valid], method="tsne", seed=seed)[0]
        else:
            raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
        return cls(method, xy, emb, pca)

    def place(self, query_emb: Any, neighbours: int = MAP_NEIGHBOURS) -> np.ndarray:
        """Map position (2,) of one query embedding (D,): the fitted PCA's projection, or for
        t-SNE the mean of its ``neighbours`` nearest clips' positions weighted by cosine (clipped
        at 0; plain mean if all are <= 0)."""
        q = np.asarray(query_emb, dtype=np.float64).reshape(1, -1)
        if self._pca is not None:
            return self._pca.transform(q)[0]
        rows, scores = top_k(q, self.embeddings, neighbours)
        keep = rows[0] >= 0
        rows, w = rows[0][keep], np.clip(scores[0][keep].astype(np.float64), 0.0, None)
        if w.sum() <= 0:
            w = np.ones_like(w)
        return (self.xy[rows] * w[:, None]).sum(axis=0) / w.sum()


# --------------------------------------------------------------------------- notebook widget
def results_text(hits: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Results for display: ``query`` (an audio file's name only), ``rank``, ``dataset``,
    ``label``, ``text``, ``score`` (rounded) and ``file`` (the name only), those present. Takes
    the hits of the ``search_*`` methods and the rankings of :meth:`SoundIndex.audio_to_text`."""
    out = hits.assign(score=hits["score"].round(digits))
    if "path" in out:
        out["file"] = [Path(p).name for p in out["path"]]
    if "query" in out:
        out["query"] = [Path(q).name if _is_file(q) else q for q in out["query"]]
    columns = ["query", "rank", "dataset", "label", "text", "score", "file"]
    return out[[c for c in columns if c in out]]


def _is_file(text: Any) -> bool:
    try:
        return Path(str(text)).is_file()
    except (OSError, ValueError):
        return False


def search_widget(index: SoundIndex, k: int = 5):
    """JupyterLab search box: a text field, a Search button and the top-``k`` clips each with
    an audio player (``IPython.display.Audio``, embedded in the notebook). Returns the ipywidgets
    ``VBox``, or None if ipywidgets is not installed."""
    try:
        import ipywidgets as w
    except ImportError:
        return None
    from IPython.display import Audio, display

    box = w.Text(
        placeholder="e.g. a dog barking in the rain", description="Sound:", continuous_update=False
    )
    button = w.Button(description="Search", button_style="primary")
    out = w.Output()

    def run(_=None) -> None:
        out.clear_output()
        with out:
            try:
                hits = index.search_text(box.value, k)
            except QueryError as exc:
                print(exc)
                return
            for hit in hits.itertuples():
                print(f"{hit.rank}. {hit.score:.3f}  {hit.dataset}  {hit.label}  {hit.path}")
                display(Audio(filename=hit.path))

    button.on_click(run)
    box.observe(run, "value")  # continuous_update=False: on Enter or leaving the box
    return w.VBox([w.HBox([box, button]), out])
