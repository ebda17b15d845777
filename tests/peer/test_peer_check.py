"""Peer check: our zero-shot predictions equal transformers' own zero-shot audio pipeline.

The pipeline decodes nothing itself, embeds one clip per call with ``ClapFeatureExtractor`` and
scores with a softmax over ``logit_scale * cosine``. Fed the same 48 kHz waveforms, model and
template, it must pick the same class as ``ch.zeroshot`` on our batched, cached embeddings.
Our side runs at the suite's ``default_precision`` (fp32 unless ``CLAP_TEST_PRECISION`` forces
bf16, as the second pass of ``make test`` does); the pipeline always runs in fp32.
"""

from __future__ import annotations

import numpy as np
import pytest

from clap_helpers.data.audio import load_audio
from clap_helpers.data.loaders import load
from clap_helpers.embedding.loading import load_clap
from clap_helpers.evaluation import zeroshot
from clap_helpers.evaluation.prompts import TEMPLATES, clean_label

TEMPLATE = TEMPLATES["default"]  # "This is a sound of {}.", the pipeline's own default too


@pytest.mark.parametrize("dataset", ["esc50", "urbansound8k"])
def test_predictions_equal_the_transformers_pipeline(
    dataset, data_root, tiny_clap, tmp_path, default_precision
):
    from transformers import pipeline

    clips, classes = load(dataset, data_root)
    labels = [clean_label(c) for c in classes]
    enc = load_clap(tiny_clap, device="cpu", precision=default_precision, cache_dir=tmp_path)
    audio_emb = enc.embed_audio(clips["path"], batch_size=8)
    text_emb = enc.embed_text([TEMPLATE.format(label) for label in labels])
    ours = zeroshot.evaluate(audio_emb, clips["target"].to_numpy(), text_emb)["predictions"]

    classifier = pipeline("zero-shot-audio-classification", model=str(tiny_clap), device="cpu")
    theirs = []
    for path in clips["path"]:
        out = classifier(load_audio(path), candidate_labels=labels, hypothesis_template=TEMPLATE)
        theirs.append(labels.index(out[0]["label"]))
    theirs = np.array(theirs)

    assert len(set(theirs)) > 1, "a degenerate model would make this check vacuous"
    if default_precision == "fp32":
        np.testing.assert_array_equal(ours, theirs)
    else:  # bf16 audio moves probabilities by ~0.01: a near tie may flip (none did on AMX)
        assert (ours == theirs).mean() >= 0.95
    # and the probabilities: softmax(logit_scale * cosine), as the pipeline computes them
    probs = zeroshot.scores(audio_emb[:1], text_emb, logit_scale=enc.logit_scale)[0]
    first = classifier(load_audio(clips["path"][0]), candidate_labels=labels)
    expected = {d["label"]: d["score"] for d in first}
    atol = 1e-4 if default_precision == "fp32" else 0.03
    np.testing.assert_allclose(probs, [expected[label] for label in labels], atol=atol)
