"""The embedding engine on the tiny CLAP: shapes, failures, determinism, windows, cache."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_helpers.data.loaders import load
from clap_helpers.embedding import devices
from clap_helpers.embedding import encoder as embed
from clap_helpers.embedding.cache import CacheWarning, EmbeddingStore
from clap_helpers.embedding.encoder import EmbeddingWarning
from clap_helpers.embedding.loading import load_clap


@pytest.fixture(scope="module")
def enc(tiny_clap, tmp_path_factory, default_precision):
    cache = tmp_path_factory.mktemp("cache")
    return load_clap(tiny_clap, precision=default_precision, cache_dir=cache, num_workers=0)


@pytest.fixture(scope="module")
def esc_paths(data_root):
    clips, _ = load("esc50", data_root)
    return list(clips["path"][:12])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_audio_embeddings_shape_and_norm(enc, esc_paths):
    emb = enc.embed_audio(esc_paths, batch_size=4, cache_dir=False)
    assert emb.shape == (len(esc_paths), enc.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert enc.failures == []


def test_text_embeddings_shape_norm_and_spread(enc):
    texts = ["This is a sound of dog.", "This is a sound of rain.", "A siren wails."]
    emb = enc.embed_text(texts, cache_dir=False)
    assert emb.shape == (3, enc.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[np.triu_indices(3, 1)].max() < 0.95


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_matches_plain_transformers_path(precision, tiny_clap, esc_paths, min_cosine_to_fp32):
    """Our front-end + batching give the embedding of ClapProcessor + get_audio_features (fp32),
    within the tolerance of the precision."""
    from transformers import ClapModel, ClapProcessor

    from clap_helpers.data.audio import load_audio

    enc = load_clap(tiny_clap, "cpu", precision, cache_dir=False, num_workers=0)
    model = ClapModel.from_pretrained(tiny_clap).eval()
    processor = ClapProcessor.from_pretrained(tiny_clap)
    clips = [load_audio(p) for p in esc_paths[:4]]  # 5 s clips: no random crop involved
    inputs = processor(audio=clips, sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        ref = model.get_audio_features(input_features=inputs["input_features"]).pooler_output
    ours = enc.embed_audio(esc_paths[:4], cache_dir=False)
    assert cosine_rows(ours, ref.numpy()).min() > min_cosine_to_fp32(precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_text_matches_plain_transformers_path(precision, tiny_clap):
    """Text is embedded in fp32 whatever the audio precision (bf16 text flips zero-shot
    decisions on sharp checkpoints), so it matches the fp32 reference tightly."""
    from transformers import ClapModel, ClapProcessor

    enc = load_clap(tiny_clap, "cpu", precision, cache_dir=False, num_workers=0)
    assert enc.precision == precision
    model = ClapModel.from_pretrained(tiny_clap).eval()
    processor = ClapProcessor.from_pretrained(tiny_clap)
    texts = ["This is a sound of chirping birds.", "dog"]
    with torch.no_grad():
        tokens = processor(text=texts, padding=True, return_tensors="pt")
        ref = model.get_text_features(**tokens).pooler_output.numpy()
    assert cosine_rows(enc.embed_text(texts, cache_dir=False), ref).min() > 0.99999


def test_bad_files_give_nan_rows_and_named_warnings(enc, esc_paths, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    missing = tmp_path / "missing.wav"
    paths = [esc_paths[0], str(broken), esc_paths[1], str(missing)]
    with pytest.warns(EmbeddingWarning) as record:
        emb = enc.embed_audio(paths, cache_dir=False)
    messages = " ".join(str(w.message) for w in record)
    assert "broken.wav" in messages and "missing.wav: file not found" in messages
    assert "2 of 4 files could not be embedded" in messages
    assert np.isnan(emb[[1, 3]]).all() and np.isfinite(emb[[0, 2]]).all()
    assert [p for p, _ in enc.failures] == [str(broken), str(missing)]
    good = enc.embed_audio([esc_paths[0], esc_paths[1]], cache_dir=False)
    np.testing.assert_allclose(emb[[0, 2]], good, atol=1e-6)


def test_silent_clip_is_reported_not_nan(enc, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(48000, np.float32), 48000)
    with pytest.warns(EmbeddingWarning, match="silence.wav: silent"):
        emb = enc.embed_audio([path], cache_dir=False)
    assert np.isfinite(emb).all()
    assert enc.problems == [(str(path), "silent")] and enc.failures == []


def test_two_runs_are_bit_identical(enc, esc_paths):
    a = enc.embed_audio(esc_paths, batch_size=4, cache_dir=False)
    b = enc.embed_audio(esc_paths, batch_size=4, cache_dir=False)
    np.testing.assert_array_equal(a, b)


def test_worker_processes_give_the_same_result(tiny_clap, esc_paths, tmp_path, default_precision):
    in_process = load_clap(tiny_clap, precision=default_precision, cache_dir=False, num_workers=0)
    with_workers = load_clap(tiny_clap, precision=default_precision, cache_dir=False, num_workers=2)
    np.testing.assert_array_equal(
        in_process.embed_audio(esc_paths, batch_size=4, cache_dir=False),
        with_workers.embed_audio(esc_paths, batch_size=4, cache_dir=False),
    )


def test_batched_equals_one_by_one(enc, esc_paths, min_cosine_to_fp32):
    batched = enc.embed_audio(esc_paths, batch_size=8, cache_dir=False)
    single = np.concatenate([enc.embed_audio([p], cache_dir=False) for p in esc_paths])
    assert cosine_rows(batched, single).min() > min_cosine_to_fp32(enc.precision)


def _long_clip(path, seconds=25.0, sr=44100):
    t = np.arange(int(seconds * sr)) / sr
    x = np.sin(2 * np.pi * (300 + 40 * t) * t) * (0.3 + 0.2 * np.sin(2 * np.pi * 0.1 * t))
    sf.write(path, x.astype(np.float32), sr)
    return path


def test_long_clips_average_consecutive_windows(tiny_clap, tmp_path, default_precision):
    path = _long_clip(tmp_path / "long.wav")
    from clap_helpers.data.audio import load_audio

    x = load_audio(path)
    windows = [x[i : i + 480000] for i in range(0, x.size, 480000)]  # 10 s, 10 s, 5 s
    assert [w.size for w in windows] == [480000, 480000, 240000]
    enc = load_clap(tiny_clap, precision=default_precision, cache_dir=False, num_workers=0)
    atol = 1e-5 if default_precision == "fp32" else 1e-3
    per_window = enc.embed_waveforms(windows)
    expected = per_window.mean(axis=0)
    expected /= np.linalg.norm(expected)
    averaged = enc.embed_audio([path], cache_dir=False)[0]
    np.testing.assert_allclose(averaged, expected, atol=atol)
    first = load_clap(
        tiny_clap, precision=default_precision, window="first", cache_dir=False, num_workers=0
    )
    np.testing.assert_allclose(
        first.embed_audio([path], cache_dir=False)[0], per_window[0], atol=atol
    )
    # the same file twice: no random crop anywhere
    np.testing.assert_array_equal(
        enc.embed_audio([path], cache_dir=False), enc.embed_audio([path], cache_dir=False)
    )


def test_fused_model_is_deterministic(
    tiny_clap_fused, tmp_path, esc_paths, default_precision, min_cosine_to_fp32
):
    long_path = _long_clip(tmp_path / "long.wav")
    for window in ("average", "fusion"):
        enc = load_clap(
            tiny_clap_fused,
            precision=default_precision,
            window=window,
            cache_dir=False,
            num_workers=0,
        )
        assert enc.fused
        a = enc.embed_audio([esc_paths[0], long_path], cache_dir=False)
        b = enc.embed_audio([esc_paths[0], long_path], cache_dir=False)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        # a short clip alone gets is_longer=False (the extractor would pick it at random)
        alone = enc.embed_audio([esc_paths[0]], cache_dir=False)
        assert cosine_rows(alone, a[:1])[0] > min_cosine_to_fp32(default_precision)


def test_fusion_window_needs_a_fused_model(tiny_clap):
    with pytest.raises(ValueError, match="fused checkpoint"):
        load_clap(tiny_clap, window="fusion")


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    assert devices.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert devices.resolve_precision("auto", cpu) == "bf16"
    assert devices.resolve_precision("auto", cpu, training=True) == "fp32"
    assert devices.resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(ValueError, match="CUDA"):
        devices.resolve_precision("fp16", cpu, training=True)
    with pytest.raises(ValueError, match="precision"):
        devices.resolve_precision("int8", cpu)
    assert devices.resolve_device("auto").type in ("cuda", "mps", "cpu")


def test_bf16_stays_close_to_fp32(tiny_clap, esc_paths):
    enc = load_clap(tiny_clap, precision="fp32", cache_dir=False, num_workers=0)
    assert enc.precision_check("bf16") > 0.99
    low = load_clap(tiny_clap, precision="bf16", cache_dir=False, num_workers=0)
    assert low.precision == "bf16"
    ref = enc.embed_audio(esc_paths[:4], cache_dir=False)
    assert cosine_rows(low.embed_audio(esc_paths[:4], cache_dir=False), ref).min() > 0.99


# -- cache ------------------------------------------------------------------------------------


class CountingForward:
    """Wraps an encoder's audio tower call (``enc._tower_forward = CountingForward(enc)``) and
    counts the windows it embeds."""

    def __init__(self, enc, fail_after: int | None = None):
        self.enc, self.inner, self.windows, self.calls = enc, enc._tower_forward, 0, 0
        self.fail_after = fail_after

    def __call__(self, *feats):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.windows += feats[0].shape[0]
        return self.inner(*feats)


def test_cache_hit_skips_all_work(tiny_clap, esc_paths, tmp_path, default_precision):
    enc = load_clap(tiny_clap, precision=default_precision, cache_dir=tmp_path, num_workers=0)
    first = enc.embed_audio(esc_paths)
    enc._tower_forward = counter = CountingForward(enc)
    again = enc.embed_audio(esc_paths)
    assert counter.windows == 0
    np.testing.assert_array_equal(first, again)
    # a new encoder (new process, say) reads the same files
    fresh = load_clap(tiny_clap, precision=default_precision, cache_dir=tmp_path, num_workers=0)
    fresh._tower_forward = counter = CountingForward(fresh)
    np.testing.assert_array_equal(fresh.embed_audio(esc_paths), first)
    assert counter.windows == 0


def test_cache_invalidated_by_file_change_and_settings(tiny_clap, esc_paths, tmp_path):
    paths = [shutil.copy(p, tmp_path / f"{i}.wav") for i, p in enumerate(esc_paths[:3])]
    enc = load_clap(tiny_clap, precision="fp32", cache_dir=tmp_path / "cache", num_workers=0)
    before = enc.embed_audio(paths)
    # replace one file's content: only that one is recomputed, and its embedding changes
    shutil.copy(esc_paths[5], paths[1])
    enc._tower_forward = counter = CountingForward(enc)
    after = enc.embed_audio(paths)
    assert counter.windows == 1
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    assert not np.allclose(after[1], before[1])
    # another window mode or precision is another namespace
    other = load_clap(tiny_clap, window="first", precision="bf16", cache_dir=tmp_path / "cache")
    other._tower_forward = counter = CountingForward(other)
    other.embed_audio(paths, num_workers=0)
    assert counter.windows == 3


def test_interrupted_run_resumes(
    tiny_clap, esc_paths, tmp_path, default_precision, min_cosine_to_fp32
):
    p = default_precision
    enc = load_clap(tiny_clap, precision=p, cache_dir=tmp_path, num_workers=0)
    enc.cache_flush_every = 4
    enc._tower_forward = CountingForward(enc, fail_after=2)  # dies in the 3rd batch
    with pytest.raises(KeyboardInterrupt):
        enc.embed_audio(esc_paths, batch_size=4)
    resumed = load_clap(tiny_clap, precision=p, cache_dir=tmp_path, num_workers=0)
    resumed._tower_forward = counter = CountingForward(resumed)
    emb = resumed.embed_audio(esc_paths, batch_size=4)
    assert counter.windows == len(esc_paths) - 8  # the 2 finished batches came from the cache
    full = load_clap(tiny_clap, precision=p, cache_dir=False, num_workers=0)
    assert cosine_rows(emb, full.embed_audio(esc_paths, batch_size=4)).min() > min_cosine_to_fp32(p)


def test_corrupt_cache_chunk_is_recomputed(tiny_clap, esc_paths, tmp_path, default_precision):
    enc = load_clap(tiny_clap, precision=default_precision, cache_dir=tmp_path, num_workers=0)
    good = enc.embed_audio(esc_paths[:4])
    (chunk,) = list(tmp_path.rglob("chunk-*.npz"))
    data = bytearray(chunk.read_bytes())
    data[200:260] = bytes(60)  # damage the stored embeddings: the zip CRC no longer matches
    chunk.write_bytes(bytes(data))
    fresh = load_clap(tiny_clap, precision=default_precision, cache_dir=tmp_path, num_workers=0)
    fresh._tower_forward = counter = CountingForward(fresh)
    with pytest.warns(CacheWarning, match="recomputed"):
        again = fresh.embed_audio(esc_paths[:4])
    assert counter.windows == 4
    np.testing.assert_array_equal(again, good)


def test_foreign_chunk_is_rejected(tmp_path):
    a = EmbeddingStore(tmp_path, "audio", {"model": "a"}, dim=3)
    a.add(["k"], np.ones((1, 3), np.float32))
    a.flush()
    b = EmbeddingStore(tmp_path, "audio", {"model": "b"}, dim=3)
    b.dir.mkdir(parents=True)
    shutil.copy(next(a.dir.glob("chunk-*.npz")), b.dir / "chunk-copied.npz")
    with pytest.warns(CacheWarning, match="belongs to namespace"):
        found, _ = b.lookup(["k"])
    assert not found.any()
    found, rows = EmbeddingStore(tmp_path, "audio", {"model": "a"}, dim=3).lookup(["k", "x"])
    assert found.tolist() == [True, False] and np.isnan(rows[1]).all()


def test_store_never_keeps_nan_rows_and_compacts(tmp_path):
    store = EmbeddingStore(tmp_path, "audio", {"m": 1}, dim=2, flush_every=1)
    for i in range(5):
        store.add([f"k{i}"], np.full((1, 2), np.nan if i == 2 else i, np.float32))
    store.compact()
    assert len(list(store.dir.glob("chunk-*.npz"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found, rows = EmbeddingStore(tmp_path, "audio", {"m": 1}, dim=2).lookup(
            [f"k{i}" for i in range(5)]
        )
    assert found.tolist() == [True, True, False, True, True]
    assert rows[4].tolist() == [4.0, 4.0]


def test_text_cache(tiny_clap, tmp_path, default_precision):
    enc = load_clap(tiny_clap, precision=default_precision, cache_dir=tmp_path, num_workers=0)
    first = enc.embed_text(["a dog barks", "rain falls"])
    calls = []
    original = enc.model.get_text_features
    enc.model.get_text_features = lambda **kw: calls.append(1) or original(**kw)
    again = enc.embed_text(["rain falls", "a dog barks", "a new text"])
    assert len(calls) == 1  # only "a new text" went through the model
    np.testing.assert_array_equal(again[:2], first[::-1])


def test_embed_on_fixture_dataset_with_a_bad_track(
    tiny_clap, data_root, tmp_path, default_precision
):
    clips, _ = load("fma_small", data_root)
    enc = load_clap(tiny_clap, precision=default_precision, cache_dir=tmp_path, num_workers=1)
    with pytest.warns(EmbeddingWarning, match="truncated"):
        emb = enc.embed_audio(clips["path"], batch_size=4)
    assert np.isnan(emb).any(axis=1).sum() == 1 == len(enc.failures)


# -- text precision, revisions and load errors (issue 10) ----------------------------------------


def test_old_bf16_text_rows_are_not_served(tiny_clap, tmp_path):
    """Text used to run under the audio autocast and was cached under the audio precision: such
    bf16 rows must not be served now that text is always fp32."""
    low = load_clap(tiny_clap, "cpu", "bf16", cache_dir=tmp_path, num_workers=0)
    texts = ["a dog barks", "rain falls"]
    old = {"model": low.model_id, "revision": low.revision, "precision": "bf16"}
    stale = EmbeddingStore(tmp_path, "text", old, low.dim)
    stale.add([embed.text_key(t) for t in texts], np.ones((2, low.dim), np.float32))
    stale.flush()
    ref = load_clap(tiny_clap, "cpu", "fp32", cache_dir=False, num_workers=0).embed_text(texts)
    np.testing.assert_allclose(low.embed_text(texts), ref, atol=1e-6)
    assert low.text_namespace()["precision"] == "fp32"


def test_no_cache_when_load_clap_gets_cache_dir_false(tiny_clap, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAP_HELPERS_CACHE", str(tmp_path / "default"))
    enc = load_clap(tiny_clap, "cpu", "fp32", cache_dir=False, num_workers=0)
    enc.embed_text(["a dog barks"])
    assert not (tmp_path / "default").exists()


def _fake_hub_snapshot(hub, tiny_clap, commit: str):
    """Put the tiny CLAP into an HF hub cache as laion/fake-clap at ``commit``; refs/main -> it."""
    repo = hub / "models--laion--fake-clap"
    shutil.copytree(tiny_clap, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_model_revision_is_the_cached_commit(tiny_clap, tmp_path, monkeypatch):
    """transformers 5 does not set config._commit_hash: the commit comes from the snapshot path,
    so an updated checkpoint gets a new cache namespace instead of stale embeddings."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    first, second = "1" * 40, "a2" * 20
    _fake_hub_snapshot(hub, tiny_clap, first)
    enc = load_clap("laion/fake-clap", "cpu", "fp32", cache_dir=tmp_path / "c", num_workers=0)
    assert enc.revision == first
    ns_audio, ns_text = enc.audio_namespace(), enc.text_namespace()
    _fake_hub_snapshot(hub, tiny_clap, second)  # the checkpoint was updated on the hub
    new = load_clap("laion/fake-clap", "cpu", "fp32", cache_dir=tmp_path / "c", num_workers=0)
    assert new.revision == second
    assert new.audio_namespace() != ns_audio and new.text_namespace() != ns_text
    pinned = load_clap("laion/fake-clap", "cpu", "fp32", revision=first, cache_dir=False)
    assert pinned.revision == first


def test_unreachable_hub_model_names_the_fixes(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError) as info:
        load_clap("laion/not-a-cached-clap", "cpu", "fp32", cache_dir=False)
    msg = str(info.value)
    assert "\n" not in msg and info.value.__cause__ is None and info.value.__suppress_context__
    for part in ("'laion/not-a-cached-clap'", "HF_HOME", "HF_HUB_OFFLINE=1", "-p model"):
        assert part in msg


@pytest.mark.parametrize("model", ["/no/such/clap", "./no-such-clap", "~/no-such-clap", "a/b/c"])
def test_missing_model_folder_is_named(model):
    with pytest.raises(FileNotFoundError, match=f"model folder not found: {model}"):
        load_clap(model, "cpu", "fp32", cache_dir=False)


def test_model_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_clap(tmp_path, "cpu", "fp32", cache_dir=False)


def test_cuda_without_cuda_is_a_clear_error(tiny_clap, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU.*device='auto' or 'cpu'"):
        load_clap(tiny_clap, device="cuda", precision="fp32", cache_dir=False)
    with pytest.raises(ValueError, match="not a torch device"):
        devices.resolve_device("gpu0")


def test_cache_dir_that_is_a_file_fails_at_load(tiny_clap, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=f"cache_dir {blocker} is not a folder"):
        load_clap(tiny_clap, "cpu", "fp32", cache_dir=blocker)
    with pytest.raises(NotADirectoryError, match="its parent .* is a file"):
        load_clap(tiny_clap, "cpu", "fp32", cache_dir=blocker / "sub")


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one_is_refused(enc, esc_paths, batch_size):
    with pytest.raises(ValueError, match="batch_size must be"):
        enc.embed_audio(esc_paths[:2], batch_size=batch_size, cache_dir=False)
    with pytest.raises(ValueError, match="batch_size must be"):
        enc.embed_text(["a dog"], batch_size=batch_size, cache_dir=False)
    with pytest.raises(ValueError, match="batch_size must be"):
        enc.embed_waveforms([np.zeros(48000, np.float32)], batch_size=batch_size)
