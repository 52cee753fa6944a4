"""The issue's quality target on the default config: >= 95% test accuracy on unseen voices."""

import json

import pytest

from shared.cli import main


@pytest.mark.slow
def test_default_cnn_reaches_95_percent_on_unseen_speakers(tmp_path):
    sets = ["--set", f"run.root={tmp_path}", "--set", "train.verbose=0"]
    for step in ("prepare", "train", "evaluate"):
        assert main(["speech", step, *sets]) == 0
    metrics = json.loads((tmp_path / "speech" / "latest" / "metrics.json").read_text())
    assert metrics["speaker_disjoint"]
    assert metrics["test"]["accuracy"] >= 0.95
    assert metrics["test"]["macro_f1"] >= 0.95
