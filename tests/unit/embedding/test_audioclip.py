"""Tests for the AudioCLIP family (embedding/families/audioclip.py) on the tiny release-format fixture.

The numerical match with the official AndreyGuzhov/AudioCLIP code was checked outside the repo
(usage.md, "Model families from official checkpoints"); these tests pin shapes, determinism,
batched == one by one, the fixture round trip, the key report, detection and safe loading.
"""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clap_helpers.devtools.fixtures.tiny_audioclip import TINY_AUDIOCLIP_DIM, make_tiny_audioclip
from clap_helpers.embedding.families.audioclip import (
    WINDOW_SAMPLES,
    ClipBPE,
    detect_audioclip,
    is_audioclip_state_dict,
    load_audioclip,
    read_state_dict,
)

TEXTS = ["This is a sound of dog.", "rain", "a car horn, honking", "Zebra crossing beeps!"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_tiny_audioclip(tmp_path_factory.mktemp("audioclip"))


@pytest.fixture(scope="module")
def family(files):
    ckpt, bpe = files
    return load_audioclip(ckpt, bpe_vocab=bpe)


def _close(a, b, rel=2e-5):
    torch.testing.assert_close(a, b, atol=rel * float(b.abs().max()), rtol=rel)


def _clips(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        x[i, :n] = 0.2 * torch.randn(n, generator=g)
    return x, torch.tensor(lengths)


def test_shapes_and_constants(family):
    assert family.name == "audioclip" and family.sample_rate == 44_100
    assert family.window_samples == WINDOW_SAMPLES == 220_500
    assert family.dim == TINY_AUDIOCLIP_DIM
    x, lens = _clips([WINDOW_SAMPLES, 44_100])
    (spec,) = family.features(x, lens)
    assert spec.shape == (2, 3, 341, 392) and spec.dtype == torch.float32  # 3 bands x 341 bins
    assert family.audio_tower(spec).shape == (2, family.dim)
    t = family.text_embeddings(TEXTS)
    assert t.shape == (len(TEXTS), family.dim) and t.dtype == torch.float32
    assert family.logit_scale == pytest.approx(30.0, rel=1e-5)
    assert family.namespace()["amplitude"] == "int16"


def test_deterministic_and_batched_equals_one_by_one(family):
    lengths = [WINDOW_SAMPLES, 100_000, 3_000]
    x, lens = _clips(lengths, seed=1)
    batch = family.audio_embeddings(x, lens)
    assert torch.equal(batch, family.audio_embeddings(x, lens))
    for i, n in enumerate(lengths):
        _close(family.audio_embeddings(x[i : i + 1, :n], lens[i : i + 1])[0], batch[i])
    texts = family.text_embeddings(TEXTS)
    for i, t in enumerate(TEXTS):
        _close(family.text_embeddings([t])[0], texts[i])


def test_short_clip_padding_and_amplitude(files, family):
    # a short clip is centred and padded with its edge values: equal to padding it by hand
    x, lens = _clips([10_001], seed=2)
    clip = x[0]
    left = int(round(0.5 * (WINDOW_SAMPLES - 10_001)))
    full = torch.cat(
        [clip[:1].expand(left), clip, clip[-1:].expand(WINDOW_SAMPLES - left - 10_001)]
    )
    _close(
        family.audio_embeddings(x, lens)[0],
        family.audio_embeddings(full[None], torch.tensor([WINDOW_SAMPLES]))[0],
    )
    # int16 convention: the embedding depends on the level; minmax removes it
    assert not torch.allclose(
        family.audio_embeddings(x, lens), family.audio_embeddings(0.1 * x, lens)
    )
    mm = load_audioclip(files[0], bpe_vocab=files[1], amplitude="minmax")
    _close(mm.audio_embeddings(0.1 * x, lens), mm.audio_embeddings(x, lens), rel=1e-4)
    with pytest.raises(ValueError, match="amplitude"):
        load_audioclip(files[0], bpe_vocab=files[1], amplitude="float")


def test_too_long_window_is_refused(family):
    with pytest.raises(ValueError, match="window"):
        family.features(torch.zeros(1, WINDOW_SAMPLES + 1), torch.tensor([WINDOW_SAMPLES + 1]))


def test_tokenizer(files):
    bpe = ClipBPE(files[1], n_merges=10_000)
    ids = bpe(["This is a sound of dog.", "x" * 500])
    assert ids.shape == (2, 77)
    assert (
        ids[0, 0] == bpe.sot
        and bpe.eot in ids[0].tolist()
        and ids[0].argmax() == ids[0].tolist().index(bpe.eot)
    )
    assert ids[1, -1] == bpe.eot  # over-long text cut, end-of-text kept
    assert bpe.encode("DOG") == bpe.encode("dog") and bpe.encode("a  dog") == bpe.encode("a dog")
    assert len(bpe.encode("dog")) == 1  # a learnt whole word
    lines = gzip.open(files[1]).read().decode().split("\n")
    assert lines[0].startswith("#version") and len(lines) - 1 + 514 == len(bpe)


def test_fixture_round_trip_and_key_report(files, tmp_path):
    ckpt, bpe = files
    state = read_state_dict(ckpt)
    assert is_audioclip_state_dict(state) and state["audio.fbsp.bias"].numel() == 0
    again, _ = make_tiny_audioclip(tmp_path / "again")
    other = read_state_dict(again)
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)
    fam = load_audioclip(ckpt, bpe_vocab=bpe)
    assert fam.key_report == {"missing": [], "unexpected": [], "dropped": 4}
    extra = {**state, "audio.head.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.warns(UserWarning, match="audio.head.weight"):
        load_audioclip(tmp_path / "extra.pt", bpe_vocab=bpe)
    missing = {k: v for k, v in state.items() if k != "audio.att3.bn.running_var"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="att3"):
        load_audioclip(tmp_path / "missing.pt", bpe_vocab=bpe)
    with pytest.raises(FileNotFoundError, match="bpe_vocab"):
        load_audioclip(ckpt, bpe_vocab=tmp_path / "nope.txt.gz")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_detection_and_safe_loading(files, tmp_path, capsys):
    ckpt, bpe = files
    assert detect_audioclip(str(ckpt), None)
    assert not detect_audioclip(str(bpe), None)
    bad = tmp_path / "evil.pt"
    torch.save({**read_state_dict(ckpt), "x": _Evil()}, bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="refused"):
            load_audioclip(bad, bpe_vocab=bpe)
    assert "unpickled!" not in capsys.readouterr().out
    assert not detect_audioclip(str(bad), None)


def test_load_clap_end_to_end(files):
    import clap_helpers as ch

    ckpt, bpe = files
    enc = ch.load_clap(ckpt, device="cpu", precision="fp32", cache_dir=False)  # vocabulary beside
    assert enc.family.name == "audioclip" and enc.sample_rate == 44_100  # detected from key names
    x, _ = _clips([60_000], seed=4)
    rows = enc.embed_waveforms([x[0].numpy()])
    direct = F.normalize(enc.family.audio_embeddings(x, torch.tensor([60_000])), dim=-1)
    _close(torch.from_numpy(rows), direct, rel=1e-4)
    t = enc.embed_text(TEXTS)
    assert np.allclose(t, F.normalize(enc.family.text_embeddings(TEXTS), dim=-1).numpy(), atol=1e-5)
    assert enc.precision_check("bf16") > 0.99
