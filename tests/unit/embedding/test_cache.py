"""The embedding store under concurrency and on odd cache folders (issue 10)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import warnings

import numpy as np
import pytest

from clap_helpers.embedding.cache import EmbeddingStore

NAMESPACE = {"model": "m", "precision": "fp32"}
DIM = 4


def _chunk_files(store: EmbeddingStore) -> list:
    return [p for p in store.dir.glob("chunk-*.npz") if p.is_file()]


def _row(key: str) -> np.ndarray:
    return np.full((1, DIM), int(key.split("-")[1]), np.float32)


def _writer(root: str, prefix: str, n: int, start, done, wait_for, signal) -> None:
    """One notebook's process: embeds n clips in chunks of 10, then compacts, as flush() does
    once a namespace holds many chunks (after ``wait_for``, then sets ``signal``)."""
    store = EmbeddingStore(root, "audio", NAMESPACE, DIM, flush_every=10)
    store.lookup([])  # loads what is on disk now, as embed_audio does before embedding
    start.wait()
    for i in range(n):
        key = f"{prefix}-{i}"
        store.add([key], _row(key))
    store.flush()
    done.wait()  # both have written everything: now both compact, one after the other
    if wait_for is not None:
        assert wait_for.wait(60)
    store.compact()
    if signal is not None:
        signal.set()


def test_two_processes_writing_and_compacting_keep_every_row(tmp_path):
    ctx = mp.get_context("spawn")
    start, done, a_compacted = ctx.Barrier(2), ctx.Barrier(2), ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path), "a", 150, start, done, None, a_compacted)),
        ctx.Process(target=_writer, args=(str(tmp_path), "b", 150, start, done, a_compacted, None)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    keys = [f"{p}-{i}" for p in "ab" for i in range(150)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM)
        found, rows = store.lookup(keys)
    assert found.sum() == 300
    np.testing.assert_array_equal(rows[:, 0], [int(k.split("-")[1]) for k in keys])
    assert len(_chunk_files(store)) == 1


def test_compact_merges_chunks_another_store_wrote(tmp_path):
    """In one process too: a store compacting must keep rows it never saw."""
    a = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM, flush_every=1)
    a.lookup([])
    b = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM, flush_every=1)
    b.lookup([])
    for i in range(3):
        a.add([f"a-{i}"], _row(f"a-{i}"))
        b.add([f"b-{i}"], _row(f"b-{i}"))
    a.compact()
    assert len(_chunk_files(a)) == 1
    found, _ = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM).lookup(
        [f"{p}-{i}" for p in "ab" for i in range(3)]
    )
    assert found.all()
    assert a.lookup(["b-2"])[0].all()  # and a now knows b's rows


def test_stale_tmp_files_are_swept_live_ones_kept(tmp_path):
    store = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM)
    store.add(["k-1"], _row("k-1"))
    store.flush()
    stale, live = store.dir / ".tmp-dead.npz", store.dir / ".tmp-live.npz"
    stale.write_bytes(b"half a chunk")
    live.write_bytes(b"being written")
    old = time.time() - 24 * 3600  # left by a process killed yesterday
    os.utime(stale, (old, old))
    assert EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM).lookup(["k-1"])[0].all()
    assert not stale.exists() and live.exists()


def test_a_folder_named_like_a_chunk_is_ignored(tmp_path):
    store = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM, flush_every=1)
    store.add(["k-1"], _row("k-1"))
    (store.dir / "chunk-not-a-file.npz").mkdir()
    store.add(["k-2"], _row("k-2"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found, _ = EmbeddingStore(tmp_path, "audio", NAMESPACE, DIM).lookup(["k-1", "k-2"])
        store.compact()
    assert found.all()
    assert (store.dir / "chunk-not-a-file.npz").is_dir() and len(_chunk_files(store)) == 1


def test_cache_dir_that_is_a_file_fails_at_creation(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"embedding cache_dir {blocker} is not a folder"):
        EmbeddingStore(blocker, "audio", NAMESPACE, DIM)
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "audio").write_text("x")  # the kind sub-folder is a file
    with pytest.raises(NotADirectoryError, match="is a file"):
        EmbeddingStore(tmp_path / "ok", "audio", NAMESPACE, DIM)
