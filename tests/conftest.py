"""Session-wide fixtures: the synthetic datasets and the tiny CLAP, built once per test run."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Folder holding all four fixture datasets in their real layouts (read-only for tests)."""
    from clap_helpers.fixtures import make_datasets

    root = tmp_path_factory.mktemp("data")
    make_datasets(root)
    return root


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory):
    """Path of the tiny random CLAP (unfused) in from_pretrained layout."""
    from clap_helpers.fixtures import make_tiny_clap

    return make_tiny_clap(tmp_path_factory.mktemp("models") / "tiny-clap")


@pytest.fixture(scope="session")
def tiny_clap_fused(tmp_path_factory):
    """Path of the tiny random CLAP with feature fusion (like laion/clap-htsat-fused)."""
    from clap_helpers.fixtures import make_tiny_clap

    return make_tiny_clap(tmp_path_factory.mktemp("models") / "tiny-clap-fused", fused=True)
