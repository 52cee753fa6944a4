"""The issue's quality bar on the default config and sample data (slow: the full pipeline)."""

import json

import pytest

from tests.apps.recsys.conftest import cli, set_args


@pytest.mark.slow
def test_default_config_beats_the_baselines(tmp_path):
    sets = set_args(
        f"run.root={tmp_path / 'runs'}",
        f"data.path={tmp_path / 'ratings.csv'}",
        f"data.items_path={tmp_path / 'items.csv'}",
        "train.verbose=0",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    report = json.loads((tmp_path / "runs" / "recsys" / "latest" / "metrics.json").read_text())
    rating, retrieval = report["rating"], report["retrieval"]
    assert rating["mf"]["rmse"] < rating["bias_baseline"]["rmse"]
    assert rating["ncf"]["rmse"] < rating["bias_baseline"]["rmse"]
    assert retrieval["two_tower"]["@10"]["recall"] >= 2 * retrieval["popularity"]["@10"]["recall"]
