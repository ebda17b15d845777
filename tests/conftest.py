"""Session-wide fixtures: the synthetic datasets and the tiny CLAPs, built once per test run.

They live in one :class:`clap_helpers.runner.FixtureEnv`, the same layout ``make demo`` uses, so
the notebook tests reuse the datasets, models and embedding cache the other tests built.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from clap_helpers.runner import FixtureEnv  # noqa: E402


@pytest.fixture(scope="session")
def fixture_env(tmp_path_factory) -> FixtureEnv:
    return FixtureEnv(tmp_path_factory.mktemp("env"))


@pytest.fixture(scope="session")
def data_root(fixture_env):
    """Folder holding all four fixture datasets in their real layouts (read-only for tests)."""
    from clap_helpers.fixtures import make_datasets

    make_datasets(fixture_env.data_root)
    return fixture_env.data_root


@pytest.fixture(scope="session")
def tiny_clap(fixture_env):
    """Path of the tiny random CLAP (unfused) in from_pretrained layout."""
    from clap_helpers.fixtures import make_tiny_clap

    return make_tiny_clap(fixture_env.model)


@pytest.fixture(scope="session")
def tiny_clap_fused(fixture_env):
    """Path of the tiny random CLAP with feature fusion (like laion/clap-htsat-fused)."""
    from clap_helpers.fixtures import make_tiny_clap

    return make_tiny_clap(fixture_env.fused_model, fused=True)
