"""Session-wide fixtures: the synthetic datasets and the tiny CLAPs, built once per test run.

They live in one :class:`clap_helpers.devtools.runner.FixtureEnv`, the same layout ``make demo`` uses, so
the notebook tests reuse the datasets, models and embedding cache the other tests built.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests that do not test backends run eager PyTorch (backend="auto" would pick OpenVINO where it is
# installed); tests/unit/embedding/test_backends.py pins each backend. CLAP_TEST_BACKEND overrides.
os.environ.setdefault("CLAP_HELPERS_BACKEND", os.environ.get("CLAP_TEST_BACKEND", "torch"))

import pytest  # noqa: E402

from clap_helpers.devtools.runner import FixtureEnv  # noqa: E402


@pytest.fixture(scope="session")
def fixture_env(tmp_path_factory) -> FixtureEnv:
    return FixtureEnv(tmp_path_factory.mktemp("env"))


@pytest.fixture(scope="session")
def data_root(fixture_env):
    """Folder holding all four fixture datasets in their real layouts (read-only for tests)."""
    from clap_helpers.devtools.fixtures import make_datasets

    make_datasets(fixture_env.data_root)
    return fixture_env.data_root


@pytest.fixture(scope="session")
def tiny_clap(fixture_env):
    """Path of the tiny random CLAP (unfused) in from_pretrained layout."""
    from clap_helpers.devtools.fixtures import make_tiny_clap

    return make_tiny_clap(fixture_env.model)


@pytest.fixture(scope="session")
def tiny_clap_fused(fixture_env):
    """Path of the tiny random CLAP with feature fusion (like laion/clap-htsat-fused)."""
    from clap_helpers.devtools.fixtures import make_tiny_clap

    return make_tiny_clap(fixture_env.fused_model, fused=True)


@pytest.fixture(scope="session")
def tiny_pe_audio(fixture_env):
    """Path of the tiny random PE-Audio (PeAudioModel) in from_pretrained layout."""
    from clap_helpers.devtools.fixtures import make_tiny_pe_audio

    return make_tiny_pe_audio(fixture_env.pe_model)


@pytest.fixture(scope="session")
def other_families(fixture_env):
    """The tiny MS-CLAP 2023, M2D-CLAP and AudioCLIP files of the FixtureEnv (official formats):
    ``fixture_env.msclap_model`` (+ ``msclap_text_model``), ``m2d_model``, ``audioclip_model``."""
    return fixture_env.build_other_families()


# Embedding precision of the tests that do not test precision itself. Never chosen by CPU flags:
# fp32 unless CLAP_TEST_PRECISION forces another (`make test` runs the embedding tests once more
# with CLAP_TEST_PRECISION=bf16, so bf16 is covered on AVX2-only, AVX512-BF16 and AMX CPUs alike).
TEST_PRECISION = os.environ.get("CLAP_TEST_PRECISION", "fp32")
# Least cosine between an audio embedding at a precision and the fp32 reference of the same clip.
MIN_COSINE_TO_FP32 = {"fp32": 0.9999, "bf16": 0.99, "fp16": 0.99}


@pytest.fixture(scope="session")
def default_precision() -> str:
    """``precision=`` for embedding tests that do not test precision (``CLAP_TEST_PRECISION``)."""
    if TEST_PRECISION not in MIN_COSINE_TO_FP32:
        raise pytest.UsageError(f"CLAP_TEST_PRECISION={TEST_PRECISION!r}: use fp32, bf16 or fp16")
    return TEST_PRECISION


@pytest.fixture(scope="session")
def min_cosine_to_fp32():
    """Tolerance per precision: ``min_cosine_to_fp32("bf16") == 0.99``."""
    return MIN_COSINE_TO_FP32.__getitem__
