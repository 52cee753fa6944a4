"""Serving options on the session's trained smoke run: the IVF index, cold-start items with
genres only, unknown users with stated genres, and the SVD++ implicit term."""

import shutil

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from apps.recsys.config import ModelConfig, ServeConfig
from apps.recsys.data import TowerInputs
from apps.recsys.model import build_item_tower, build_mf
from apps.recsys.pipeline import _cold_items
from apps.recsys.scorer import Recommender, read_preferences
from shared.run import RunDir


def _run(trained) -> RunDir:
    root, _ = trained
    return RunDir((root / "runs" / "recsys" / "latest").resolve())


def test_ivf_probing_every_list_serves_what_brute_force_serves(trained):
    run = _run(trained)
    exact = Recommender(run)
    users = sorted(exact.users_)
    everything = Recommender(run, ServeConfig(index="ivf", ivf_lists=4, ivf_probe=4))
    pd.testing.assert_frame_equal(
        everything.recommend(users, 5).drop(columns="score"),
        exact.recommend(users, 5).drop(columns="score"),
    )
    few = Recommender(run, ServeConfig(index="ivf", ivf_lists=4, ivf_probe=1)).recommend(users, 5)
    known = pd.read_parquet(run.path / "known_items.parquet")
    seen = set(zip(known["user"], known["item"], strict=True))
    assert not any((u, i) in seen for u, i in zip(few["user"], few["item"], strict=True))


def test_unknown_users_with_stated_genres_get_popular_items_of_those_genres(trained, tmp_path):
    run = _run(trained)
    items = pd.read_parquet(run.path / "items.parquet").set_index("item")["genres"]
    users = tmp_path / "users.csv"
    users.write_text("user,genres\nnew-1,Horror|Western\nnew-2,\n")
    preferences = read_preferences(str(users))
    assert preferences == {"new-1": ["Horror", "Western"]}
    recs = Recommender(run).recommend(["new-1", "new-2"], 4, preferences=preferences)
    stated = recs[recs["user"] == "new-1"]
    assert (stated["source"] == "popularity_preferences").all() and len(stated) == 4
    assert all({"Horror", "Western"} & set(items[i].split("|")) for i in stated["item"])
    assert stated["score"].is_monotonic_decreasing
    assert (recs.loc[recs["user"] == "new-2", "source"] == "popularity_fallback").all()


def test_cold_items_get_genre_embeddings_and_can_be_served(trained, tmp_path):
    config = ModelConfig(tower_dim=8, tower_hidden=[8])
    metadata = pd.DataFrame(
        {"item": ["a", "b", "c", "d"], "title": "", "genres": ["Drama", "Drama", "Horror", ""]}
    )
    train = pd.DataFrame({"user": ["u"], "item": ["a"]})
    inputs = TowerInputs(metadata, ["a"], train, config)
    tower = build_item_tower(["a"], len(inputs.genres), config)
    cold = _cold_items(tower, inputs, metadata, ["a"])
    assert cold["items"].tolist() == ["b", "c"]  # "d" has no genres: nothing to embed it by
    b, c = cold["embeddings"]
    assert not np.allclose(b, c) and np.isclose(np.linalg.norm(b), 1.0, atol=1e-5)
    # A run with cold items: recommend may serve them when serve.cold_items is on.
    run = RunDir(tmp_path / "run")
    shutil.copytree(_run(trained).path, run.path)
    embedding = np.full((1, 8), 10.0, np.float32)  # outscores every trained item
    np.savez(run.path / "cold_items.npz", items=np.array(["cold-1"]), embeddings=embedding)
    recommender = Recommender(run, ServeConfig(cold_items=True))
    users = sorted(recommender.users_)[:3]
    recommender.set_embeddings(users=np.ones_like(recommender.user_embeddings_))
    assert (recommender.recommend(users, 3).groupby("user")["item"].first() == "cold-1").all()
    assert "cold-1" not in set(Recommender(run).recommend(users, 3)["item"])


def test_svdpp_adds_each_users_normalised_sum_of_item_factors_and_saves(tmp_path):
    users, items = ["a", "b"], ["x", "y", "z"]
    pairs = (np.array(["a", "a", "b"]), np.array(["x", "z", "y"]))
    model = build_mf(users, items, ModelConfig(mf_dim=3, mf_implicit=True), 3.0, pairs)
    layer = model.get_layer("implicit")
    y = layer.factors.numpy()  # rows: 0 out-of-vocabulary, then x, y, z
    got = np.asarray(layer(tf.constant([1, 2, 0])))
    np.testing.assert_allclose(got, [(y[1] + y[3]) / np.sqrt(2), y[2], np.zeros(3)], atol=1e-6)
    model.save(tmp_path / "mf.keras")
    loaded = keras.saving.load_model(tmp_path / "mf.keras", safe_mode=True)
    pair = {"user": tf.constant(["a", "b"]), "item": tf.constant(["y", "x"])}
    np.testing.assert_allclose(np.asarray(loaded(pair)), np.asarray(model(pair)), atol=1e-6)
    plain = build_mf(users, items, ModelConfig(mf_dim=3), 3.0, pairs)
    assert "implicit" not in [lyr.name for lyr in plain.layers]
