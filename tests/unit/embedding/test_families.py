"""Tests for clap_helpers.embedding.families: detection, the registry, and the encoder running a
family that is not a transformers model (own rate, window, checkpoint file and loader options)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_helpers.embedding.encoder import load_clap
from clap_helpers.embedding.families import (
    FAMILIES,
    ModelFamily,
    UnknownFamilyError,
    detect_family,
    family_names,
    register_family,
)


class _Tower(torch.nn.Module):
    def __init__(self, dim: int, bins: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(bins, dim, generator=g))

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return spectrum @ self.proj


class ToyFamily(ModelFamily):
    """16 kHz, 0.5 s windows, a log-spectrum front-end and a random projection."""

    name = "toy"
    sample_rate = 16_000
    window_samples = 8_000
    dim = 8

    def __init__(self, model_id: str, text_model: str):
        self.model_id, self.revision, self.text_model = model_id, "toy-rev", text_model
        self.audio_tower = _Tower(self.dim, 65)
        self.seen_lengths: list[list[int]] = []

    def features(self, waveforms, lengths):
        self.seen_lengths.append(lengths.tolist())
        spec = torch.stft(waveforms, 128, 64, return_complex=True, window=torch.hann_window(128))
        return (spec.abs().add(1e-6).log().mean(-1),)

    def text_embeddings(self, texts):
        return torch.stack(
            [torch.randn(self.dim, generator=torch.Generator().manual_seed(len(t))) for t in texts]
        )

    @property
    def logit_scale(self) -> float:
        return 10.0

    def namespace(self) -> dict:
        return {"n_fft": 128, "text_model": self.text_model}


@pytest.fixture
def toy_family():
    loaded = {}

    def loader(model_id, *, device, revision=None, text_model="none"):
        loaded["kwargs"] = {"text_model": text_model, "revision": revision}
        return ToyFamily(model_id, text_model)

    register_family("toy", loader, detect=lambda mid, config: str(mid).endswith(".toy"))
    yield loaded
    del FAMILIES["toy"]


def test_laion_checkpoints_are_recognised_by_model_type(tiny_clap, tiny_clap_fused):
    assert detect_family(str(tiny_clap)) == "laion-clap"
    assert detect_family(str(tiny_clap_fused)) == "laion-clap"
    assert "laion-clap" in family_names()


def test_unknown_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(UnknownFamilyError, match="'wav2vec2'.*known families: laion-clap"):
        load_clap(tmp_path, "cpu", "fp32", cache_dir=False)
    with pytest.raises(UnknownFamilyError, match="unknown model family 'nope'"):
        load_clap(tmp_path, "cpu", "fp32", family="nope", cache_dir=False)


def test_a_checkpoint_file_reaches_its_family_with_loader_options(toy_family, tmp_path):
    ckpt = tmp_path / "weights.toy"
    ckpt.write_bytes(b"not really weights")
    enc = load_clap(ckpt, "cpu", "fp32", text_model="tiny-gpt", cache_dir=tmp_path / "c")
    assert toy_family["kwargs"] == {"text_model": "tiny-gpt", "revision": None}
    assert enc.family.name == "toy" and enc.dim == 8 and enc.sample_rate == 16_000
    ns = enc.audio_namespace()
    assert ns["family"] == "toy" and ns["frontend"] == {"n_fft": 128, "text_model": "tiny-gpt"}
    assert enc.text_namespace()["family"] == "toy"
    with pytest.raises(AttributeError, match="the toy family has no 'frontend'"):
        _ = enc.frontend
    # explicit family: no detection needed (a file name no detector claims)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    assert load_clap(other, "cpu", "fp32", family="toy", cache_dir=False).family.name == "toy"
    with pytest.raises(UnknownFamilyError, match="no config.json model_type"):
        load_clap(other, "cpu", "fp32", cache_dir=False)


def test_encoder_decodes_at_the_family_rate_and_windows_by_its_length(toy_family, tmp_path):
    """A 1.2 s file at 44.1 kHz reaches a 16 kHz family with 0.5 s windows as two consecutive
    full windows (the 0.2 s tail is shorter than the minimum tail, 1 s or a window, and dropped)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "a.wav"
    sf.write(path, 0.1 * rng.standard_normal(int(1.2 * 44_100)).astype(np.float32), 44_100)
    ckpt = tmp_path / "w.toy"
    ckpt.write_bytes(b"x")
    enc = load_clap(ckpt, "cpu", "fp32", cache_dir=False, num_workers=0)
    emb = enc.embed_audio([path], progress=False)
    assert emb.shape == (1, 8) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-5)
    assert [n for batch in enc.family.seen_lengths for n in batch] == [8_000, 8_000]
    text = enc.embed_text(["a", "bb"])
    assert text.shape == (2, 8) and np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
