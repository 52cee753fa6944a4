"""The sample generator: seeded, in range, with popularity and genre structure."""

import pytest

from apps.recsys.sample import GENRES, SimulatorConfig, simulate_ratings

SMALL = SimulatorConfig(n_users=80, n_items=60, mean_ratings_per_user=12, seed=5)


def test_same_seed_same_data_and_valid_values():
    ratings, items = simulate_ratings(SMALL)
    again, _ = simulate_ratings(SMALL)
    assert ratings.equals(again)
    assert ratings["rating"].between(1, 5).all()
    assert ratings["rating"].nunique() >= 4
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    assert ratings.groupby("user_id").size().min() >= 5
    assert set(ratings["item_id"]) <= set(items["item_id"])
    assert all(g in GENRES for text in items["genres"] for g in text.split("|"))
    assert ratings.groupby("user_id")["timestamp"].is_monotonic_increasing.all()


def test_popularity_is_skewed():
    ratings, _ = simulate_ratings(SimulatorConfig(n_users=300, n_items=200, seed=1))
    counts = ratings["item_id"].value_counts()
    top_share = counts.iloc[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.2  # the top 10% of items get well over 10% of the ratings


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="at least"):
        simulate_ratings(SimulatorConfig(n_users=1, n_items=5))
