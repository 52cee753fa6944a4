"""The issue's quality bar on the default config and sample data (slow: the full pipeline)."""

import json

import pytest

from shared.cli import main


@pytest.mark.slow
def test_default_config_beats_the_baselines(tmp_path):
    sets = [
        "--set", f"run.root={tmp_path / 'runs'}",
        "--set", f"data.path={tmp_path / 'ratings.csv'}",
        "--set", f"data.items_path={tmp_path / 'items.csv'}",
        "--set", "train.verbose=0",
    ]  # fmt: skip
    assert main(["recsys", "train", *sets]) == 0
    assert main(["recsys", "evaluate", *sets]) == 0
    report = json.loads((tmp_path / "runs" / "recsys" / "latest" / "metrics.json").read_text())
    rating, retrieval = report["rating"], report["retrieval"]
    assert rating["mf"]["rmse"] < rating["bias_baseline"]["rmse"]
    assert rating["ncf"]["rmse"] < rating["bias_baseline"]["rmse"]
    assert retrieval["two_tower"]["@10"]["recall"] >= 2 * retrieval["popularity"]["@10"]["recall"]
