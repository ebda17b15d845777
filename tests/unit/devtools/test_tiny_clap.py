"""Tests of the tiny random CLAP checkpoint (clap_helpers/fixtures/tiny_clap.py)."""

from __future__ import annotations

import itertools
import json
import shutil
import time

import numpy as np
import pytest
import torch

from clap_helpers.devtools.fixtures import tiny_clap, tiny_tokenizer
from clap_helpers.devtools.fixtures.tiny_clap import PROJECTION_DIM, make_tiny_clap

SR = 48_000
PROMPTS = [
    "This is a sound of dog.",
    "This is a sound of rain.",
    "This is a sound of church bells.",
    "This is a sound of vacuum cleaner.",
    "This is a sound of laughing.",
    "This is a sound of helicopter.",
    "This is a sound of keyboard typing.",
    "This is a sound of sea waves.",
    "This is a sound of crying baby.",
    "This is a sound of clock tick.",
    "This is a Rock song.",
    "This is a Hip-Hop song.",
]


def _sounds(seconds: float = 5.0) -> dict[str, np.ndarray]:
    """Clearly different synthetic sounds, each with a faint noise floor (-60 dBFS)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR

    def floor():
        return 1e-3 * rng.standard_normal(t.size)

    clicks = np.zeros_like(t)
    clicks[:: SR // 10] = 1.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    chirp = 0.5 * np.sin(2 * np.pi * (200 * t + (8000 - 200) / (2 * seconds) * t**2))
    out = {
        "tone440": tone + floor(),
        "tone3k": 0.5 * np.sin(2 * np.pi * 3000 * t) + floor(),
        "noise": 0.1 * rng.standard_normal(t.size),
        "clicks": clicks + floor(),
        "chirp": chirp + floor(),
        # near-duplicates: the same sound with another realisation of the faint noise
        "tone440_again": tone + floor(),
        "chirp_again": chirp + floor(),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def _cos(x: torch.Tensor) -> torch.Tensor:
    return x @ x.T


@pytest.fixture(scope="module")
def unfused(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    t0 = time.perf_counter()
    path = make_tiny_clap(root / "tiny-clap")
    print(f"tiny CLAP built in {time.perf_counter() - t0:.2f} s")
    return path


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("tiny") / "tiny-clap-fused", fused=True)


@pytest.fixture(scope="module")
def loaded(unfused):
    from transformers import ClapModel, ClapProcessor

    t0 = time.perf_counter()
    model, info = ClapModel.from_pretrained(unfused, output_loading_info=True)
    processor = ClapProcessor.from_pretrained(unfused)
    print(f"tiny CLAP loaded in {time.perf_counter() - t0:.2f} s")
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    return model.eval(), processor


@pytest.fixture(scope="module")
def audio_embeddings(loaded):
    model, processor = loaded
    sounds = _sounds()
    inputs = processor(audio=list(sounds.values()), sampling_rate=SR, return_tensors="pt")
    assert inputs["input_features"].shape == (len(sounds), 1, 1001, 64)
    with torch.no_grad():
        out = model.get_audio_features(**inputs)
    return list(sounds), out.pooler_output, inputs


def test_folder_layout(unfused):
    names = {p.name for p in unfused.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "tiny_clap.json"} <= names
    marker = json.loads((unfused / "tiny_clap.json").read_text())
    assert marker["args"] == {"recipe": tiny_clap.RECIPE_VERSION, "fused": False, "seed": 0}
    # no temporary build folders left beside it
    assert [p.name for p in unfused.parent.iterdir()] == [unfused.name]


def test_config_matches_real_front_end(unfused, fused):
    from transformers import ClapConfig, ClapFeatureExtractor

    for path, is_fused in ((unfused, False), (fused, True)):
        cfg = ClapConfig.from_pretrained(path)
        assert cfg.audio_config.num_mel_bins == 64
        assert cfg.audio_config.spec_size == 256
        assert cfg.audio_config.enable_fusion is is_fused
        assert cfg.projection_dim == PROJECTION_DIM
        assert cfg.text_config.pad_token_id == 1
        fe = ClapFeatureExtractor.from_pretrained(path)
        assert (fe.sampling_rate, fe.feature_size, fe.fft_window_size, fe.hop_length) == (
            48_000,
            64,
            1024,
            480,
        )
        assert (fe.max_length_s, fe.frequency_min, fe.frequency_max) == (10, 50, 14_000)
        assert fe.padding == "repeatpad"
        assert fe.truncation == ("fusion" if is_fused else "rand_trunc")


def test_tokenizer_loads_and_tokenises(unfused, loaded):
    from transformers import AutoTokenizer

    _, processor = loaded
    tok = AutoTokenizer.from_pretrained(unfused)
    assert [tok.convert_tokens_to_ids(s) for s in tiny_tokenizer.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    texts = [*PROMPTS, "An unseen word: zygomorphic flügelhorn, 猫 and 🐶!"]
    ids = [tok(t)["input_ids"] for t in texts]
    assert ids == [processor.tokenizer(t)["input_ids"] for t in texts]
    for text, seq in zip(texts, ids, strict=True):
        assert seq[0] == 0 and seq[-1] == 2 and len(seq) > 3
        assert 3 not in seq  # byte-level: never <unk>
        assert tok.decode(seq, skip_special_tokens=True) == text
    assert len({tuple(s) for s in ids}) == len(ids)
    # corpus words are merged into few tokens
    assert len(tok("This is a sound of dog.")["input_ids"]) <= 10


def test_tokenizer_training_is_deterministic():
    first = tiny_clap.train_tiny_tokenizer()
    for _ in range(2):
        assert tiny_clap.train_tiny_tokenizer() == first


def test_text_embeddings_spread(loaded):
    model, processor = loaded
    inputs = processor(text=PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = model.get_text_features(**inputs).pooler_output
        single = model.get_text_features(**processor(text=PROMPTS[:1], return_tensors="pt"))
    assert emb.shape == (len(PROMPTS), PROJECTION_DIM)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(PROMPTS)))
    # padding does not change an embedding
    torch.testing.assert_close(single.pooler_output[0], emb[0], atol=1e-5, rtol=1e-4)
    sim = _cos(emb)
    off = sim[~torch.eye(len(PROMPTS), dtype=torch.bool)]
    print(f"text cosines: max {off.max():.3f} mean {off.mean():.3f}")
    assert off.max() < 0.85


def test_audio_embeddings_spread_and_smooth(audio_embeddings):
    names, emb, _ = audio_embeddings
    assert emb.shape == (len(names), PROJECTION_DIM)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(names)))
    sim = _cos(emb)
    idx = {n: i for i, n in enumerate(names)}
    distinct = ["tone440", "tone3k", "noise", "clicks", "chirp"]
    pairs = {(a, b): sim[idx[a], idx[b]].item() for a, b in itertools.combinations(distinct, 2)}
    print("audio cosines:", {f"{a}/{b}": round(v, 3) for (a, b), v in pairs.items()})
    assert max(pairs.values()) < 0.95
    assert np.mean(list(pairs.values())) < 0.6
    for a in ("tone440", "chirp"):
        near = sim[idx[a], idx[f"{a}_again"]].item()
        print(f"audio cosine {a} / near-duplicate: {near:.4f}")
        assert near > 0.99


def test_bf16_autocast_is_finite(loaded, audio_embeddings):
    model, processor = loaded
    _, emb, inputs = audio_embeddings
    features, emb = inputs["input_features"][:3], emb[:3]
    text = processor(text=PROMPTS[:4], padding=True, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = model.get_audio_features(features).pooler_output.float()
        t = model.get_text_features(**text).pooler_output.float()
        logits = model(**text, input_features=features).logits_per_audio
    assert torch.isfinite(a).all() and torch.isfinite(t).all() and torch.isfinite(logits).all()
    assert torch.nn.functional.cosine_similarity(a, emb).min() > 0.98


def test_logit_scale_is_clip_default(loaded):
    model, _ = loaded
    assert model.logit_scale_a.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.logit_scale_t.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_reuse_rebuild_determinism_and_refusal(tmp_path, monkeypatch, unfused):
    path = tmp_path / "m"
    shutil.copytree(unfused, path)
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns, weights.stat().st_ino

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although the folder was complete")

    with monkeypatch.context() as m:
        m.setattr(tiny_clap, "_write", fail)
        t0 = time.perf_counter()
        assert make_tiny_clap(str(path)) == path  # str accepted, returns a Path
        print(f"reuse took {1e3 * (time.perf_counter() - t0):.1f} ms")
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) == before

    (path / "tokenizer.json").unlink()  # incomplete: rebuilt, bit-identical (same seed)
    make_tiny_clap(path)
    assert weights.stat().st_ino != before[1]
    for name in sorted(p.name for p in unfused.iterdir()):
        assert (path / name).read_bytes() == (unfused / name).read_bytes(), name

    make_tiny_clap(path, seed=1)  # other arguments: rebuilt in place, other weights
    assert json.loads((path / "tiny_clap.json").read_text())["args"]["seed"] == 1
    assert weights.read_bytes() != (unfused / "model.safetensors").read_bytes()
    assert (path / "tokenizer.json").read_bytes() == (unfused / "tokenizer.json").read_bytes()

    inode = weights.stat().st_ino
    make_tiny_clap(path, seed=1, overwrite=True)  # forced rebuild
    assert weights.stat().st_ino != inode

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_tiny_clap(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "m"]


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(dest, fused, seed):
        (dest / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(tiny_clap, "_write", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_tiny_clap(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_fused_variant_loads_and_runs(fused):
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(fused).eval()
    processor = ClapProcessor.from_pretrained(fused)
    sounds = _sounds(seconds=3.0)
    clips = [sounds["tone440"], sounds["noise"], np.tile(sounds["chirp"], 4)]  # the last is 12 s
    inputs = processor(audio=clips, sampling_rate=SR, return_tensors="pt")
    assert inputs["input_features"].shape == (3, 4, 1001, 64)
    assert inputs["is_longer"].shape == (3, 1) and inputs["is_longer"][2].item()
    with torch.no_grad():
        emb = model.get_audio_features(**inputs).pooler_output
        short = torch.zeros_like(inputs["is_longer"])
        plain = model.get_audio_features(inputs["input_features"], is_longer=short).pooler_output
        text = model.get_text_features(
            **processor(text=PROMPTS[:3], padding=True, return_tensors="pt")
        )
    assert emb.shape == (3, PROJECTION_DIM) and torch.isfinite(emb).all()
    assert text.pooler_output.shape == (3, PROJECTION_DIM)
    # the fusion branch changes the embedding of a long clip, but does not scramble it
    fusion_vs_plain = torch.nn.functional.cosine_similarity(emb[2], plain[2], dim=0).item()
    print(f"fused: cosine with / without the fusion branch {fusion_vs_plain:.3f}")
    assert 0.5 < fusion_vs_plain < 0.9999
    sim = _cos(plain)
    assert sim[0, 1] < 0.95 and sim[0, 2] < 0.95 and sim[1, 2] < 0.95


def test_module_docstring_mentions_shapes():
    doc = tiny_clap.__doc__ + make_tiny_clap.__doc__
    assert "make demo" in doc and "from_pretrained" in doc and "PROJECTION_DIM" in doc
