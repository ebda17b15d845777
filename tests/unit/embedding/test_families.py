"""Tests for clap_helpers.embedding.families: detection, the registry, and the encoder running a
family that is not a transformers model (own rate, window, checkpoint file and loader options)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_helpers.embedding.families import (
    FAMILIES,
    ModelFamily,
    UnknownFamilyError,
    detect_family,
    family_names,
    register_family,
)
from clap_helpers.embedding.loading import load_clap


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
    with pytest.raises(
        UnknownFamilyError, match="'wav2vec2'.*known families: .*laion-clap, .*pe-audio"
    ):
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


# ------------------------------------------------------------------------------ LAION-CLAP
def test_fused_checkpoints_use_fusion_by_default_and_say_so(tiny_clap, tiny_clap_fused):
    from clap_helpers.embedding import loading

    loading._SAID_FUSION.discard(str(tiny_clap_fused))
    with pytest.warns(UserWarning, match="fused checkpoint.*fusion branch.*window='average'"):
        fused = load_clap(tiny_clap_fused, "cpu", "fp32", cache_dir=False)
    assert fused.window == "fusion" and "window=fusion" in repr(fused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per checkpoint, and never for unfused ones
        again = load_clap(tiny_clap_fused, "cpu", "fp32", cache_dir=False)
        unfused = load_clap(tiny_clap, "cpu", "fp32", cache_dir=False)
        chosen = load_clap(tiny_clap_fused, "cpu", "fp32", window="average", cache_dir=False)
    assert again.window == "fusion" and unfused.window == "average"
    assert chosen.window == "average"
    assert fused.audio_namespace()["window"] == "fusion"  # the cache key holds the choice
    # deterministic: a 25 s clip embeds identically twice
    x = np.random.default_rng(0).standard_normal(25 * 48_000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(fused.embed_waveforms([x]), again.embed_waveforms([x]))


def test_tiny_fixture_has_the_real_parameter_files(tiny_clap, tiny_clap_fused):
    from transformers import ClapFeatureExtractor

    from clap_helpers.embedding.families.laion import CHECKPOINTS, FRONTEND

    for path, truncation in ((tiny_clap, "rand_trunc"), (tiny_clap_fused, "fusion")):
        fe = ClapFeatureExtractor.from_pretrained(path)
        assert {k: getattr(fe, k) for k in FRONTEND} == FRONTEND
        assert fe.truncation == truncation
        fam = load_clap(path, "cpu", "fp32", cache_dir=False).family
        assert fam.frontend.f_min == 50.0 and fam.namespace()["f_min"] == 50.0
        assert "f_min=50 Hz" in repr(fam)
    assert {c["truncation"] for c in CHECKPOINTS.values()} == {"rand_trunc", "fusion"}
    assert len(CHECKPOINTS) == 5


def test_display_and_cnn_front_ends_use_the_checkpoint_f_min():
    from clap_helpers.embedding.frontend import CHECKPOINT_F_MIN, LogMelFrontend
    from clap_helpers.plots.audio import compute_logmel
    from clap_helpers.supervised.features import make_frontend

    assert make_frontend().f_min == CHECKPOINT_F_MIN == 50.0
    x = np.random.default_rng(1).standard_normal(48_000).astype(np.float32) * 0.1
    shown = compute_logmel(x, 48_000)
    ref = LogMelFrontend(f_min=50.0).log_mel(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(shown, ref, atol=1e-5)
    assert not np.allclose(compute_logmel(x, 48_000, fmin=0), shown, atol=1e-3)
    model_view = compute_logmel(x, 48_000, model_window=True)
    np.testing.assert_allclose(
        model_view, LogMelFrontend(f_min=50.0)(torch.from_numpy(x)[None])[0][0, 0].numpy()
    )
