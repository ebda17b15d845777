"""Tests for clap_helpers.embedding.families.pe_audio: detection, the long-clip policy (10 s
windows averaged, configurable), batch independence and the front-end's padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clap_helpers.embedding.families import detect_family
from clap_helpers.embedding.families.pe_audio import HOP, _pad_to_hop
from clap_helpers.embedding.loading import load_clap

SR = 48_000


@pytest.fixture(scope="module")
def pe(tiny_pe_audio):
    return load_clap(tiny_pe_audio, "cpu", "fp32", cache_dir=False, num_workers=0)


def _sound(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = rng.uniform(200, 4000)
    tone = 0.3 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_pe_audio_checkpoints_are_recognised(tiny_pe_audio, pe):
    assert detect_family(str(tiny_pe_audio)) == "pe-audio"
    assert pe.family.name == "pe-audio" and pe.dim == 64 and pe.sample_rate == SR
    assert pe.window == "average" and pe.family.window_samples == 10 * SR
    assert "10 s averaged" in repr(pe.family)
    ns = pe.audio_namespace()
    assert ns["family"] == "pe-audio" and ns["frontend"]["window_s"] == 10.0
    assert pe.logit_scale == pytest.approx(10.0)


def test_long_clip_is_the_mean_of_consecutive_10s_windows(pe):
    x = np.concatenate([_sound(10, 1), _sound(10, 2), _sound(5, 3)])  # 25 s
    whole = pe.embed_waveforms([x])[0]
    parts = pe.embed_waveforms([x[: 10 * SR], x[10 * SR : 20 * SR], x[20 * SR :]])
    expected = parts.sum(0) / np.linalg.norm(parts.sum(0))
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    assert not np.allclose(whole, parts[0], atol=1e-3)
    # a tail shorter than 1 s after a full window is dropped
    y = np.concatenate([x[: 10 * SR], _sound(0.5, 4)])
    np.testing.assert_allclose(pe.embed_waveforms([y])[0], parts[0], atol=1e-5)


def test_window_first_and_window_seconds(tiny_pe_audio, pe):
    x = np.concatenate([_sound(10, 5), _sound(10, 6)])
    first = load_clap(tiny_pe_audio, "cpu", "fp32", window="first", cache_dir=False)
    np.testing.assert_allclose(
        first.embed_waveforms([x])[0], pe.embed_waveforms([x[: 10 * SR]])[0], atol=1e-5
    )
    long = load_clap(tiny_pe_audio, "cpu", "fp32", window_seconds=30, cache_dir=False)
    assert long.family.window_samples == 30 * SR
    assert long.audio_namespace() != pe.audio_namespace()
    native = long.embed_waveforms([x])[0]  # one 20 s pass, not two windows
    assert not np.allclose(native, pe.embed_waveforms([x])[0], atol=1e-3)
    with pytest.raises(ValueError, match="fusion"):
        load_clap(tiny_pe_audio, "cpu", "fp32", window="fusion", cache_dir=False)


def test_a_clip_embeds_the_same_alone_and_in_a_batch_of_other_lengths(pe):
    clips = [_sound(s, i) for i, s in enumerate((3.0, 0.7, 4.01, 3.0, 0.02))]
    together = pe.embed_waveforms(clips, batch_size=8)
    alone = np.concatenate([pe.embed_waveforms([c]) for c in clips])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert (together @ together.T)[np.triu_indices(5, 1)].min() < 0.99


def test_front_end_reflect_pads_to_the_hop_like_the_extractor(pe):
    from transformers import PeAudioFeatureExtractor

    fe = PeAudioFeatureExtractor()
    for n in (HOP, HOP + 7, 3 * HOP - 1, 500):
        x = torch.from_numpy(_sound(n / SR, n))
        ref = fe(x.numpy(), sampling_rate=SR, return_tensors="pt")["input_values"][0, 0]
        np.testing.assert_allclose(_pad_to_hop(x, HOP).numpy(), ref.numpy(), atol=0)
    values, mask = pe.family.features(torch.zeros(2, HOP + 10), torch.tensor([HOP + 10, 100]))
    assert values.shape == (2, 1, 2 * HOP) and mask.sum(1).tolist() == [2 * HOP, HOP]


def test_embed_audio_files_with_cache_and_bad_file(tiny_pe_audio, data_root, tmp_path):
    from clap_helpers.data.loaders import load

    clips, _ = load("esc50", data_root)
    paths = list(clips["path"][:4])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    enc = load_clap(tiny_pe_audio, "cpu", "fp32", cache_dir=tmp_path / "c", num_workers=0)
    with pytest.warns(UserWarning, match="bad.wav"):
        emb = enc.embed_audio([*paths, bad], progress=False)
    assert np.isnan(emb[-1]).all() and np.allclose(np.linalg.norm(emb[:-1], axis=1), 1, atol=1e-5)
    again = load_clap(tiny_pe_audio, "cpu", "fp32", cache_dir=tmp_path / "c", num_workers=0)
    again._audio_forward = None  # a cache hit never calls the model
    np.testing.assert_array_equal(again.embed_audio(paths, progress=False), emb[:-1])


def test_loads_from_the_offline_hub_cache(tiny_pe_audio, tmp_path, monkeypatch):
    """A hub id of the PE family in the HF cache loads offline like the LAION ones."""
    import shutil

    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    commit = "c" * 40
    repo = hub / "models--facebook--fake-pe"
    shutil.copytree(tiny_pe_audio, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    enc = load_clap("facebook/fake-pe", "cpu", "fp32", cache_dir=False)
    assert enc.family.name == "pe-audio" and enc.revision == commit
    assert enc.embed_text(["a dog barking"]).shape == (1, 64)


def test_reduced_precision_audio_is_checked_like_laion(pe, min_cosine_to_fp32):
    """precision='auto' checks the family's audio tower on the probe clip, as for LAION-CLAP."""
    assert pe.precision_check("bf16") > min_cosine_to_fp32("bf16")


# ---- PE-AV (pe_audio_video) checkpoints: the audio-text part without the video tower ----------
@pytest.fixture(scope="module")
def tiny_pe_av(tmp_path_factory):
    """The weights of ``tiny_pe_audio`` (same seed) saved in the PE-AV layout, one file."""
    from clap_helpers.devtools.fixtures.tiny_pe_audio import make_tiny_pe_audio

    return make_tiny_pe_audio(tmp_path_factory.mktemp("pe-av") / "m", layout="pe_audio_video")


@pytest.fixture
def no_timm(monkeypatch):
    """``import timm`` fails, as on this machine: the loader must not need it."""
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)


def _same_embeddings(a, b):
    x = [_sound(3.0, 11), _sound(0.9, 12)]
    texts = ["a dog barking", "rain on a roof"]
    for ea, eb in (
        (a.embed_waveforms(x), b.embed_waveforms(x)),
        (a.embed_text(texts), b.embed_text(texts)),
    ):
        np.testing.assert_allclose(ea, eb, atol=1e-6)
        assert (ea * eb).sum(1).min() > 0.9999


@pytest.mark.parametrize("shards", [1, 2])
def test_pe_av_checkpoint_loads_its_audio_text_part_without_timm(
    tiny_pe_audio, pe, tmp_path, no_timm, shards
):
    import json

    from safetensors import safe_open
    from transformers import PeAudioModel

    from clap_helpers.devtools.fixtures.tiny_pe_audio import make_tiny_pe_audio

    path = make_tiny_pe_audio(tmp_path / "av", layout="pe_audio_video", shards=shards)
    assert json.loads((path / "config.json").read_text())["model_type"] == "pe_audio_video"
    files = sorted(path.glob("*.safetensors"))
    assert len(files) == shards and (
        (path / "model.safetensors.index.json").exists() == (shards > 1)
    )
    keys = set()
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            keys |= set(st.keys())
    assert any(k.startswith("video_model.") for k in keys)  # a video tower the loader must skip
    assert any(k.startswith("text_model.") for k in keys)
    assert not any(k.startswith("audio_model.text_model.") for k in keys)  # tied copy dropped
    assert detect_family(str(path)) == "pe-audio"
    av = load_clap(path, "cpu", "fp32", cache_dir=False, num_workers=0)
    assert type(av.family.model) is PeAudioModel and av.dim == 64
    plain = PeAudioModel.from_pretrained(tiny_pe_audio).state_dict()
    loaded = av.family.model.state_dict()
    assert loaded.keys() == plain.keys()
    assert all(torch.equal(loaded[k], plain[k]) for k in plain)
    assert av.logit_scale == pytest.approx(pe.logit_scale)
    _same_embeddings(av, pe)


@pytest.mark.parametrize("shards", [1, 2])
def test_pe_av_loads_from_the_offline_hub_cache(pe, tmp_path, monkeypatch, no_timm, shards):
    import shutil

    from huggingface_hub import constants

    from clap_helpers.devtools.fixtures.tiny_pe_audio import make_tiny_pe_audio

    tiny_pe_av = make_tiny_pe_audio(tmp_path / "av", layout="pe_audio_video", shards=shards)

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    commit = "d" * 40
    repo = hub / "models--facebook--fake-pe-av"
    shutil.copytree(tiny_pe_av, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    av = load_clap("facebook/fake-pe-av", "cpu", "fp32", cache_dir=False, num_workers=0)
    assert av.family.name == "pe-audio" and av.revision == commit
    _same_embeddings(av, pe)
    with pytest.raises(OSError, match="not in the Hugging Face cache"):
        load_clap("facebook/not-cached-pe-av", "cpu", "fp32", cache_dir=False)


def _rewrite(src, dest, edit):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    tensors = edit(load_file(str(dest / "model.safetensors")))
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_pe_av_key_layouts_and_errors(tiny_pe_av, pe, tmp_path, no_timm):
    # the text tower stored under its tied name audio_model.text_model.* loads the same
    def untie(t):
        return {("audio_model." + k if k.startswith("text_model.") else k): v for k, v in t.items()}

    untied = _rewrite(tiny_pe_av, tmp_path / "untied", untie)
    _same_embeddings(load_clap(untied, "cpu", "fp32", cache_dir=False, num_workers=0), pe)
    # a missing weight of the audio-text part is an error naming it, not a random init
    gone = "audio_model.audio_head.proj.weight"
    lacking = _rewrite(
        tiny_pe_av, tmp_path / "lacking", lambda t: {k: v for k, v in t.items() if k != gone}
    )
    with pytest.raises(ValueError, match=f"lacks 1 weight.*{gone}"):
        load_clap(lacking, "cpu", "fp32", cache_dir=False)
    # an audio_model.* weight PeAudioModel has no place for is reported
    extra = _rewrite(
        tiny_pe_av, tmp_path / "extra", lambda t: {**t, "audio_model.new.weight": torch.ones(2)}
    )
    with pytest.warns(UserWarning, match="audio_model.new.weight"):
        load_clap(extra, "cpu", "fp32", cache_dir=False)
