"""Peer check per model family: the project's embeddings equal the plain transformers path.

For each family, fixture clips go through ``ch.load_clap(...).embed_audio`` (decoding, batching,
our front-end, cache) and, one clip at a time, through transformers' own processor and model;
texts likewise. Every pair must agree to cosine > 0.9999 (fp32 on both sides).

* LAION-CLAP: ``ClapProcessor`` + ``ClapModel.get_audio_features`` / ``get_text_features``. For
  the fused checkpoint ``is_longer`` is set from the clip length (the extractor flags a random
  clip when none is longer than 10 s: the one difference the project removes on purpose).
* PE-Audio: ``PeAudioProcessor`` + ``PeAudioModel.forward`` (``audio_embeds``,
  ``text_audio_embeds``; ``get_text_audio_embeds`` is broken in transformers 5.24).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clap_helpers.data.audio import load_audio
from clap_helpers.data.loaders import load
from clap_helpers.embedding.loading import load_clap

TEXTS = ["This is a sound of dog.", "This is a sound of rain.", "a siren wailing", "church bells"]
MIN_COSINE = 0.9999


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clips(data_root, n=6):
    clips, _ = load("urbansound8k", data_root)  # varied lengths, rates and channels
    return list(clips["path"][:n])


def _laion_reference(path, paths):
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(path).eval()
    proc = ClapProcessor.from_pretrained(path)
    fused = model.config.audio_config.enable_fusion
    audio = []
    for p in paths:
        x = load_audio(p)
        feats = proc(audio=x, sampling_rate=48_000, return_tensors="pt")
        kwargs = {"is_longer": torch.tensor([[len(x) > 480_000]])} if fused else {}
        with torch.no_grad():
            out = model.get_audio_features(input_features=feats["input_features"], **kwargs)
        audio.append(out.pooler_output[0].numpy())
    tokens = proc.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(**tokens).pooler_output.numpy()
    return np.stack(audio), text


def _pe_reference(path, paths):
    from transformers import PeAudioModel, PeAudioProcessor

    model = PeAudioModel.from_pretrained(path).eval()
    proc = PeAudioProcessor.from_pretrained(path)
    audio = []
    for p in paths:
        inputs = proc(
            text=TEXTS,
            audio=[load_audio(p)],
            sampling_rate=48_000,
            return_tensors="pt",
            padding=True,
        )
        with torch.no_grad():
            out = model(**inputs)
        audio.append(out.audio_embeds[0].numpy())
    return np.stack(audio), out.text_audio_embeds.numpy()


@pytest.mark.parametrize("family", ["laion-unfused", "laion-fused", "pe-audio"])
def test_family_embeddings_equal_the_transformers_path(family, request, data_root, tmp_path):
    fixture = {"laion-unfused": "tiny_clap", "laion-fused": "tiny_clap_fused"}.get(
        family, "tiny_pe_audio"
    )
    path = request.getfixturevalue(fixture)
    paths = _clips(data_root)
    enc = load_clap(path, "cpu", "fp32", cache_dir=tmp_path, num_workers=0)
    ours_audio = enc.embed_audio(paths, batch_size=4, progress=False)
    ours_text = enc.embed_text(TEXTS)
    reference = _pe_reference if family == "pe-audio" else _laion_reference
    ref_audio, ref_text = reference(path, paths)
    audio_cos = np.sum(_unit(ours_audio) * _unit(ref_audio), axis=1)
    text_cos = np.sum(_unit(ours_text) * _unit(ref_text), axis=1)
    assert audio_cos.min() > MIN_COSINE, audio_cos
    assert text_cos.min() > MIN_COSINE, text_cos
    # and the check is not vacuous: the clips and texts differ from each other
    assert (_unit(ref_audio) @ _unit(ref_audio).T)[np.triu_indices(len(paths), 1)].min() < 0.99
    assert (_unit(ref_text) @ _unit(ref_text).T)[np.triu_indices(len(TEXTS), 1)].min() < 0.99
