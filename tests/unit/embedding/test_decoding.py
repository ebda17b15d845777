"""Decode workers' side of the encoder: the window plan, per-clip window features (the log-mel
in the worker) against the main process's per-batch features, and bad files as notes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_helpers.embedding.decoding import DecodeDataset, WindowFeatures, window_plan
from clap_helpers.embedding.frontend import split_windows
from clap_helpers.embedding.loading import load_clap

SR = 48_000
WINDOW = 10 * SR


# (clip samples, its windows as (start, samples)), written out by the rule: consecutive 10 s
# windows; a partial tail kept only when it holds at least one second; a clip that fits one
# window passed as it is (the front-end fills it by its padding rule)
PLANS = [
    (1, [(0, 1)]),
    (SR, [(0, SR)]),
    (WINDOW - 1, [(0, WINDOW - 1)]),
    (WINDOW, [(0, WINDOW)]),
    (WINDOW + 1, [(0, WINDOW)]),
    (WINDOW + SR - 1, [(0, WINDOW)]),
    (WINDOW + SR, [(0, WINDOW), (WINDOW, SR)]),
    (75 * SR, [(k * WINDOW, WINDOW) for k in range(7)] + [(7 * WINDOW, 5 * SR)]),
    (3 * WINDOW, [(0, WINDOW), (WINDOW, WINDOW), (2 * WINDOW, WINDOW)]),
]


@pytest.mark.parametrize(("n", "expected"), PLANS)
def test_window_plan_is_split_windows_without_the_copies(n, expected):
    if n > WINDOW:  # and split_windows, which cuts the samples, agrees
        _, lengths = split_windows(torch.zeros(n), WINDOW, min_last=SR)
        assert lengths.tolist() == [k for _, k in expected]
    assert window_plan(n, WINDOW, SR, "average") == expected
    assert window_plan(n, WINDOW, SR, "first") == expected[:1]
    assert window_plan(n, WINDOW, SR, "fusion") == [(0, n)]
    assert window_plan(n, None, SR, "average") == [(0, n)]


@pytest.fixture(scope="module")
def encoder(tiny_clap):
    return load_clap(tiny_clap, "cpu", "fp32", backend="torch", cache_dir=False, num_workers=0)


def test_window_features_equal_the_front_end_on_a_batch(encoder):
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (SR, 7 * SR, 25 * SR)]
    featurize = WindowFeatures(encoder.family.window_frontend, WINDOW, SR, "average")
    per_clip = [featurize(x) for x in clips]
    assert [f[0].shape[0] for f in per_clip] == [1, 1, 3]  # 25 s: 2 full windows and a 5 s tail
    # The same windows through the front-end as one zero-padded batch, as the main process does.
    windows = [(x, s, k) for x in clips for s, k in window_plan(len(x), WINDOW, SR, "average")]
    batch = torch.zeros((len(windows), max(k for _, _, k in windows)))
    for j, (x, s, k) in enumerate(windows):
        batch[j, :k] = torch.from_numpy(x[s : s + k])
    together = encoder.family.features(batch, torch.tensor([k for _, _, k in windows]))
    for column, reference in zip(zip(*per_clip, strict=True), together, strict=True):
        assert torch.equal(torch.cat(column), reference)  # bit-identical, not just close


def test_decode_dataset_sends_features_or_a_reason(encoder, tmp_path):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, np.sin(np.arange(3 * 16000) / 5.0).astype(np.float32), 16000)
    bad.write_bytes(b"not audio at all" * 10)
    featurize = WindowFeatures(encoder.family.window_frontend, WINDOW, SR, "average")
    data = DecodeDataset([str(good), str(bad)], [0, 1], False, featurize=featurize)
    row, feats, notes = data[0]
    assert row == 0 and notes == [] and isinstance(feats, tuple)
    assert feats[0].shape == (
        1,
        *encoder.family.features(torch.zeros(1, SR), torch.tensor([SR]))[0].shape[1:],
    )
    row, feats, notes = data[1]
    assert row == 1 and feats is None and notes and "bad.wav" not in notes[0]


def test_laion_gives_its_front_end_to_the_workers_only_on_a_cpu(encoder):
    assert encoder.family.window_frontend is encoder.frontend
    assert encoder._featurizer() is not None
    encoder.features_in_workers = False
    try:
        assert encoder._featurizer() is None
    finally:
        encoder.features_in_workers = True
