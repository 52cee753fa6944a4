"""The recsys app end to end on the smoke config, through the command line a user types (the
common artifacts, scoring parity and export parity are the contract's: test_contract.py)."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps.recsys.model import Meta
from apps.recsys.scorer import Recommender, read_users
from shared.io import DataError
from shared.run import RunDir
from tests.apps.recsys.conftest import cli, set_args, smoke_args


def _run(root):
    return root / "runs" / "recsys" / "latest"


def test_run_folder_has_each_networks_model_export_and_plots(trained):
    root, _ = trained
    run = _run(root)
    for name in ("model.keras", "ncf.keras", "retrieval.keras", "catalogue.json"):
        assert (run / name).is_file(), name
    for name in ("known_items.parquet", "items.parquet", "baseline_predictions.npz"):
        assert (run / name).is_file(), name
    for sub in ("rating", "retrieval"):
        assert (run / "saved_model" / sub / "saved_model.pb").is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    for plot in ("rating_errors", "recall_at_k", "history"):
        assert (run / "plots" / f"{plot}.png").stat().st_size > 1000
    history = pd.read_csv(run / "history.csv")
    assert set(history["network"]) == {"mf", "ncf", "two_tower"}


def test_model_meta_says_which_networks_serve_and_what_they_take(trained):
    root, _ = trained
    run = RunDir(_run(root).resolve())
    meta = Meta.read(run)
    assert meta.explicit_ratings and meta.retrieval_model
    assert meta.rating_models == ["mf", "ncf"] and meta.failed == {}
    assert meta.rating_model("ncf") == ("ncf", None)
    assert set(meta.networks) == {"mf", "ncf", "two_tower"}
    assert 1 <= meta.rating_range[0] < meta.rating_range[1] <= 5
    assert meta.items == len(json.loads((run.path / "catalogue.json").read_text()))
    assert meta.input.startswith("rating/ (mf): ") and "retrieval/: " in meta.input
    assert meta.train_seconds > 0 and set(meta.baseline_seconds) == {"bias_baseline", "popularity"}


def test_metrics_report_every_model(trained):
    root, _ = trained
    report = json.loads((_run(root) / "metrics.json").read_text())
    assert set(report["rating"]) == {"bias_baseline", "mf", "ncf"}
    for m in report["rating"].values():
        assert 0 < m["mae"] <= m["rmse"] < 3
    for name in ("two_tower", "popularity"):
        for k in ("@10", "@20"):
            m = report["retrieval"][name][k]
            assert set(m) == {"recall", "ndcg", "map", "hit_rate", "coverage"}
            assert all(0 <= v <= 1 for v in m.values())
        assert (
            report["retrieval"][name]["@20"]["recall"] >= report["retrieval"][name]["@10"]["recall"]
        )
    assert report["data"]["leak_checks"] == "passed"


def test_recommend_excludes_seen_items_and_flags_unknown_users(trained, tmp_path):
    root, sets = trained
    ratings = pd.read_csv(root / "ratings.csv", dtype=str)
    users = ratings["user_id"].unique()[:5].tolist()
    users_file = tmp_path / "users.txt"
    users_file.write_text("user_id\n" + "\n".join(users + ["no-such-user"]) + "\n")
    out = tmp_path / "recs.csv"
    assert (
        cli("recommend", *sets, "--users", str(users_file), "--k", "4", "--output", str(out)) == 0
    )
    recs = pd.read_csv(out, dtype={"user": str, "item": str})
    assert recs.columns.tolist() == ["user", "rank", "item", "title", "score", "source"]
    assert recs["user"].unique().tolist() == users + ["no-such-user"]
    assert (recs.groupby("user").size() == 4).all()
    seen = set(zip(ratings["user_id"], ratings["item_id"], strict=True))
    known = recs[recs["source"] == "two_tower"]
    assert len(known) == 20
    assert not any((u, i) in seen for u, i in zip(known["user"], known["item"], strict=True))
    fallback = recs[recs["user"] == "no-such-user"]
    assert (fallback["source"] == "popularity_fallback").all()
    meta = Meta.read(RunDir(_run(root)))
    assert fallback["item"].tolist() == [str(i) for i in meta.popularity["items"][:4]]
    assert (fallback["title"] != "").all()
    assert (known.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_recommender_and_trained_export_rank_by_the_towers_dot_products(trained):
    """The Recommender ranks each user's unseen items by the towers' dot products, and the
    SavedModel that train wrote serves the retrieval model's top-K items."""
    root, _ = trained
    run = RunDir(_run(root).resolve())
    recommender = Recommender(run)
    users = sorted(recommender.users_)[:6]
    recs = recommender.recommend(users, 5)
    model = keras.saving.load_model(run.path / "retrieval.keras", safe_mode=True)
    queries = np.asarray(model.get_layer("user_tower")(tf.constant(users)))
    candidates = np.asarray(model.get_layer("index").candidate_embeddings)
    catalogue = json.loads((run.path / "catalogue.json").read_text())
    known = pd.read_parquet(run.path / "known_items.parquet").groupby("user")["item"].agg(set)
    for n, user in enumerate(users):
        scores = candidates @ queries[n]
        fresh = [
            r
            for r in np.argsort(-scores, kind="stable")
            if catalogue[r] not in known.get(user, set())
        ]
        got = recs[recs["user"] == user]
        # Compared by score: near-ties may order differently in NumPy and TensorFlow.
        np.testing.assert_allclose(got["score"], scores[fresh[:5]], atol=1e-5)
        assert not set(got["item"]) & known.get(user, set())
        by_item = dict(zip(catalogue, scores, strict=True))
        np.testing.assert_allclose([by_item[i] for i in got["item"]], got["score"], atol=1e-5)
    exported = tf.saved_model.load(str(run.path / "saved_model" / "retrieval"))
    served = exported.serve(tf.constant(users))
    assert (
        np.asarray(served["items"]).tolist()
        == np.asarray(model(tf.constant(users))["items"]).tolist()
    )


def test_score_predicts_ratings_and_rejects_unknown_ids(trained, tmp_path):
    root, sets = trained
    ratings = pd.read_csv(root / "ratings.csv", dtype=str)
    user, item = ratings.iloc[0]["user_id"], ratings.iloc[0]["item_id"]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"user_id,item_id\n{user},{item}\nghost,{item}\n{user},ghost-item\n,{item}\n")
    out = tmp_path / "scored.csv"
    assert cli("score", *sets, "--input", str(pairs), "--output", str(out)) == 0
    scored = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "scored.rejects.csv")
    assert len(scored) + len(rejects) == 4
    assert scored["row"].tolist() == [1]
    assert scored["predicted_rating"].between(1, 5).all()  # ratings are clipped to the scale
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert "unknown user 'ghost'" in reasons[2]
    assert "unknown item 'ghost-item'" in reasons[3]
    assert "missing id" in reasons[4]


def test_bad_input_is_one_line_of_error(trained, tmp_path, capsys):
    root, sets = trained
    empty = tmp_path / "empty.txt"
    empty.write_text("user_id\n")
    assert cli("recommend", *sets, "--users", str(empty)) == 2
    assert cli("recommend", *sets, "--users", "1", "--k", "0") == 2
    assert cli("recommend", *sets, "--users", "1", "--run", str(tmp_path / "none")) == 2
    assert cli("train", *sets, "--set", "data.rating_split=given") == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("user,thing\n1,2\n")
    assert cli("score", *sets, "--input", str(bad)) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 5 and "Traceback" not in err
    with pytest.raises(DataError, match="empty user id"):
        read_users("1,,2")


def test_movielens_folder_and_given_split(tmp_path, capsys):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = [
        f"{u}\t{i}\t{rng.integers(1, 6)}\t{880000000 + 1000 * u + i}"
        for u in range(1, 13)
        for i in rng.choice(np.arange(1, 21), 8, replace=False)
    ]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u1.base").write_text("\n".join(lines[:80]) + "\n")
    (folder / "u1.test").write_text("\n".join(lines[80:]) + "\n")  # users 11, 12 only
    genres = "|".join(["0"] * 18 + ["1"])
    (folder / "u.item").write_bytes(
        "".join(
            f"{i}|Film {i} (199{i % 10})|01-Jan-1995||http://x|{genres}\n" for i in range(1, 21)
        ).encode("latin-1")
    )
    base = smoke_args(
        f"run.root={tmp_path / 'runs'}",
        "data.source=file",
        "data.layout=movielens",
        "data.items_path=null",
    )
    assert cli("prepare", *base, "--set", f"data.path={folder}") == 0
    given = set_args(
        f"data.path={folder / 'u1.base'}",
        "data.rating_split=given",
        f"data.test_path={folder / 'u1.test'}",
    )
    # No test user is in the base file: nothing to measure, said in one line.
    assert cli("prepare", *base, *given) == 2
    assert "no test rating has a user and an item" in capsys.readouterr().err
    (folder / "u1.base").write_text("\n".join(lines[n] for n in range(96) if n % 6) + "\n")
    (folder / "u1.test").write_text("\n".join(lines[::6]) + "\n")  # every user's 1st, 7th
    assert cli("prepare", *base, *given) == 0
    info = [
        json.loads(p.read_text())
        for p in (tmp_path / "runs" / "recsys" / "prepared").glob("*/prepare.json")
    ]
    by_source = {Path(i["source"]).name: i for i in info}
    assert by_source["u.data"]["rows"] == 96 and by_source["u.data"]["items_source"].endswith(
        "u.item"
    )
    assert by_source["u1.base"]["rating_split"]["test"] == 16
    assert (
        by_source["u1.base"]["rating_split"]["train"] + by_source["u1.base"]["rating_split"]["val"]
        == 80
    )


def test_implicit_interactions_train_retrieval_only(trained, tmp_path):
    root, _ = trained
    sets = smoke_args(
        f"run.root={tmp_path / 'runs'}",
        "data.source=file",
        f"data.path={root / 'ratings.csv'}",
        "data.items_path=null",
        "data.rating=null",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    report = json.loads((tmp_path / "runs" / "recsys" / "latest" / "metrics.json").read_text())
    assert report["rating"] == {} and "two_tower" in report["retrieval"]
    out = tmp_path / "recs.csv"
    assert cli("recommend", *sets, "--users", "1,2", "--output", str(out)) == 0
    assert "title" not in pd.read_csv(out).columns
    # Implicit data has no rating model: score gives each pair's two-tower score instead.
    pairs, scored = tmp_path / "pairs.csv", tmp_path / "scored.csv"
    ratings = pd.read_csv(root / "ratings.csv", dtype=str)
    ratings[["user_id", "item_id"]].head(40).to_csv(pairs, index=False)
    assert cli("score", *sets, "--input", str(pairs), "--output", str(scored)) == 0
    frame = pd.read_csv(scored)
    assert frame.columns.tolist() == ["row", "user_id", "item_id", "score"]
    assert len(frame) + len(pd.read_csv(tmp_path / "scored.rejects.csv")) == 40
    assert len(frame) > 20  # pairs of the retrieval test split have unknown items at most
    assert np.isfinite(frame["score"]).all() and frame["score"].abs().max() <= 1.0001


def test_mixed_precision_and_xla_train_on_cpu(tmp_path, swap_in_float32_twin):
    sets = smoke_args(
        f"run.root={tmp_path / 'runs'}",
        f"data.path={tmp_path / 'ratings.csv'}",
        f"data.items_path={tmp_path / 'items.csv'}",
        "train.mixed_precision=true",
        "train.xla=true",
    )
    try:
        assert cli("train", *sets) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = tmp_path / "runs" / "recsys" / "latest"
    meta = Meta.read(RunDir(run))
    assert meta.precision_policy == "mixed_bfloat16"
    # The id lookups ran in tf.data, so XLA compiled every network's train step.
    assert meta.xla_compiled == {"mf": True, "ncf": True, "two_tower": True}
    history = pd.read_csv(run / "history.csv")
    assert set(history["network"]) >= {"mf", "two_tower"}
    assert np.isfinite(history["loss"]).all()
    # Mixed-precision NCF ratings and retrieval scores agree with float32 math on the same
    # weights within 0.05 stars and 0.05 (bfloat16 keeps about 3 significant digits; MF is
    # float32 throughout).
    pairs = tmp_path / "pairs.csv"
    ratings = pd.read_csv(tmp_path / "ratings.csv", dtype=str)
    ratings[["user_id", "item_id"]].head(50).to_csv(pairs, index=False)
    score = ["score", *sets, "--set", "serve.rating_model=ncf", "--input", str(pairs)]
    recommend = ["recommend", *sets, "--users", ",".join(ratings["user_id"].unique()[:10])]
    out = {}
    for name in ("mixed", "float32"):
        out[name] = (tmp_path / f"{name}-pairs.csv", tmp_path / f"{name}-recs.csv")
        assert cli(*score, "--output", str(out[name][0])) == 0
        assert cli(*recommend, "--output", str(out[name][1])) == 0
        if name == "mixed":
            swap_in_float32_twin(run / "ncf.keras")
            swap_in_float32_twin(run / "retrieval.keras")
    (mixed, exact), (mixed_recs, exact_recs) = (
        [pd.read_csv(out[n][i]) for n in ("mixed", "float32")] for i in (0, 1)
    )
    assert len(mixed) > 0 and not np.array_equal(
        mixed["predicted_rating"], exact["predicted_rating"]
    )
    np.testing.assert_allclose(mixed["predicted_rating"], exact["predicted_rating"], atol=0.05)
    known = mixed_recs["source"] != "popularity"
    assert known.any()
    top1 = [frame[known].groupby("user")["score"].max() for frame in (mixed_recs, exact_recs)]
    np.testing.assert_allclose(top1[0], top1[1], atol=0.05)
