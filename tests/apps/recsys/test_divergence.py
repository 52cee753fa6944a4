"""Networks that really diverge on the smoke config: each is marked failed, never served, and
the run says so; a run whose every network failed exits 1 and never becomes `latest`."""

import json

import numpy as np
import pandas as pd
import pytest

from apps.recsys.scorer import Recommender
from shared.run import RunDir
from tests.apps.recsys.conftest import cli, set_args, smoke_args

RATING_LR = set_args("train.learning_rate=1000")  # MF and NCF explode past 1000x their loss
MF_ONLY = set_args("model.mf_l2=1e38")  # MF's penalty overflows to inf: NaN loss, MF only
# The two-tower logits are cosines over a temperature, so its loss cannot explode and Adam's
# bounded steps keep its weights finite at any rate; a decoupled weight decay of rate x decay
# = 1000 per step multiplies the weights by -999 each step, which overflows to NaN.
TOWER = set_args("model.retrieval_learning_rate=1000", "train.weight_decay=1")


@pytest.fixture
def sets(tmp_path):
    return smoke_args(
        f"run.root={tmp_path / 'runs'}",
        f"data.path={tmp_path / 'ratings.csv'}",
        f"data.items_path={tmp_path / 'items.csv'}",
    )


def _latest(tmp_path):
    return tmp_path / "runs" / "recsys" / "latest"


def _metrics(tmp_path) -> dict:
    return json.loads((_latest(tmp_path) / "metrics.json").read_text())


def test_rating_networks_at_rate_1000_fail_and_the_run_ships_retrieval(tmp_path, sets, capsys):
    assert cli("train", *sets, *RATING_LR) == 0
    out = capsys.readouterr().out
    assert "mf diverged" in out and "ncf diverged" in out
    assert "mf, ncf failed and will not be served; the run ships two_tower" in out
    run = _latest(tmp_path)
    for name in ("mf", "ncf"):
        assert json.loads((run / "checkpoints" / f"{name}.json").read_text())["status"] == "failed"
        assert not (run / ("model.keras" if name == "mf" else f"{name}.keras")).exists()
    assert cli("evaluate", *sets, *RATING_LR) == 0
    report = _metrics(tmp_path)
    board = report["leaderboard"]["rating"]
    assert board["selected"] is None
    assert board["models"]["mf"]["status"] == "failed"
    assert "diverged" in board["models"]["ncf"]["reason"]
    assert board["models"]["bias_baseline"]["status"] == "ok"
    assert set(report["failed_networks"]) == {"mf", "ncf"}
    card = (run / "model_card.md").read_text()
    assert "`mf` **failed**" in card and "Failed networks" in card
    pairs = pd.read_csv(tmp_path / "ratings.csv", dtype=str)[["user_id", "item_id"]].head(3)
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    capsys.readouterr()
    assert cli("score", *sets, *RATING_LR, "--input", str(tmp_path / "pairs.csv")) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "every rating model failed" in err
    assert cli("recommend", *sets, *RATING_LR, "--users", "1,2") == 0


def test_a_failed_mf_falls_back_to_ncf_for_score_and_export(tmp_path, sets, capsys):
    assert cli("train", *sets, *MF_ONLY) == 0
    assert "mf diverged: non-finite loss" in capsys.readouterr().out
    assert cli("evaluate", *sets, *MF_ONLY) == 0
    board = _metrics(tmp_path)["leaderboard"]["rating"]
    assert board["selected"] == "ncf" and board["models"]["mf"]["status"] == "failed"
    assert board["models"]["ncf"]["status"] == "ok"
    pairs = pd.read_csv(tmp_path / "ratings.csv", dtype=str)[["user_id", "item_id"]].head(5)
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "scored.csv"
    pairs_args = ["--input", str(tmp_path / "pairs.csv"), "--output", str(out)]
    assert cli("score", *sets, *MF_ONLY, *pairs_args) == 0
    assert "failed in this run" in capsys.readouterr().out
    assert np.isfinite(pd.read_csv(out)["predicted_rating"]).all()
    assert (_latest(tmp_path) / "saved_model" / "rating" / "saved_model.pb").is_file()


def test_a_failed_two_tower_is_said_and_recommend_refuses_in_one_line(tmp_path, sets, capsys):
    assert cli("train", *sets, *TOWER) == 0
    assert "two_tower diverged" in capsys.readouterr().out
    run = _latest(tmp_path)
    assert not (run / "retrieval.keras").exists()
    assert not (run / "saved_model" / "retrieval").exists()
    assert cli("evaluate", *sets, *TOWER) == 0
    board = _metrics(tmp_path)["leaderboard"]["retrieval"]
    assert board["selected"] is None and board["models"]["two_tower"]["status"] == "failed"
    assert board["models"]["popularity"]["test"]["recall@10"] >= 0
    capsys.readouterr()
    assert cli("recommend", *sets, *TOWER, "--users", "1") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "two-tower retrieval model failed" in err


def test_every_network_failed_exits_1_and_never_becomes_latest(tmp_path, sets, capsys):
    assert cli("train", *sets, *RATING_LR, *TOWER) == 1
    err = capsys.readouterr().err
    assert "every network failed" in err and "Traceback" not in err
    assert not _latest(tmp_path).exists()
    (run,) = [p for p in (tmp_path / "runs" / "recsys").iterdir() if p.name != "prepared"]
    report = json.loads((run / "metrics.json").read_text())
    assert report["status"] == "failed" and set(report["failed_networks"]) == {
        "mf",
        "ncf",
        "two_tower",
    }
    assert not (run / "FINISHED").exists()


def test_recommend_never_serves_a_non_finite_score(tmp_path, sets):
    assert cli("train", *sets) == 0
    recommender = Recommender(RunDir(_latest(tmp_path).resolve()))
    embeddings = recommender.item_embeddings_.copy()
    users = sorted(recommender.users_)[:8]
    broken = embeddings.copy()
    broken[::2] = np.nan  # half the catalogue scores NaN for every user
    recommender.set_embeddings(items=broken)
    recs = recommender.recommend(users, 5)
    assert np.isfinite(recs["score"]).all() and (recs["source"] == "two_tower").all()
    nan_items = set(recommender.catalogue[::2])
    assert not set(recs["item"]) & nan_items
    recommender.set_embeddings(items=np.full_like(embeddings, np.nan))  # nothing finite at all
    recs = recommender.recommend(users, 5)
    assert np.isfinite(recs["score"]).all() and recommender.non_finite_users_ == len(users)
    assert (recs["source"] == "popularity_fallback").all()
    assert set(recs["user"]) == set(users)
    known = pd.read_parquet(_latest(tmp_path) / "known_items.parquet")
    seen = set(zip(known["user"], known["item"], strict=True))
    assert not any((u, i) in seen for u, i in zip(recs["user"], recs["item"], strict=True))
