"""Ranking and rating metrics on a hand-computed example."""

import math

import keras_rs
import numpy as np
import pytest

from apps.recsys.metrics import (
    ranking_metrics,
    rating_metrics,
    recall_at_k,
    recall_curve,
    top_k,
)


def test_rating_metrics():
    m = rating_metrics([1, 2, 3, 4], [2, 2, 3, 2])
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 0 + 4) / 4))
    assert m["mae"] == pytest.approx(0.75)


def test_ranking_metrics_hand_computed():
    # One user, five items ranked 0..4 by score; item 0 is a training item (excluded),
    # items 1 and 3 are held out. Ranking after exclusion: 1, 2, 3, 4.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    relevant = np.array([[False, True, False, True, False]])
    exclude = np.array([[True, False, False, False, False]])
    m = ranking_metrics(scores, relevant, exclude, [2, 3])
    at2, at3 = m["@2"], m["@3"]
    assert at2["recall"] == pytest.approx(0.5)
    assert at3["recall"] == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert at2["ndcg"] == pytest.approx(1 / ideal, rel=1e-5)
    assert at3["ndcg"] == pytest.approx((1 + 1 / math.log2(4)) / ideal, rel=1e-5)
    # AP@3: precision 1/1 at rank 1, 2/3 at rank 3, over 2 relevant items.
    assert at2["map"] == pytest.approx(0.5, rel=1e-5)
    assert at3["map"] == pytest.approx((1 + 2 / 3) / 2, rel=1e-5)
    assert at2["hit_rate"] == 1.0
    assert at2["coverage"] == pytest.approx(2 / 5)


def test_users_without_held_out_items_are_left_out_and_averaged():
    scores = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.1, 0.2, 0.3]])
    relevant = np.array([[True, False, False], [False, False, True], [False, False, False]])
    exclude = np.zeros_like(relevant)
    m = ranking_metrics(scores, relevant, exclude, [1])
    assert m["users"] == 2
    assert m["@1"]["recall"] == pytest.approx(0.5)
    assert m["@1"]["hit_rate"] == pytest.approx(0.5)
    assert recall_curve(scores, relevant, exclude, 3).tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_top_k_never_returns_excluded_items():
    scores = np.array([[5.0, 4.0, 3.0, 2.0]])
    exclude = np.array([[True, False, True, False]])
    assert top_k(scores, exclude, 2).tolist() == [[1, 3]]


def _random_task(seed: int, users: int = 120, items: int = 200):
    rng = np.random.default_rng(seed)
    scores = rng.random((users, items)).astype(np.float32)
    relevant = rng.random((users, items)) < 0.03
    exclude = rng.random((users, items)) < 0.3  # some relevant items excluded too
    return scores, relevant, exclude


@pytest.mark.parametrize("seed", [0, 1])
def test_ranking_metrics_on_top_lists_equal_keras_rs_on_the_full_lists(seed):
    """keras-rs on each user's top items plus their relevant items gives the same numbers as
    keras-rs on every item (the evaluation feeds it the short lists: 50x faster)."""
    scores, relevant, exclude = _random_task(seed)
    fast = ranking_metrics(scores, relevant, exclude, [5, 10, 20])
    keep = relevant.any(axis=1)
    y_true = {"labels": relevant[keep].astype(np.float32), "mask": ~exclude[keep]}
    for k in (5, 10, 20):
        for name, metric in (
            ("recall", keras_rs.metrics.RecallAtK(k=k, shuffle_ties=False)),
            ("ndcg", keras_rs.metrics.NDCG(k=k, shuffle_ties=False)),
            ("map", keras_rs.metrics.MeanAveragePrecision(k=k, shuffle_ties=False)),
        ):
            metric.update_state(y_true, scores[keep])
            assert fast[f"@{k}"][name] == pytest.approx(float(metric.result()), abs=1e-6)


def test_numpy_recall_at_k_equals_keras_rs_recall():
    scores, relevant, exclude = _random_task(3)
    expected = ranking_metrics(scores, relevant, exclude, [10])["@10"]["recall"]
    assert recall_at_k(scores, relevant, exclude, 10) == pytest.approx(expected, abs=1e-6)
    assert recall_at_k(scores, np.zeros_like(relevant), exclude, 10) == 0.0
