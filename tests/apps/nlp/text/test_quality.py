"""The default config on the generated reviews: the networks beat the TF-IDF baseline (slow)."""

import json

import pytest

from shared.cli import main


@pytest.mark.slow
def test_default_config_networks_beat_the_baseline(tmp_path):
    sets = ["--set", f"run.root={tmp_path}", "--set", "train.verbose=0"]
    assert main(["nlp", "train", *sets]) == 0
    assert main(["nlp", "evaluate", *sets]) == 0
    metrics = json.loads((tmp_path / "nlp" / "latest" / "metrics.json").read_text())
    baseline = metrics["baseline"]["test"]["accuracy"]
    for name, entry in metrics["networks"].items():
        assert entry["test"]["accuracy"] > baseline + 0.2, name  # word order decides the label
    assert metrics["networks"]["cnn"]["test"]["accuracy"] > 0.95
