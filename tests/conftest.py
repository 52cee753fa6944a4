"""Test set-up shared by the whole suite: quiet TensorFlow, small thread pools, a temp run root."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture
def run_root(tmp_path):
    """A private runs/ folder for one test."""
    root = tmp_path / "runs"
    root.mkdir()
    return root
