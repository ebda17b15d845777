"""Tests for clap_helpers.embedding.frontend: numerical match with transformers' ClapFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor
from transformers.audio_utils import window_function

from clap_helpers.embedding.frontend import (
    FrontendOutput,
    LogMelFrontend,
    batch_from_list,
    fusion_chunk_starts,
    hann_window,
    mel_filter_bank,
    pad_or_repeat,
    split_windows,
)

SR = 48_000
N = 480_000
TOL_DB = 1e-3  # float32 vs the float64 extractor, broadband audio (observed <= 2e-4 here)
TOL_DB_F64 = 1e-4  # stft_dtype=float64, any audio (observed ~8e-6: float32 output rounding)
LENGTHS_S = (0.5, 3.0, 5.0, 7.3, 10.0)


@pytest.fixture(scope="module", params=["rand_trunc", "fusion"])
def trunc(request):
    return request.param


@pytest.fixture(scope="module")
def extractors():
    return {t: ClapFeatureExtractor(truncation=t) for t in ("rand_trunc", "fusion")}


def _noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    """Broadband test audio: white noise plus a slow tone, amplitude ``level``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    x = level * (rng.standard_normal(n) + 0.5 * np.sin(2 * np.pi * (220 + 30 * seed) * t))
    return x.astype(np.float32)


def _tone(seconds: float) -> np.ndarray:
    """Pure chirp + sine: a huge dynamic range within each frame (worst case for float32)."""
    t = np.arange(int(round(seconds * SR))) / SR
    x = 0.3 * np.sin(2 * np.pi * (100 * t + 400 * t**2)) + 0.2 * np.sin(2 * np.pi * 3000 * t)
    return x.astype(np.float32)


def _reference(fe, clips, trunc, padding="repeatpad"):
    out = fe(clips, sampling_rate=SR, return_tensors="np", truncation=trunc, padding=padding)
    return out["input_features"], out["is_longer"]


def _ours(frontend, clips):
    waveforms, lengths = batch_from_list(clips)
    out = frontend(waveforms, lengths)
    return out.input_features.numpy(), out.is_longer.numpy()


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def test_window_and_filter_banks_equal_transformers(extractors):
    np.testing.assert_allclose(hann_window(1024), window_function(1024, "hann"), rtol=0, atol=1e-15)
    slaney = mel_filter_bank(513, 64, 0.0, 14_000.0, SR, scale="slaney", slaney_norm=True)
    htk = mel_filter_bank(513, 64, 0.0, 14_000.0, SR, scale="htk", slaney_norm=False)
    fe = extractors["fusion"]
    np.testing.assert_allclose(slaney, fe.mel_filters_slaney, rtol=1e-12, atol=0)
    np.testing.assert_allclose(htk, fe.mel_filters, rtol=1e-12, atol=0)
    # Non-default edges (a config with frequency_min=50) as well.
    ref = ClapFeatureExtractor(frequency_min=50, frequency_max=12_000).mel_filters_slaney
    ours = mel_filter_bank(513, 64, 50.0, 12_000.0, SR)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
    # The buffer keeps exactly the bins with non-zero weight.
    frontend = LogMelFrontend()
    assert frontend.mel_fb.shape == (299, 64) and frontend.mel_fb.dtype == torch.float32
    assert not slaney[299:].any() and slaney[298].any()


@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_pad_or_repeat_semantics(padding):
    m = 10
    clips = [np.arange(1, n + 1, dtype=np.float32) for n in (3, 4, 10, 1, 13)]
    waveforms, lengths = batch_from_list(clips)
    out = pad_or_repeat(waveforms, lengths, m, padding).numpy()
    for clip, row in zip(clips, out, strict=True):
        n = len(clip)
        if n > m:  # centred crop
            expected = clip[(n - m) // 2 : (n - m) // 2 + m]
        elif padding == "repeatpad":  # tile N // L times, zero-pad
            expected = np.pad(np.tile(clip, m // n), (0, m - (m // n) * n))
        elif padding == "repeat":
            expected = np.tile(clip, m // n + 1)[:m]
        else:
            expected = np.pad(clip, (0, m - n))
        np.testing.assert_array_equal(row, expected)


def test_fusion_chunk_starts_are_middles_of_thirds():
    for total in (1002, 1003, 1004, 1005, 1010, 1500, 2999):
        parts = np.array_split(np.arange(total - 1001 + 1), 3)
        expected = tuple(int(p[(len(p) - 1) // 2]) if len(p) else 0 for p in parts)
        assert fusion_chunk_starts(total, 1001) == expected
    assert fusion_chunk_starts(1002, 1001) == (0, 1, 0)  # empty last third -> 0, as extractor
    with pytest.raises(ValueError):
        fusion_chunk_starts(1000, 1001)


def test_split_windows():
    x = torch.arange(25 * SR // 10, dtype=torch.float32)  # 2.5 s
    w, n = split_windows(x, window=SR, min_last=SR // 2)
    assert w.shape == (3, SR) and n.tolist() == [SR, SR, SR // 2]
    assert torch.equal(w[2, : SR // 2], x[2 * SR :]) and not w[2, SR // 2 :].any()
    w, n = split_windows(x, window=SR, min_last=SR)  # 0.5 s tail dropped
    assert n.tolist() == [SR, SR]
    w, n = split_windows(x[:100], window=SR)  # the only window is always kept
    assert w.shape == (1, SR) and n.tolist() == [100]
    w, n = split_windows(x, window=SR, hop=SR // 2, min_last=SR // 2)  # last full one ends at T
    assert n.tolist() == [SR, SR, SR, SR]
    w, n = split_windows(torch.randn(27 * SR // 10), window=SR, hop=SR // 2, min_last=SR // 2)
    assert n.tolist() == [SR, SR, SR, SR, 7 * SR // 10]  # tail starts one hop later
    w, n = split_windows(torch.randn(2 * N), window=N)  # exact multiple: no empty tail
    assert n.tolist() == [N, N]


# --------------------------------------------------------------------------------------------
# Numerical match with the extractor
# --------------------------------------------------------------------------------------------
def test_matches_extractor_mixed_batch(trunc, extractors):
    """Short (repeatpad), 10 s and mixed lengths in one zero-padded batch, broadband audio."""
    clips = [_noise(s, seed=i, level=10.0**-i) for i, s in enumerate(LENGTHS_S)]
    ref, _ = _reference(extractors[trunc], clips, trunc)
    ours, is_longer = _ours(LogMelFrontend(trunc), clips)
    assert ours.shape == ref.shape == (5, 4 if trunc == "fusion" else 1, 1001, 64)
    assert np.abs(ours - ref).max() < TOL_DB
    assert not is_longer.any()


@pytest.mark.parametrize("padding", ["repeat", "pad"])
def test_matches_extractor_other_paddings(trunc, padding, extractors):
    clips = [_noise(4.2, seed=4)]
    ref, _ = _reference(extractors[trunc], clips, trunc, padding=padding)
    ours, _ = _ours(LogMelFrontend(trunc, padding=padding), clips)
    assert np.abs(ours - ref).max() < TOL_DB


def test_pure_tones_float64_exact_float32_close(trunc, extractors):
    """Pure tones: float64 STFT matches everywhere; float32 matches the bins that carry energy."""
    clips = [_tone(7.0)]
    ref, _ = _reference(extractors[trunc], clips, trunc)
    exact, _ = _ours(LogMelFrontend(trunc, stft_dtype=torch.float64), clips)
    assert np.abs(exact - ref).max() < TOL_DB_F64
    fast, _ = _ours(LogMelFrontend(trunc), clips)
    # float32 FFT rounding noise is ~140 dB below the frame energy: bins within 60 dB of the
    # frame's loudest band agree closely, the near-silent ones (down to the -100 dB floor) less.
    near_peak = ref > ref.max(axis=-1, keepdims=True) - 60.0
    assert np.abs(fast - ref)[near_peak].max() < 1e-2
    assert np.abs(fast - ref).max() < 3.0


def test_fusion_long_clips_match_pinned_extractor(extractors, monkeypatch):
    """> 10 s in fusion mode: shrunk full-clip channel + 3 chunks, with the extractor's random
    chunk choice pinned to the middle of each third (our deterministic rule)."""
    monkeypatch.setattr(np.random, "choice", lambda a: a[(len(a) - 1) // 2])
    clips = [
        _noise(12.0, seed=1),
        _noise(2.0, seed=2),
        _noise(10.005, seed=3),  # > N samples but still 1001 frames: 4 copies, not longer
        _noise(10.01, seed=4),  # 1002 frames: the smallest "longer" clip
    ]
    ref, ref_longer = _reference(extractors["fusion"], clips, "fusion")
    for dtype, tol in ((torch.float32, TOL_DB), (torch.float64, TOL_DB_F64)):
        ours, is_longer = _ours(LogMelFrontend("fusion", stft_dtype=dtype), clips)
        assert np.abs(ours - ref).max() < tol
        assert is_longer.tolist() == ref_longer.tolist() == [[True], [False], [False], [True]]
    assert np.array_equal(ours[2, 0], ours[2, 3])  # short-ish clip: 4 identical channels


def test_rand_trunc_long_clip_is_centre_crop(extractors, monkeypatch):
    monkeypatch.setattr(np.random, "randint", lambda low, high: (high - 1) // 2)
    clips = [_noise(13.3, seed=5), _noise(3.0, seed=6)]
    ref, ref_longer = _reference(extractors["rand_trunc"], clips, "rand_trunc")
    ours, is_longer = _ours(LogMelFrontend("rand_trunc"), clips)
    assert np.abs(ours - ref).max() < TOL_DB
    assert is_longer.tolist() == ref_longer.tolist() == [[True], [False]]


def test_is_longer_is_length_based_only(extractors):
    """The extractor flags a random item when no clip is longer; the front-end never does."""
    clips = [_noise(1.0, seed=7), _noise(10.0, seed=8)]
    _, ref_longer = _reference(extractors["fusion"], clips, "fusion")
    assert ref_longer.shape == (2, 1) and ref_longer.sum() == 1  # the quirk
    out = LogMelFrontend("fusion")(*batch_from_list(clips))
    assert out.is_longer.shape == (2, 1) and out.is_longer.dtype == torch.bool
    assert not out.is_longer.any()


# --------------------------------------------------------------------------------------------
# API, determinism, devices
# --------------------------------------------------------------------------------------------
def test_shapes_dtypes_and_single_clip(trunc):
    frontend = LogMelFrontend(trunc)
    out = frontend(torch.from_numpy(_noise(2.0, seed=9)))  # (T,) -> batch of 1
    assert isinstance(out, FrontendOutput)
    feats, is_longer = out
    assert feats.shape == (1, frontend.n_channels, 1001, 64) and feats.dtype == torch.float32
    assert feats.is_contiguous() and is_longer.shape == (1, 1)
    float64_in = frontend(torch.from_numpy(_noise(2.0, seed=9)).double()[None])
    assert torch.equal(float64_in.input_features, feats)
    with pytest.raises(ValueError):
        frontend(torch.zeros(2, 100), torch.tensor([0, 100]))  # empty clip
    with pytest.raises(ValueError):
        frontend(torch.zeros(2, 100), torch.tensor([50, 101]))  # longer than the batch
    with pytest.raises(ValueError):
        LogMelFrontend("random")


def test_deterministic_and_batch_invariant(trunc):
    clips = [_noise(s, seed=10 + i) for i, s in enumerate((0.3, 10.5, 4.0, 10.0, 1.0))]
    frontend = LogMelFrontend(trunc)
    waveforms, lengths = batch_from_list(clips)
    a = frontend(waveforms, lengths)
    b = frontend(waveforms.clone(), lengths)
    assert torch.equal(a.input_features, b.input_features)
    assert torch.equal(a.is_longer, b.is_longer)
    alone = torch.cat([frontend(torch.from_numpy(c)).input_features for c in clips])
    assert (alone - a.input_features).abs().max() < 1e-5
    frontend.chunk_size = 32  # one big chunk instead of 4-clip chunks
    assert (frontend(waveforms, lengths).input_features - a.input_features).abs().max() < 1e-5


def test_float32_under_bf16_autocast(trunc):
    frontend = LogMelFrontend(trunc)
    waveforms, lengths = batch_from_list([_noise(3.0, seed=20), _noise(10.5, seed=21)])
    plain = frontend(waveforms, lengths).input_features
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = frontend(waveforms, lengths).input_features
    assert cast.dtype == torch.float32
    assert torch.equal(cast, plain)


def test_reduced_precision_matmul_flag_keeps_accuracy(extractors):
    clips = [_noise(3.0, seed=21)]
    ref, _ = _reference(extractors["rand_trunc"], clips, "rand_trunc")
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # would allow bf16/TF32 matmuls
        ours, _ = _ours(LogMelFrontend("rand_trunc"), clips)
    finally:
        torch.set_float32_matmul_precision(before)
    assert np.abs(ours - ref).max() < TOL_DB


def test_from_feature_extractor(tmp_path):
    for truncation in ("rand_trunc", "fusion"):
        fe = ClapFeatureExtractor(truncation=truncation, padding="repeat", frequency_min=50)
        fe.save_pretrained(tmp_path / truncation)  # the model folder's preprocessor_config.json
        loaded = ClapFeatureExtractor.from_pretrained(tmp_path / truncation)
        frontend = LogMelFrontend.from_feature_extractor(loaded)
        assert frontend.truncation == truncation and frontend.padding == "repeat"
        assert (frontend.sampling_rate, frontend.n_fft, frontend.hop_length) == (SR, 1024, 480)
        assert (frontend.n_mels, frontend.f_min, frontend.f_max) == (64, 50.0, 14_000.0)
        assert frontend.max_length == N and frontend.n_frames == 1001
        ref = loaded.mel_filters if truncation == "fusion" else loaded.mel_filters_slaney
        rows = frontend.mel_fb.shape[0]
        np.testing.assert_allclose(frontend.mel_fb.numpy(), ref[:rows], rtol=1e-6, atol=0)
        assert not ref[rows:].any()
    custom = ClapFeatureExtractor(feature_size=32, hop_length=320, max_length_s=5)
    frontend = LogMelFrontend.from_feature_extractor(custom, truncation="rand_trunc")
    feats = frontend(torch.from_numpy(_noise(1.0, seed=22))).input_features
    assert feats.shape == (1, 1, 5 * SR // 320 + 1, 32)
    ref, _ = _reference(custom, [_noise(1.0, seed=22)], "rand_trunc")
    assert np.abs(feats.numpy() - ref).max() < TOL_DB
