"""Fast, batched, deterministic and cached audio and text embeddings, for every model family.

::

    enc = ch.load_clap("laion/clap-htsat-unfused", device="auto", precision="auto")
    E = enc.embed_audio(clips.path, batch_size=32)    # (N, D) float32, L2-normalised rows
    T = enc.embed_text(["This is a sound of dog."])    # (C, D) float32, L2-normalised rows

``load_clap`` (:mod:`clap_helpers.embedding.loading`) recognises the model family of a
checkpoint (:mod:`clap_helpers.embedding.families`: LAION-CLAP, PE-Audio, ...) and chooses the
speed backend; the encoder owns what all families share. How a run goes: cached rows are looked up first
(:mod:`clap_helpers.embedding.cache`); the remaining files are decoded and resampled to the
family's sample rate (48 kHz for LAION-CLAP) in DataLoader worker processes while the model
runs; each clip is cut into consecutive windows of the family's length (10 s for LAION-CLAP);
the family's front-end (for LAION-CLAP the torch log-mel, :mod:`clap_helpers.embedding.frontend`)
runs on a CPU in the decode worker too, where the family allows it (its ``window_frontend``:
:mod:`clap_helpers.embedding.decoding`), else per model batch on the chosen device; the audio
tower runs on the chosen device and precision through a speed backend
(:mod:`clap_helpers.embedding.backends`: eager PyTorch or OpenVINO);
window embeddings of a clip are averaged (or only the first is kept) and re-normalised; finished
rows go to the cache in atomic chunks. A file that fails to decode (unreadable, or out of memory)
gives a NaN row, a warning naming it and an entry in :attr:`ClapEncoder.failures`; the run goes on.

Memory: a file is decoded in blocks and cut at ``max_seconds`` (default 30 min, see
:func:`clap_helpers.data.audio.load_audio`); a long clip's windows are copied into model batches
of at most ``model_batch_size`` windows as they are needed, never all at once.

Nothing is random: no random crops (transformers' extractor crops long clips at random), and
fused models get ``is_longer`` from the clip length alone.

Used by: every notebook that embeds audio or text (02-10), clap_helpers.apps.search and the app.
"""

from __future__ import annotations

import functools
import numbers
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.audio import DEFAULT_MAX_SECONDS
from ..diagnostics import ClapWarning, bars_off, name_files
from . import backends
from .cache import EmbeddingStore, check_cache_dir, default_cache_dir, file_key, text_key
from .decoding import (
    DecodeDataset,
    WindowFeatures,
    collate,
    window_batch,
    window_plan,
    worker_init,
)
from .families.base import ModelFamily

__all__ = [
    "CPU_MODEL_BATCH",
    "ClapEncoder",
    "DEFAULT_MODEL",
    "EmbeddingWarning",
    "TEXT_PRECISION",
    "WINDOW_MODES",
]

DEFAULT_MODEL = "laion/clap-htsat-unfused"
WINDOW_MODES = ("auto", "average", "first", "fusion")
CPU_MODEL_BATCH = 4  # windows per model call on a CPU (benchmarks/bench_embedding.py --sweep)
TEXT_PRECISION = "fp32"  # embed_text never uses reduced precision (see ClapEncoder.embed_text)
_OUT_OF_MEMORY = (MemoryError, getattr(torch.cuda, "OutOfMemoryError", MemoryError))


class EmbeddingWarning(ClapWarning):
    """An input file could not be embedded (its row is NaN) or was suspicious (silent, NaN)."""


def _check_batch_size(batch_size: int) -> None:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class ClapEncoder:
    """A loaded model family on a device, with cache and batching; use :func:`load_clap`.

    Attributes:
        family: the :class:`~clap_helpers.embedding.families.base.ModelFamily` (front-end,
            audio tower, text tower).
        model, tokenizer, frontend: the family's (LAION-CLAP: the ``transformers.ClapModel``,
            its tokenizer and :class:`~clap_helpers.embedding.frontend.LogMelFrontend`);
            AttributeError for a family without them.
        device, precision: where and how it runs (``"fp32"``, ``"bf16"`` or ``"fp16"``).
        backend: how the audio tower runs (:mod:`clap_helpers.embedding.backends`; its repr
            names backend, precision and first-call cost); sets ``precision``.
        dim: embedding size D (512 for the LAION checkpoints).
        fused: whether the checkpoint uses feature fusion.
        failures: ``[(path, reason)]`` of the files the last :meth:`embed_audio` call could not
            embed (their rows are NaN).
        cache_flush_every: rows per cache chunk; an interrupted run redoes at most this many.
        model_batch_size: windows per model call (4 on CPU, None elsewhere: ``batch_size``).
        features_in_workers: compute each clip's window features in the decode worker, where
            the family has a ``window_frontend`` and runs on a CPU (default True; the features
            are bit-identical either way, only the speed differs).
        problems: ``[(path, problem)]`` of files that were embedded but are suspicious (silent,
            NaN samples set to 0, cut at ``max_seconds``), from the last call.
        max_seconds: files are decoded up to this many seconds (``None``: no limit).
    """

    def __init__(
        self,
        family: ModelFamily,
        *,
        device: torch.device,
        precision: str,
        window: str = "average",
        cache_dir: str | os.PathLike | None = None,
        num_workers: int | None = None,
        int16_roundtrip: bool = False,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
    ):
        self.family = family
        self.device = device
        # how the tower runs; load_clap may choose another (backends.choose_backend)
        self.backend = backends.TorchBackend(family.audio_tower, device, precision)
        self.window = window
        # False: no cache unless a call passes a cache_dir
        self.cache_dir: Path | bool = (
            False
            if cache_dir is False
            else check_cache_dir(cache_dir if cache_dir else default_cache_dir())
        )
        if num_workers is None:
            num_workers = 1 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))
        self.num_workers = num_workers
        self.int16_roundtrip = int16_roundtrip
        self.max_seconds = max_seconds
        self.failures: list[tuple[str, str]] = []
        self.problems: list[tuple[str, str]] = []
        self.cache_flush_every = 256  # rows per cache chunk: at most this much work is redone
        # Windows per model call. On a CPU, small batches are faster than large ones (fewer page
        # faults from large activations; see usage.md, Performance); elsewhere: batch_size.
        self.model_batch_size: int | None = CPU_MODEL_BATCH if device.type == "cpu" else None
        self.features_in_workers = True

    # -- the family's attributes --------------------------------------------------------------
    model_id = property(lambda self: self.family.model_id, doc="hub id, folder or file loaded")
    revision = property(lambda self: self.family.revision, doc="commit or local-file hash")
    dim = property(lambda self: int(self.family.dim), doc="embedding size D")
    fused = property(lambda self: bool(self.family.fused), doc="has a fusion branch")
    sample_rate = property(lambda self: int(self.family.sample_rate), doc="input rate, Hz")

    def _family_part(self, name: str):
        try:
            return getattr(self.family, name)
        except AttributeError:
            raise AttributeError(
                f"the {self.family.name} family has no {name!r} (use enc.family)"
            ) from None

    model = property(lambda self: self._family_part("model"), doc="the family's model object")
    tokenizer = property(lambda self: self._family_part("tokenizer"), doc="its text tokenizer")
    frontend = property(lambda self: self._family_part("frontend"), doc="its front-end module")

    def __repr__(self) -> str:
        return (
            f"ClapEncoder({self.model_id!r}, device={self.device.type}, "
            f"precision={self.precision}, backend={self.backend!r}, window={self.window}, "
            f"dim={self.dim})"
        )

    @property
    def precision(self) -> str:
        """The audio tower's precision (``"fp32"``, ``"bf16"`` or ``"fp16"``), set by its backend."""
        return self.backend.precision

    @property
    def logit_scale(self) -> float:
        """The family's temperature: ``softmax(logit_scale * cosine)`` as in the HF pipeline."""
        return float(self.family.logit_scale)

    # -- cache namespaces ---------------------------------------------------------------------
    def audio_namespace(self) -> dict:
        """Everything an audio embedding depends on (the cache key besides the file itself):
        the family, checkpoint and revision, every family setting that changes numbers
        (``frontend``: :meth:`ModelFamily.namespace`), precision and the encoder's own settings."""
        return {
            "family": self.family.name,
            "model": self.model_id,
            "revision": self.revision,
            "precision": self.precision,
            "backend": self.backend.key,
            "window": self.window,
            "int16_roundtrip": self.int16_roundtrip,
            "max_seconds": self.max_seconds,
            "frontend": self.family.namespace(),
        }

    def text_namespace(self) -> dict:
        """What a text embedding depends on. Text always runs in fp32 (see :meth:`embed_text`),
        whatever ``precision`` the audio tower uses."""
        return {
            "family": self.family.name,
            "model": self.model_id,
            "revision": self.revision,
            "precision": TEXT_PRECISION,
            "settings": self.family.namespace(),
        }

    def _store(self, kind: str, cache_dir) -> EmbeddingStore | None:
        root = self.cache_dir if cache_dir is None else cache_dir
        if root is False:
            return None
        namespace = self.audio_namespace() if kind == "audio" else self.text_namespace()
        return EmbeddingStore(Path(root), kind, namespace, self.dim, self.cache_flush_every)

    # -- model calls --------------------------------------------------------------------------
    @torch.inference_mode()
    def _features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple:
        """The audio tower's inputs (fp32, deterministic) for windows (B, T) of ``lengths``."""
        return tuple(self.family.features(waveforms, lengths))

    def _probe_features(self, seconds: float = 10.0) -> tuple:
        """Features of the probe clip at the family's rate, at most one family window."""
        clip = backends.probe_clip(seconds, self.sample_rate, self.family.window_samples)
        return self._features(*clip)

    @torch.inference_mode()
    def _tower_forward(self, *feats: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) float32, L2-normalised, of a batch of features (B, ...)."""
        return F.normalize(self.backend(*feats).float(), dim=-1).cpu()

    def _audio_forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) float32, L2-normalised, of windows (B, T) with true ``lengths``."""
        return self._tower_forward(*self._features(waveforms, lengths))

    def _featurizer(self) -> WindowFeatures | None:
        """Per-clip window features for the decode workers (see :attr:`features_in_workers`),
        or None: features are computed per model batch in :meth:`_embed_decoded`."""
        frontend = self.family.window_frontend
        if not self.features_in_workers or self.device.type != "cpu" or frontend is None:
            return None
        return WindowFeatures(frontend, self.family.window_samples, self.sample_rate, self.window)

    def embed_waveforms(self, waveforms: Iterable[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Embed in-memory mono waveforms at :attr:`sample_rate` (48 kHz for LAION-CLAP and
        PE-Audio; e.g. soundscapes): (N, D) float32. No cache."""
        _check_batch_size(batch_size)
        rows = []
        pending: list[np.ndarray] = []
        for x in waveforms:
            pending.append(np.asarray(x, dtype=np.float32).reshape(-1))
            if len(pending) == batch_size:
                rows.append(self._embed_decoded(pending, batch_size))
                pending = []
        if pending:
            rows.append(self._embed_decoded(pending, batch_size))
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)

    def _embed_clips(self, clips: Sequence, batch_size: int) -> np.ndarray:
        """Clip embeddings (len(clips), D) of waveforms (T,) or, as the decode workers send
        them (:meth:`_featurizer`), of per-clip window features (tuples of (W, ...) tensors)."""
        if clips and isinstance(clips[0], tuple):
            return self._embed_features(clips, batch_size)
        return self._embed_decoded(clips, batch_size)

    def _embed_features(self, clips: Sequence[tuple], batch_size: int) -> np.ndarray:
        """Clip embeddings (len(clips), D) of per-clip window features (tuples of (W_i, ...)
        tensors of one shape per window): ``min(batch_size, model_batch_size)`` windows per
        model call, a clip's windows pooled as in :meth:`_embed_decoded`."""
        batch_size = min(batch_size, self.model_batch_size or batch_size)
        columns = [torch.cat(column) for column in zip(*clips, strict=True)]
        counts = torch.tensor([len(c[0]) for c in clips])
        owner = torch.repeat_interleave(torch.arange(len(clips)), counts)
        if self.backend.batches_itself:  # e.g. OpenVINO: all rows at once, run in its streams
            batch_size = max(1, len(owner))
        calls = [
            functools.partial(
                self._tower_forward, *(c[start : start + batch_size] for c in columns)
            )
            for start in range(0, len(owner), batch_size)
        ]
        return self._pool(self._run_model_calls(calls), owner, len(clips))

    def _run_model_calls(self, calls: list) -> torch.Tensor:
        """Window embeddings (W, D) of ``calls`` (model calls without arguments, each -> (B_i,
        D)), stacked in order; run in the backend's streams (:func:`backends.call_streams`)."""
        outs = backends.run_in_streams(calls, backends.call_streams(self.backend))
        return torch.cat(outs) if outs else torch.empty((0, self.dim))

    @staticmethod
    def _pool(emb: torch.Tensor, owner: torch.Tensor, n_clips: int) -> np.ndarray:
        """Window embeddings (W, D) of clips ``owner`` (W,) -> (n_clips, D) normalised means."""
        pooled = torch.zeros((n_clips, emb.shape[1])).index_add_(0, owner, emb)
        return F.normalize(pooled, dim=-1).numpy()

    def _embed_decoded(self, clips: Sequence, batch_size: int) -> np.ndarray:
        """Clip embeddings (len(clips), D) of waveforms (T,): windows go to the model
        ``min(batch_size, model_batch_size)`` at a time; a clip's windows are pooled. Where the
        family allows it on a CPU, each clip's features are computed on their own first
        (:meth:`_featurizer`, as in the decode workers) and :meth:`_embed_features` runs them.

        A model batch holds at most that many windows and at most that many 10 s of samples
        (a longer ``fusion`` clip goes alone), so a 30 min clip never becomes one big tensor.
        """
        featurize = self._featurizer()
        if featurize is not None:
            return self._embed_features([featurize(x) for x in clips], batch_size)
        batch_size = min(batch_size, self.model_batch_size or batch_size)
        window = self.family.window_samples or 10 * self.sample_rate
        budget = batch_size * window  # samples in one padded model batch
        clips = [torch.as_tensor(x) for x in clips]
        size, rate = self.family.window_samples, self.sample_rate
        plan = [
            (i, s, n)
            for i, x in enumerate(clips)
            for s, n in window_plan(len(x), size, rate, self.window)  # only the plan: no copies
        ]
        batches: list[list[tuple[int, int, int]]] = []
        for item in plan:
            part = batches[-1] if batches else None
            width = max([n for _, _, n in part or []] + [item[2]])
            if part is None or len(part) == batch_size or width * (len(part) + 1) > budget:
                batches.append([item])
            else:
                part.append(item)
        owner = torch.tensor([i for i, _, _ in plan])
        if self.backend.batches_itself and batches:  # features now, one call for all
            feats = [self._features(*self._window_batch(clips, part)) for part in batches]
            emb = self._tower_forward(*(torch.cat(column) for column in zip(*feats, strict=True)))
            return self._pool(emb, owner, len(clips))
        # each call copies its windows when it runs: at most `streams` model batches exist
        calls = [functools.partial(self._forward_windows, clips, part) for part in batches]
        return self._pool(self._run_model_calls(calls), owner, len(clips))

    @staticmethod
    def _window_batch(clips: Sequence[torch.Tensor], part: list) -> tuple:
        """Windows ``part`` ((clip, start, samples) triples) of ``clips``: (B, T), lengths (B,)."""
        return window_batch([(clips[i], start, n) for i, start, n in part])

    def _forward_windows(self, clips: Sequence[torch.Tensor], part: list) -> torch.Tensor:
        """Embeddings (len(part), D) of the windows ``part`` of ``clips``."""
        return self._audio_forward(*self._window_batch(clips, part))

    # -- public API ---------------------------------------------------------------------------
    def embed_audio(
        self,
        paths: Iterable[str | os.PathLike],
        batch_size: int = 32,
        cache_dir: str | os.PathLike | None | bool = None,
        num_workers: int | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Embed audio files: -> (N, D) float32, row i for ``paths[i]``, L2-normalised.

        Args:
            paths: audio files (any format :func:`clap_helpers.data.audio.load_audio` reads).
            batch_size: clips decoded together and windows per model call.
            cache_dir: embedding cache folder; ``None`` = the encoder's (``load_clap``'s
                ``cache_dir``), ``False`` = no cache.
            num_workers: decoding processes (default: the encoder's).
            progress: show a tqdm bar (clips/s) on runs longer than a couple of seconds.

        A file that cannot be decoded gives a NaN row and an entry ``(path, reason)`` in
        :attr:`failures`; a suspicious one (silent, cut at ``max_seconds``) an entry in
        :attr:`problems`. One :class:`EmbeddingWarning` per call names them with their count.
        """
        from tqdm.auto import tqdm

        _check_batch_size(batch_size)
        paths = [str(p) for p in paths]
        self.failures, self.problems = [], []
        store = self._store("audio", cache_dir)
        out = np.full((len(paths), self.dim), np.nan, dtype=np.float32)
        keys = [file_key(p) for p in paths]
        if store is not None:
            found, rows = store.lookup(keys)
            out[found] = rows[found]
            todo = np.flatnonzero(~found).tolist()
        else:
            todo = list(range(len(paths)))
        if not todo:
            return out
        workers = self.num_workers if num_workers is None else num_workers
        loader = torch.utils.data.DataLoader(
            DecodeDataset(
                paths,
                todo,
                self.int16_roundtrip,
                self.max_seconds,
                self.sample_rate,
                featurize=self._featurizer(),
            ),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=worker_init if workers else None,
            prefetch_factor=4 if workers else None,
        )
        bar = tqdm(
            total=len(paths),
            initial=len(paths) - len(todo),
            desc=f"embedding audio ({self.device.type}, {self.precision}, {self.backend.name})",
            unit="clip",
            disable=bars_off(progress),
            delay=2.0,
            smoothing=0.1,
        )
        try:
            for items in loader:
                good = [(row, x) for row, x, _ in items if x is not None]
                good_rows, emb, no_memory = self._embed_rows(good, batch_size)
                if good_rows:
                    out[good_rows] = emb
                    if store is not None:
                        store.add([keys[r] for r in good_rows], emb)
                for row, x, notes in items:
                    for note in notes:
                        self._report(paths[row], note, failed=x is None)
                    if row in no_memory:
                        self._report(paths[row], no_memory[row], failed=True)
                bar.update(len(items))
        finally:
            bar.close()
            if store is not None:
                store.flush()
        if self.failures:  # one warning per call, naming the files
            warnings.warn(
                f"{len(self.failures)} of {len(paths)} files could not be embedded (NaN rows, "
                f"see enc.failures): {name_files(self.failures)}",
                EmbeddingWarning,
                stacklevel=2,
            )
        if self.problems:
            warnings.warn(
                f"{len(self.problems)} of {len(paths)} files embedded with a problem (see "
                f"enc.problems): {name_files(self.problems)}",
                EmbeddingWarning,
                stacklevel=2,
            )
        return out

    def _embed_rows(
        self, good: list[tuple[int, torch.Tensor]], batch_size: int
    ) -> tuple[list[int], np.ndarray, dict[int, str]]:
        """Embed decoded clips ``[(row, waveform)]``: -> (rows, (len(rows), D), {row: reason}).

        If the batch runs out of memory (host or GPU), each clip is retried alone; a clip that
        still does is left out with a reason, so one huge file never ends the run.
        """
        if not good:
            return [], np.zeros((0, self.dim), np.float32), {}
        try:
            return [r for r, _ in good], self._embed_clips([x for _, x in good], batch_size), {}
        except _OUT_OF_MEMORY:
            _release_memory(self.device)
        rows, embs, failed = [], [], {}
        for row, x in good:
            try:
                embs.append(self._embed_clips([x], batch_size))
                rows.append(row)
            except _OUT_OF_MEMORY:
                _release_memory(self.device)
                failed[row] = f"out of memory while embedding {self._amount(x)}"
        emb = np.concatenate(embs) if embs else np.zeros((0, self.dim), np.float32)
        return rows, emb, failed

    def _amount(self, clip) -> str:
        """How much a clip is, for messages: its seconds, or its windows' for features."""
        if isinstance(clip, tuple):  # window features (decode workers)
            window_s = (self.family.window_samples or 0) / self.sample_rate
            return f"{len(clip[0])} windows of {window_s:.0f} s of audio"
        return f"{len(clip) / self.sample_rate:.0f} s of audio"

    def _report(self, path: str, note: str, failed: bool) -> None:
        (self.failures if failed else self.problems).append((path, note))

    @torch.inference_mode()
    def embed_text(
        self,
        texts: Iterable[str],
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None | bool = None,
    ) -> np.ndarray:
        """Embed texts: -> (C, D) float32, L2-normalised; cached like audio (``cache_dir``).

        The text tower always runs in fp32, whatever the encoder's ``precision``: text is cheap,
        and bf16 text embeddings can drift far from fp32 (cosine 0.87 on a sharp checkpoint),
        flipping zero-shot decisions that :meth:`precision_check` (audio only) would not see.
        """
        _check_batch_size(batch_size)
        texts = [str(t) for t in texts]
        out = np.full((len(texts), self.dim), np.nan, dtype=np.float32)
        store = self._store("text", cache_dir)
        keys = [text_key(t) for t in texts]
        todo = list(range(len(texts)))
        if store is not None:
            found, rows = store.lookup(keys)
            out[found] = rows[found]
            todo = np.flatnonzero(~found).tolist()
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            with torch.autocast(self.device.type, enabled=False):  # fp32, see docstring
                emb = self.family.text_embeddings([texts[r] for r in rows])
            out[rows] = F.normalize(emb.float(), dim=-1).cpu().numpy()
            if store is not None:
                store.add([keys[r] for r in rows], out[rows])
        if store is not None:
            store.flush()
        return out

    def precision_check(self, precision: str, seconds: float = 10.0) -> float:
        """Cosine between eager-PyTorch ``precision`` and fp32 audio embeddings of the fixed
        probe clip (:func:`clap_helpers.embedding.backends.probe_clip`, one family window), as
        :func:`clap_helpers.embedding.backends.torch_backend` runs it (bf16 weights or autocast).
        Only audio needs it: text always runs in fp32."""
        feats = self._probe_features(seconds)
        tower = self.family.audio_tower
        ref = backends.TorchBackend(tower, self.device, "fp32")(*feats)
        return backends.torch_backend(tower, self.device, precision, feats, ref).cosine
