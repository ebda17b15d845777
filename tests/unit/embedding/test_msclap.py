"""MS-CLAP 2022/2023 family on tiny official-format fixtures: loading, key report, detection,
front-end constants, text path, shapes, determinism, batched == one-by-one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clap_helpers.devtools.fixtures.tiny_msclap import TINY_D_PROJ, make_tiny_msclap
from clap_helpers.embedding.families.msclap import (
    VARIANTS,
    MsClap,
    detect_msclap,
    load_msclap,
    load_msclap_state_dict,
    stft_kernels,
)
from clap_helpers.embedding.frontend import mel_filter_bank

YEARS = ["msclap-2023", "msclap-2022"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("msclap")
    return {v: make_tiny_msclap(root, v) for v in YEARS}


@pytest.fixture(scope="module")
def families(files):
    return {v: load_msclap(ck, text_model=str(tm)) for v, (ck, tm) in files.items()}


def _sounds(n: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Different test sounds zero-padded to n samples at 44.1 kHz."""
    g = torch.Generator().manual_seed(3)
    out = torch.zeros(len(lengths), n)
    for i, length in enumerate(lengths):
        t = torch.arange(length) / 44_100
        kinds = [
            0.3 * torch.sin(2 * math.pi * (300 + 700 * i) * t),
            0.1 * torch.randn(length, generator=g),
            0.3 * torch.sin(2 * math.pi * (100 + 3000 * t) * t),
        ]
        out[i, :length] = kinds[i % 3]
    return out, torch.tensor(lengths)


def _embed(fam: MsClap, waves, lengths) -> torch.Tensor:
    with torch.no_grad():
        return fam.audio_tower(*fam.features(waves, lengths))


@pytest.mark.parametrize("variant", YEARS)
def test_fixture_round_trip_and_clean_key_report(variant, files, families):
    ck, _ = files[variant]
    obj = torch.load(ck, weights_only=True)
    assert set(obj) == {"model"}  # the official {'model': state_dict}
    sd = obj["model"]
    fam = families[variant]
    assert fam.report.clean and fam.name == variant
    # every tensor of the file is either loaded into a tower or a known-unused / front-end key
    loaded = {f"audio_encoder.{k}" for k in fam.audio_tower.state_dict()}
    loaded |= {f"caption_encoder.{k}" for k in fam.text_tower.state_dict()} | {"logit_scale"}
    assert set(sd) == loaded | set(fam.report.dropped)
    for k, t in fam.audio_tower.state_dict().items():
        torch.testing.assert_close(t, sd[f"audio_encoder.{k}"], rtol=0, atol=0)
    assert fam.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)


def test_dropped_keys_are_the_known_unused_ones(families):
    d23 = families["msclap-2023"].report.dropped
    assert any(k.endswith("attn.masked_bias") for k in d23)
    assert any(k.endswith(".attn.bias") for k in d23)
    assert any(".htsat.tscam_conv." in k for k in d23)
    assert any(k.endswith("logmel_extractor.melW") for k in d23)
    d22 = families["msclap-2022"].report.dropped
    assert any(".fc_audioset." in k for k in d22)
    assert "caption_encoder.base.embeddings.position_ids" in d22


def test_missing_and_unexpected_keys_are_reported(files, tmp_path):
    ck, tm = files["msclap-2023"]
    sd = load_msclap_state_dict(ck)
    bad = dict(sd)
    del bad["audio_encoder.projection.linear2.weight"]
    bad["audio_encoder.base.htsat.extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save({"model": bad}, path)
    with pytest.raises(ValueError, match=r"missing: audio_encoder\.projection\.linear2\.weight"):
        load_msclap(path, text_model=str(tm))
    with pytest.warns(UserWarning, match=r"unexpected: audio_encoder\.base\.htsat\.extra\.weight"):
        fam = load_msclap(path, text_model=str(tm), strict=False)
    assert fam.report.missing == ["audio_encoder.projection.linear2.weight"]


def test_wrong_front_end_kernels_are_an_error(files, tmp_path):
    ck, tm = files["msclap-2023"]
    sd = load_msclap_state_dict(ck)
    fb = mel_filter_bank(513, 64, 50, 14_000, 44_100)  # 2022's rate: not what HTSAT uses
    sd = {**sd, "audio_encoder.base.htsat.logmel_extractor.melW": torch.from_numpy(fb).float()}
    torch.save({"model": sd}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="melW"):
        load_msclap(tmp_path / "w.pth", text_model=str(tm))


def test_detection_from_key_names(files):
    for variant, (ck, _) in files.items():
        assert detect_msclap(load_msclap_state_dict(ck)) == variant
    assert detect_msclap(["clap.audio_encoder.base.htsat.x", "clap.caption_encoder.base.y"]) is None
    assert detect_msclap(["text_branch.x", "audio_branch.y"]) is None
    ck, tm = files["msclap-2022"]
    with pytest.raises(ValueError, match="msclap-2022 checkpoint, not msclap-2023"):
        load_msclap(ck, variant="msclap-2023", text_model=str(tm))


def test_a_text_model_of_the_wrong_kind_is_an_error(files):
    ck, _ = files["msclap-2023"]
    _, bert = files["msclap-2022"]
    with pytest.raises(ValueError, match="needs a gpt2 text model"):
        load_msclap(ck, text_model=str(bert))


def test_front_end_constants():
    v23, v22 = VARIANTS["msclap-2023"], VARIANTS["msclap-2022"]
    assert (v23.sample_rate, v23.duration_s, v23.mel_sample_rate, v23.f_max) == (
        44_100,
        7,
        32_000,
        14_000,
    )
    assert (v22.sample_rate, v22.duration_s, v22.mel_sample_rate, v22.f_max) == (
        44_100,
        5,
        44_100,
        14_000,
    )
    for v in (v22, v23):
        assert (v.n_fft, v.hop, v.n_mels, v.f_min) == (1024, 320, 64, 50)
    assert (v23.eot_suffix, v23.pad_token, v23.text_len) == (" <|endoftext|>", "!", 77)
    assert (v22.eot_suffix, v22.pad_token, v22.text_len) == ("", None, 100)
    real, imag = stft_kernels(1024)
    assert real.shape == imag.shape == (513, 1, 1024)
    x = torch.randn(1024, dtype=torch.float64)
    spec = torch.fft.rfft(x * torch.hann_window(1024, periodic=True, dtype=torch.float64))
    np.testing.assert_allclose((real[:, 0].double() @ x).numpy(), spec.real.numpy(), atol=1e-4)
    np.testing.assert_allclose((imag[:, 0].double() @ x).numpy(), spec.imag.numpy(), atol=1e-4)


@pytest.mark.parametrize("variant", YEARS)
def test_short_clips_are_repeated_whole_to_the_native_length(variant, families):
    fam = families[variant]
    n = fam.window_samples
    assert n == VARIANTS[variant].duration_s * 44_100
    waves, lengths = _sounds(n, [n // 3 + 7])
    (lm,) = fam.features(waves, lengths)
    assert lm.shape == (1, 1, 1 + n // 320, 64) and lm.dtype == torch.float32
    clip = waves[0, : lengths[0]]
    tiled = clip.repeat(math.ceil(n / len(clip)))[:n]
    torch.testing.assert_close(lm, fam.log_mel(tiled[None]))
    # a clip given without the padding (T < window) gives the same features
    torch.testing.assert_close(fam.features(waves[:, : lengths[0]], lengths)[0], lm)


@pytest.mark.parametrize("variant", YEARS)
def test_audio_shapes_determinism_and_batched_equals_one_by_one(variant, families):
    fam = families[variant]
    n = fam.window_samples
    lens = [n, n // 2, 30_000, n - 1]
    waves, lengths = _sounds(n, lens)
    emb = _embed(fam, waves, lengths)
    assert emb.shape == (4, TINY_D_PROJ) == (4, fam.dim) and emb.dtype == torch.float32
    torch.testing.assert_close(_embed(fam, waves, lengths), emb, rtol=0, atol=0)
    one = torch.cat(
        [_embed(fam, waves[i : i + 1, : lens[i]], lengths[i : i + 1]) for i in range(4)]
    )
    torch.testing.assert_close(one, emb, rtol=1e-5, atol=1e-5)
    unit = torch.nn.functional.normalize(emb, dim=-1)
    cos = unit @ unit.T
    assert cos[np.triu_indices(4, 1)].max() < 0.999  # the fixture's sounds are told apart


@pytest.mark.parametrize("variant", YEARS)
def test_text_shapes_determinism_and_batched_equals_one_by_one(variant, families):
    fam = families[variant]
    texts = ["This is a sound of dog.", "rain", "A siren wails! Then a dog barks.", "a " * 90]
    emb = fam.text_embeddings(texts)
    assert emb.shape == (4, fam.dim) and emb.dtype == torch.float32
    torch.testing.assert_close(fam.text_embeddings(texts), emb, rtol=0, atol=0)
    one = torch.cat([fam.text_embeddings([t]) for t in texts])
    torch.testing.assert_close(one, emb, rtol=1e-5, atol=1e-5)
    unit = torch.nn.functional.normalize(emb, dim=-1)
    assert (unit @ unit.T)[np.triu_indices(4, 1)].max() < 0.99


def test_gpt2_text_path_follows_the_official_one(families):
    fam = families["msclap-2023"]
    tok = fam.tokenize(["dog barking"])
    ids, mask = tok["input_ids"][0], tok["attention_mask"][0]
    assert ids.shape == (77,) and set(tok) == {"input_ids", "attention_mask"}
    eot = fam.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    n = int(mask.sum())
    assert ids[n - 1] == eot and (ids[n:] == 0).all()  # ' <|endoftext|>' appended, '!' (0) pads
    assert fam.tokenizer.convert_tokens_to_ids("!") == 0
    # pooled at index count(ids != 0) - 1: the end-of-text token's hidden state
    with torch.no_grad():
        hidden = fam.text_tower.base(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        )[0]
        want = fam.text_tower.projection(hidden[0, n - 1])
    torch.testing.assert_close(fam.text_embeddings(["dog barking"])[0], want)
    long = fam.tokenize(["a " * 90])["input_ids"]
    assert long.shape[1] > 77  # not truncated, as the official padding='max_length' call


def test_bert_text_path_pools_cls(families):
    fam = families["msclap-2022"]
    tok = fam.tokenize(["dog barking"])
    assert tok["input_ids"].shape == (1, 100) and set(tok) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
    }
    assert tok["input_ids"][0, 0] == fam.tokenizer.cls_token_id
    with torch.no_grad():
        hidden = fam.text_tower.base(**tok)[0]
        want = fam.text_tower.projection(hidden[:, 0])
    torch.testing.assert_close(fam.text_embeddings(["dog barking"]), want)


def test_namespace_and_interface(families):
    fam = families["msclap-2023"]
    ns = fam.namespace()
    assert ns["family"] == "msclap-2023" and ns["mel"][3] == 32_000 and ns["window_s"] == 7
    assert fam.sample_rate == 44_100 and fam.fused is False
    assert fam.revision.startswith("local-") and fam.model_id.endswith("CLAP_weights_2023.pth")
    assert families["msclap-2022"].namespace() != ns
    assert fam.text_embeddings([]).shape == (0, fam.dim)


def test_load_clap_end_to_end_with_detection_resampling_and_windows(files, tmp_path):
    import soundfile as sf

    from clap_helpers.embedding.loading import load_clap

    ck, tm = files["msclap-2023"]
    enc = load_clap(ck, "cpu", "fp32", text_model=str(tm), cache_dir=tmp_path / "c", num_workers=0)
    assert enc.family.name == "msclap-2023" and enc.sample_rate == 44_100  # detected from keys
    explicit = load_clap(
        ck, "cpu", "fp32", family="msclap-2023", text_model=str(tm), cache_dir=False
    )
    assert explicit.family.name == "msclap-2023"
    with pytest.raises(ValueError, match="not msclap-2022"):
        load_clap(ck, "cpu", "fp32", family="msclap-2022", text_model=str(tm), cache_dir=False)
    waves, lengths = _sounds(44_100 * 16, [44_100 * 3, 44_100 * 16])
    paths = []
    for i, n in enumerate(lengths.tolist()):
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(paths[-1], waves[i, :n].numpy(), 44_100, subtype="FLOAT")
    sf.write(tmp_path / "c16k.wav", waves[0, : 44_100 * 3 : 3].numpy(), 14_700, subtype="FLOAT")
    emb = enc.embed_audio([*paths, tmp_path / "c16k.wav"], progress=False)
    assert emb.shape == (3, TINY_D_PROJ) and enc.failures == []
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    fam = enc.family
    short = torch.nn.functional.normalize(_embed(fam, waves[:1, : lengths[0]], lengths[:1]), dim=-1)
    np.testing.assert_allclose(emb[0], short[0].numpy(), atol=1e-5)  # one window = the family path
    n = fam.window_samples  # 16 s at 7 s windows: two full windows + a 2 s tail, averaged
    starts = [0, n, 2 * n]
    parts = [waves[1:2, s : min(s + n, lengths[1])] for s in starts]
    win = [_embed(fam, p, torch.tensor([p.shape[1]])) for p in parts]
    want = torch.nn.functional.normalize(
        torch.nn.functional.normalize(torch.cat(win), dim=-1).mean(0), dim=0
    )
    np.testing.assert_allclose(emb[1], want.numpy(), atol=1e-5)
    np.testing.assert_allclose(enc.embed_audio(paths, progress=False), emb[:2], atol=1e-6)  # cache
    text = enc.embed_text(["a dog barks", "rain"], cache_dir=False)
    want_t = torch.nn.functional.normalize(fam.text_embeddings(["a dog barks", "rain"]), dim=-1)
    np.testing.assert_allclose(text, want_t.numpy(), atol=1e-6)


def test_hub_repo_id_fetches_the_official_file_name(files, monkeypatch):
    import huggingface_hub

    ck, tm = files["msclap-2022"]
    asked = []

    def fake_download(repo, filename, **kw):
        asked.append((repo, filename))
        return str(ck)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    fam = load_msclap("microsoft/msclap", variant="msclap-2022", text_model=str(tm))
    assert asked == [("microsoft/msclap", "CLAP_weights_2022.pth")] and fam.name == "msclap-2022"
    with pytest.raises(FileNotFoundError):
        load_msclap("/no/such/CLAP_weights_2023.pth")


def test_default_text_model_unavailable_offline_is_a_clear_error(files):
    ck, _ = files["msclap-2023"]  # default text_model "gpt2": not cached, or not this file's size
    with pytest.raises((OSError, ValueError), match="text model"):
        load_msclap(ck)


def test_a_corrupt_or_foreign_file_is_a_clear_error(files, tmp_path):
    ck, tm = files["msclap-2023"]
    cut = tmp_path / "cut.pth"
    cut.write_bytes(ck.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read it as a weights-only torch file"):
        load_msclap(cut, text_model=str(tm))
    torch.save({"model": {"text_branch.w": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no MS-CLAP 2022/2023 key layout"):
        load_msclap(tmp_path / "other.pth", text_model=str(tm))


def test_fixture_is_deterministic_and_rebuilt_for_another_seed(files, tmp_path):
    ck, _ = files["msclap-2022"]
    again, _ = make_tiny_msclap(tmp_path, "msclap-2022")
    a, b = load_msclap_state_dict(ck), load_msclap_state_dict(again)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    other, _ = make_tiny_msclap(tmp_path, "msclap-2022", seed=1)
    assert other == again  # same file name, rewritten
    c = load_msclap_state_dict(other)
    assert not torch.equal(
        c["audio_encoder.projection.linear1.weight"], a["audio_encoder.projection.linear1.weight"]
    )
