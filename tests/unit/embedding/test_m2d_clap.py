"""Tests for the M2D-CLAP family (embedding/families/m2d_clap.py) on the tiny official-format fixture.

The numerical match with the official nttcslab/m2d code was checked outside the repo (usage.md,
"Model families from official checkpoints"); these tests pin the behaviour: shapes, determinism,
batched == one by one, the fixture file's round trip, the key report, detection and safe loading.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clap_helpers.devtools.fixtures.tiny_m2d import TINY_M2D_DIM, make_tiny_m2d
from clap_helpers.embedding.families.m2d_clap import (
    DEFAULT_NORM_STATS,
    detect_m2d_clap,
    is_m2d_clap_state_dict,
    load_m2d_clap,
    parse_m2d_name,
    read_checkpoint,
)

TEXTS = ["This is a sound of dog.", "rain on a roof", "a chainsaw", "Zebra crossing beeps!"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2d")
    return {v: make_tiny_m2d(root / v, v) for v in ("2024", "2025")}


@pytest.fixture(scope="module", params=["2024", "2025"])
def family(request, files):
    ckpt, text = files[request.param]
    return load_m2d_clap(ckpt, text_model=str(text))


def _clips(n: int, lengths, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), n)
    for i, m in enumerate(lengths):
        x[i, :m] = 0.2 * torch.randn(m, generator=g)
    return x, torch.tensor(lengths)


def test_parse_names():
    c = parse_m2d_name("m2d_clap_vit_base-80x608p16x16-240128")
    assert (c.input_size, c.patch_size, c.sr, c.text_encoder, c.text_inside) == (
        (80, 608),
        (16, 16),
        "16k",
        "A",
        False,
    )
    c = parse_m2d_name("m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025")
    assert (c.input_size, c.text_encoder, c.text_inside) == ((80, 1001), "B", True)
    assert parse_m2d_name("m2d_as_vit_base-80x608p16x16p32k-240413").sr == "32k"
    for bad in ("checkpoint-300", "m2d_clap-80x608p16x16p16kpN-x", "m2d-80x608p16x16p8k"):
        with pytest.raises(ValueError):
            parse_m2d_name(bad)


def test_shapes_and_constants(family):
    assert family.name == "m2d-clap"
    assert family.sample_rate == 16000
    native = family.config.input_size[1]
    assert family.window_samples == (native - 1) * 160
    assert family.dim == TINY_M2D_DIM
    x, lens = _clips(family.window_samples, [family.window_samples, 16000])
    lms, patches = family.features(x, lens)
    assert lms.dtype == torch.float32 and lms.shape[:3] == (2, 1, 80)
    assert patches.tolist() == [native // 16, 7]  # 101 frames -> 7 patches of 16
    assert lms.shape[-1] == 16 * int(patches.max())
    assert torch.all(lms[1, ..., 101:] == 0)  # padded frames are zeros in normalised units
    emb = family.audio_tower(lms, patches)
    assert emb.shape == (2, family.dim)
    text = family.text_embeddings(TEXTS)
    assert text.shape == (len(TEXTS), family.dim) and text.dtype == torch.float32
    assert family.logit_scale == pytest.approx(float(torch.tensor(2.9).exp()))
    ns = family.namespace()
    assert ns["norm_stats"] == pytest.approx([-6.5, 4.5]) and ns["config"] == family.config.name


def test_deterministic_and_batched_equals_one_by_one(family):
    n = family.window_samples
    lengths = [n, 80_000, 16_001, 3_000, 150]
    x, lens = _clips(n, lengths, seed=1)
    batch = family.audio_embeddings(x, lens)
    assert torch.equal(batch, family.audio_embeddings(x, lens))
    for i, m in enumerate(lengths):
        one = family.audio_embeddings(x[i : i + 1, :m], lens[i : i + 1])
        torch.testing.assert_close(one[0], batch[i], atol=5e-6, rtol=1e-5)
    # a clip is not changed by what follows it in its padded row
    y = x.clone()
    y[1, 80_000:] = 1.0
    torch.testing.assert_close(family.audio_embeddings(y, lens)[1], batch[1], atol=5e-6, rtol=1e-5)
    texts = family.text_embeddings(TEXTS)
    for i, t in enumerate(TEXTS):
        torch.testing.assert_close(family.text_embeddings([t])[0], texts[i], atol=1e-5, rtol=1e-5)


def test_embeddings_tell_sounds_apart(files):
    fam = load_m2d_clap(files["2024"][0], text_model=str(files["2024"][1]))
    sr = fam.sample_rate
    t = torch.arange(3 * sr) / sr
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    noise = 0.3 * torch.randn(3 * sr, generator=torch.Generator().manual_seed(0))
    e = F.normalize(
        fam.audio_embeddings(torch.stack([tone, noise]), torch.tensor([3 * sr] * 2)), dim=-1
    )
    assert float(e[0] @ e[1]) < 0.99


def test_too_long_window_is_refused(family):
    n = family.window_samples + family.hop
    with pytest.raises(ValueError, match="windows"):
        family.features(torch.zeros(1, n), torch.tensor([n]))


def test_fixture_file_round_trip(files, tmp_path):
    ckpt, _ = files["2024"]
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(ckpt, weights_only=True)
    assert set(obj) == {"model", "epoch", "args"} and isinstance(obj["args"], argparse.Namespace)
    state = read_checkpoint(ckpt)
    assert {"decoder_pred.weight", "target_norm.weight", "mask_token", "norm_stats"} <= set(state)
    again, _ = make_tiny_m2d(tmp_path, "2024")
    other = read_checkpoint(again)
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)


def test_key_report_and_defaults(files, tmp_path):
    ckpt, text = files["2024"]
    fam = load_m2d_clap(ckpt, text_model=str(text))
    assert fam.key_report["missing"] == [] and fam.key_report["unexpected"] == []
    assert fam.key_report["dropped"] > 0 and not fam.key_report["default_norm_stats"]
    obj = torch.load(ckpt, weights_only=False)
    folder = tmp_path / ckpt.parent.name
    folder.mkdir()
    # no norm_stats: the official default; an unknown key: reported, not silently used
    state = {k: v for k, v in obj["model"].items() if k != "norm_stats"}
    state["head.weight"] = torch.zeros(2)
    torch.save({**obj, "model": state}, folder / "checkpoint-1.pth")
    with pytest.warns(UserWarning, match="head.weight"):
        fam = load_m2d_clap(folder / "checkpoint-1.pth", text_model=str(text))
    assert fam.key_report["default_norm_stats"] and fam.norm_stats == pytest.approx(
        DEFAULT_NORM_STATS
    )
    assert fam.key_report["unexpected"] == ["head.weight"]
    # a missing weight is an error naming it
    state = {k: v for k, v in obj["model"].items() if k != "blocks.1.mlp.fc2.bias"}
    torch.save({**obj, "model": state}, folder / "checkpoint-2.pth")
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        load_m2d_clap(folder / "checkpoint-2.pth", text_model=str(text))
    # shapes that do not fit the folder name's configuration
    wrong = tmp_path / "m2d_clap_vit_base-80x400p16x16-240128"
    wrong.mkdir()
    torch.save(obj, wrong / "checkpoint-300.pth")
    with pytest.raises(ValueError, match="shapes"):
        load_m2d_clap(wrong / "checkpoint-300.pth", text_model=str(text))
    # name= overrides an unreadable folder name
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save(obj, plain / "checkpoint-300.pth")
    with pytest.raises(ValueError, match="name="):
        load_m2d_clap(plain / "checkpoint-300.pth", text_model=str(text))
    fam = load_m2d_clap(plain / "checkpoint-300.pth", text_model=str(text), name=ckpt.parent.name)
    assert fam.config.input_size == (80, 608)


def test_text_weights_inside_the_file(files):
    ckpt, text = files["2025"]
    fam = load_m2d_clap(ckpt, text_model=str(text))
    state = read_checkpoint(ckpt)
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(
        fam.text_tower.model.state_dict()[key], state["text_encoder.text_encoder." + key]
    )
    assert torch.equal(fam.text_tower.text_proj.weight, state["text_proj.weight"])


def test_detection(files, tmp_path):
    ckpt, text = files["2024"]
    assert is_m2d_clap_state_dict(read_checkpoint(ckpt))
    assert detect_m2d_clap(str(ckpt), None)
    assert not detect_m2d_clap(str(text), None)  # a folder
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2)}, other)
    assert not detect_m2d_clap(str(other), None)
    assert not is_m2d_clap_state_dict({"pos_embed": 0, "patch_embed.proj.weight": 0})


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_unsafe_pickle_is_refused(files, tmp_path, capsys):
    ckpt, text = files["2024"]
    obj = torch.load(ckpt, weights_only=False)
    folder = tmp_path / ckpt.parent.name
    folder.mkdir()
    bad = folder / "checkpoint-300.pth"
    torch.save({**obj, "extra": _Evil()}, bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="refused to unpickle"):
            load_m2d_clap(bad, text_model=str(text))
    assert "unpickled!" not in capsys.readouterr().out
    assert not detect_m2d_clap(str(bad), None)


def test_missing_text_tower_is_a_clear_error(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt, _ = files["2024"]
    with pytest.raises(OSError, match="text_model="):
        load_m2d_clap(ckpt, text_model="no-such-org/no-such-text-model")


def test_load_clap_end_to_end(files):
    import clap_helpers as ch

    ckpt, text = files["2024"]
    enc = ch.load_clap(ckpt, device="cpu", precision="fp32", cache_dir=False)
    assert enc.family.name == "m2d-clap" and enc.sample_rate == 16000  # detected from key names
    assert enc.family.text_model == str(text)  # the gte-base folder beside the release folder
    fam = enc.family
    n = fam.window_samples
    x, lens = _clips(2 * n + 20_000, [2 * n + 20_000], seed=3)
    short = x[0, :40_000].numpy()
    rows = enc.embed_waveforms([short, x[0].numpy()])
    direct = F.normalize(
        fam.audio_embeddings(torch.from_numpy(short)[None], torch.tensor([40_000])), dim=-1
    )
    torch.testing.assert_close(torch.from_numpy(rows[0]), direct[0], atol=1e-5, rtol=1e-5)
    windows = torch.stack([x[0, :n], x[0, n : 2 * n]])  # the long clip: mean of its windows
    w = F.normalize(fam.audio_embeddings(windows, torch.tensor([n, n])), dim=-1)
    tail = F.normalize(fam.audio_embeddings(x[:, 2 * n :], torch.tensor([20_000])), dim=-1)
    pooled = F.normalize(w.sum(0) + tail[0], dim=-1)
    torch.testing.assert_close(torch.from_numpy(rows[1]), pooled, atol=1e-5, rtol=1e-5)
    t = enc.embed_text(TEXTS)
    torch.testing.assert_close(
        torch.as_tensor(t), F.normalize(fam.text_embeddings(TEXTS), dim=-1), atol=1e-5, rtol=1e-5
    )
    assert enc.precision_check("bf16") > 0.99  # a probe of one (6.07 s) window, not 10 s
    assert "text_revision" in enc.family.namespace()
    enc2 = ch.load_clap(
        ckpt,
        device="cpu",
        precision="fp32",
        family="m2d-clap",
        text_model=str(text),
        cache_dir=False,
    )
    assert np.allclose(enc2.embed_waveforms([short]), rows[:1], atol=1e-6)
