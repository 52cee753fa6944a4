"""The published layouts end to end on tiny files written exactly as published: ml-100k's
u1.base/u1.test pair, ml-latest-small's ratings.csv, HetRec Last.fm's user_artists.dat, and a
generic interactions file with a split column."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.apps.recsys.conftest import cli, smoke_args


def _base(tmp_path, *sets):
    """A smoke run under tmp_path on files (no generated sample, no item metadata) with
    `sets` ("key=value") as further overrides."""
    root = f"run.root={tmp_path / 'runs'}"
    return smoke_args(root, "data.source=file", "data.items_path=null", *sets)


def _latest(tmp_path):
    return tmp_path / "runs" / "recsys" / "latest"


def _prepare_info(tmp_path) -> dict:
    (info,) = (tmp_path / "runs" / "recsys" / "prepared").glob("*/prepare.json")
    return json.loads(info.read_text())


def _ratings(n_users=30, per_user=12, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (u, int(i), int(rng.integers(1, 6)), 880000000 + 1000 * u + int(i))
        for u in range(1, n_users + 1)
        for i in rng.choice(np.arange(1, n_items + 1), per_user, replace=False)
    ]


def _tab_lines(rows) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)


@pytest.fixture(scope="module")
def given_run(tmp_path_factory):
    """u1.base/u1.test (tab, no header): 3 of each user's ratings in the test file, plus a test
    row of an unknown user, one of an unknown item and one pair that is also in the base file."""
    tmp_path = tmp_path_factory.mktemp("given")
    rows = _ratings()
    test = [r for n, r in enumerate(rows) if n % 12 < 3]
    base = [r for n, r in enumerate(rows) if n % 12 >= 3]
    extra = [(999, 1, 5, 890000000), (1, 777, 4, 890000000), (base[0][0], base[0][1], 1, 1)]
    (tmp_path / "u1.base").write_text(_tab_lines(base))
    (tmp_path / "u1.test").write_text(_tab_lines(test + extra))
    sets = _base(
        tmp_path,
        "data.layout=movielens",
        f"data.path={tmp_path / 'u1.base'}",
        "data.rating_split=given",
        f"data.test_path={tmp_path / 'u1.test'}",
        "evaluate.relevant_min_rating=4",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    report = json.loads((_latest(tmp_path) / "metrics.json").read_text())
    return tmp_path, sets, base, test + extra, report


def test_given_split_validates_on_the_base_file_and_tests_on_the_test_file(given_run):
    tmp_path, _, base, test, report = given_run
    info = _prepare_info(tmp_path)
    split = info["rating_split"]
    assert split["train"] + split["val"] == len(base) and split["val"] > 0
    assert split["test"] == len(test) - 1  # the pair also in the base file is set aside
    retrieval = info["retrieval_split"]
    assert retrieval["test"] == len(test) - 1 and retrieval["val"] > 0
    (rejects,) = (tmp_path / "runs" / "recsys" / "prepared").glob("*/rejects.csv")
    assert "pair also in the base file" in pd.read_csv(rejects)["reason"].item()
    history = pd.read_csv(_latest(tmp_path) / "history.csv")
    assert set(history["network"]) == {"mf", "ncf", "two_tower"}


def test_given_test_rows_with_unknown_ids_are_counted_and_land_in_the_score_rejects(given_run):
    tmp_path, sets, _, test, report = given_run
    pairs = report["rating_pairs"]
    assert pairs["test_rows"] == len(test) - 1
    assert pairs["test_user_or_item_not_in_training"] >= 2
    assert pairs["test_scored"] + pairs["test_user_or_item_not_in_training"] == pairs["test_rows"]
    assert report["test_input"] == "test_split.csv"
    test_split = _latest(tmp_path) / "test_split.csv"
    assert pd.read_csv(test_split).columns.tolist() == ["user_id", "item_id"]
    out = tmp_path / "scored.csv"
    assert cli("score", *sets, "--input", str(test_split), "--output", str(out)) == 0
    scored, rejects = pd.read_csv(out), pd.read_csv(tmp_path / "scored.rejects.csv")
    assert len(scored) == pairs["test_scored"]
    assert len(rejects) == pairs["test_user_or_item_not_in_training"]
    assert rejects["reason"].str.contains("unknown user '999'").any()
    assert rejects["reason"].str.contains("unknown item '777'").any()
    assert np.isfinite(scored["predicted_rating"]).all()


def test_top_k_on_the_given_test_file_follows_the_relevance_rule(given_run):
    _, _, _, test, report = given_run
    held = report["retrieval_held_out"]["test"]
    assert held["held_out"] == len(test) - 1 and held["user_not_in_training"] == 1
    assert held["rated_below_relevant_min_rating"] > 0
    assert (
        held["relevant"]
        + held["rated_below_relevant_min_rating"]
        + held["user_not_in_training"]
        + held["item_not_in_training_catalogue"]
        == held["held_out"]
    )
    assert "rated at least 4" in report["retrieval_held_out"]["relevance"]
    assert report["retrieval"]["two_tower"]["users"] <= 30


def test_leaderboards_and_the_card_show_every_model_beside_its_baseline(given_run):
    tmp_path, _, _, _, report = given_run
    rating, retrieval = report["leaderboard"]["rating"], report["leaderboard"]["retrieval"]
    assert rating["metric"] == "rmse" and rating["history_column"] == "val_rmse"
    assert set(rating["models"]) == {"mf", "ncf", "bias_baseline"}
    assert rating["selected"] == "mf" and rating["best_baseline"] == "bias_baseline"
    for entry in rating["models"].values():
        assert set(entry["test"]) == {"rmse", "mae"} and entry["train_seconds"] is not None
    assert retrieval["metric"] == "recall@10" and retrieval["history_column"] == "val_recall@10"
    assert set(retrieval["models"]) == {"two_tower", "popularity", "item_knn"}
    assert set(retrieval["models"]["item_knn"]["test"]) == {"recall@10", "ndcg@10"}
    assert set(retrieval["models"]["two_tower"]["test"]) == {"recall@10", "ndcg@10"}
    assert "time_to_baseline_s" in retrieval["models"]["two_tower"]
    history = pd.read_csv(_latest(tmp_path) / "history-two_tower.csv")
    assert history["val_recall@10"].between(0, 1).all()
    best = retrieval["models"]["two_tower"]["validation"]["recall@10"]
    assert best == pytest.approx(history["val_recall@10"].max(), abs=1e-6)
    card = (_latest(tmp_path) / "model_card.md").read_text()
    assert "Leaderboard: rating prediction (RMSE)" in card and "bias_baseline (baseline)" in card
    assert "Leaderboard: retrieval (Recall@10)" in card and "popularity (baseline)" in card
    assert "item_knn (baseline)" in card and "Approximate index (serve.index=ivf)" in card


def test_ml_latest_small_ratings_csv_keeps_leave_last_out_in_time(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    rows = _ratings(n_users=20, per_user=10)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{i},{r - 0.5 * (i % 2)},{t}\n" for u, i, r, t in rows)
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(f'{i},"Film, The ({1990 + i})",Comedy|Drama\n' for i in range(1, 41))
    )
    # Tags: movies 41 and 42 have tags but neither ratings nor a movies.csv row (cold start).
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,3,Noir,1\n2,41,noir,2\n3,42,Noir,3\n4,5,once,4\n"
    )
    sets = _base(tmp_path, "data.layout=movielens", f"data.path={folder}")
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    info = _prepare_info(tmp_path)
    assert info["retrieval_holdout"] == "time" and info["items_source"].endswith("movies.csv")
    assert info["tags_source"].endswith("tags.csv")
    with np.load(_latest(tmp_path) / "cold_items.npz", allow_pickle=False) as cold:
        assert {"41", "42"} <= set(cold["items"].tolist())
    assert info["rows"] == 200 and info["retrieval_split"]["test"] == 40  # 2 per user
    report = json.loads((_latest(tmp_path) / "metrics.json").read_text())
    assert set(report["leaderboard"]) == {"rating", "retrieval"}


def _write_lastfm(folder, n_users=40, per_user=12, n_artists=60):
    rng = np.random.default_rng(1)
    lines = ["userID\tartistID\tweight"]
    for u in range(2, n_users + 2):
        for a in sorted(rng.choice(np.arange(1, n_artists + 1), per_user, replace=False)):
            lines.append(f"{u}\t{a}\t{int(rng.integers(1, 20000))}")
    (folder / "user_artists.dat").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    names = "".join(f"{a}\tArtist {a}\thttp://www.last.fm/music/{a}\t\n" for a in range(2, 61))
    (folder / "artists.dat").write_text(
        'id\tname\turl\tpictureURL\n1\t"Weird Al" Yankovic\thttp://x\t\n' + names
    )


def test_lastfm_user_artists_dat_trains_retrieval_only_on_a_random_holdout(tmp_path):
    _write_lastfm(tmp_path)
    sets = _base(
        tmp_path,
        f"data.path={tmp_path / 'user_artists.dat'}",
        "data.user=userID",
        "data.item=artistID",
        "data.rating=null",
        "data.timestamp=null",
        f"data.items_path={tmp_path / 'artists.dat'}",
        "data.items_id=id",
        "data.title=name",
        "data.genres=null",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    info = _prepare_info(tmp_path)
    assert info["rows"] == 480 and not info["explicit_ratings"]
    assert info["retrieval_holdout"] == "random" and info["retrieval_split"]["test"] == 80
    run = _latest(tmp_path)
    assert not (run / "model.keras").exists() and not (run / "ncf.keras").exists()
    report = json.loads((run / "metrics.json").read_text())
    assert set(report["leaderboard"]) == {"retrieval"} and report["rating"] == {}
    test_pairs = pd.read_csv(run / report["test_input"])
    assert test_pairs.columns.tolist() == ["userID", "artistID"] and len(test_pairs) == 80
    out = tmp_path / "scored.csv"
    assert cli("score", *sets, "--input", str(run / "test_split.csv"), "--output", str(out)) == 0
    scored, rejects = pd.read_csv(out), pd.read_csv(tmp_path / "scored.rejects.csv")
    assert len(scored) + len(rejects) == 80 and scored["score"].between(-1.001, 1.001).all()
    recs = tmp_path / "recs.csv"
    assert cli("recommend", *sets, "--users", "2,3", "--output", str(recs)) == 0
    recommended = pd.read_csv(recs)
    assert len(recommended) == 20 and (recommended["source"] == "two_tower").all()
    assert recommended["title"].notna().all()  # names from artists.dat


def _write_split_column_file(path, values):
    rows = _ratings(n_users=24, per_user=10)
    lines = ["user_id,item_id,rating,timestamp,part"]
    lines += [f"{u},{i},{r},{t},{values[n % len(values)]}" for n, (u, i, r, t) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return rows


def test_split_column_gives_every_rows_split(tmp_path):
    path = tmp_path / "events.csv"
    rows = _write_split_column_file(path, ["train"] * 6 + ["dev", "dev", "test", "test"])
    sets = _base(
        tmp_path,
        f"data.path={path}",
        "data.rating_split=given",
        "data.split_column=part",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    info = _prepare_info(tmp_path)
    n = len(rows)
    assert info["rating_split"] == {"train": 0.6 * n, "val": 0.2 * n, "test": 0.2 * n}
    assert info["retrieval_split"] == info["rating_split"]


def test_unknown_split_value_and_bad_given_split_config_are_one_line(tmp_path, capsys):
    path = tmp_path / "events.csv"
    _write_split_column_file(path, ["train", "train", "holdout"])
    sets = _base(tmp_path, f"data.path={path}")
    given = ["--set", "data.rating_split=given", "--set", "data.split_column=part"]
    assert cli("train", *sets, *given) == 2
    assert cli("train", *sets, "--set", "data.split_column=part") == 2  # needs given
    assert cli("train", *sets, "--set", "data.rating_split=given") == 2  # needs a test set
    layout = ["--set", "data.layout=movielens", *given]
    assert cli("train", *sets, *layout) == 2
    rating = ["--set", "data.rating=null", "--set", "evaluate.relevant_min_rating=4"]
    assert cli("train", *sets, *rating) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 5 and "Traceback" not in err
    assert "unknown split value(s) 'holdout'" in err
    assert not (tmp_path / "runs" / "recsys" / "latest").exists()
