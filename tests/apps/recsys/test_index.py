"""Top-K with seen items excluded inside the computation, the IVF index, item-kNN and the
surprise baseline's missing-package row."""

import sys

import numpy as np
import pandas as pd

from apps.recsys import baselines
from apps.recsys.index import IVFIndex, SeenItems, batched_top_k, exact_top_k, ivf_recall


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_seen_cells_are_every_users_items_in_batch_order():
    seen = SeenItems(np.array([2, 0, 2, 0]), np.array([5, 1, 3, 1]), n_users=3)
    batch, cols = seen.cells(np.array([2, 1, 0]))
    assert list(zip(batch.tolist(), cols.tolist(), strict=True)) == [(0, 3), (0, 5), (2, 1)]
    assert seen.of(1).tolist() == []


def test_exact_top_k_never_returns_a_seen_item_and_matches_a_full_sort():
    rng = np.random.default_rng(0)
    queries, items = _unit(rng, 20, 8), _unit(rng, 50, 8)
    user_rows, item_cols = np.repeat(np.arange(20), 10), rng.integers(0, 50, 200)
    seen = SeenItems(user_rows, item_cols, 20)
    rows = np.arange(20)
    cols, scores = exact_top_k(queries, items, rows, seen, 5)
    for n in range(20):
        full = queries[n] @ items.T
        unseen = [c for c in np.argsort(-full, kind="stable") if c not in set(seen.of(n))]
        assert cols[n].tolist() == unseen[:5]
        np.testing.assert_allclose(scores[n], full[unseen[:5]], rtol=1e-6)
    batched, _ = batched_top_k(queries, items, rows, seen, 5, batch_size=3)
    assert (batched == cols).all()


def test_ivf_probing_every_list_is_brute_force_and_fewer_lists_stay_close():
    rng = np.random.default_rng(1)
    queries, items = _unit(rng, 40, 8), _unit(rng, 400, 8)
    seen = SeenItems(np.arange(40), rng.integers(0, 400, 40), 40)
    rows = np.arange(40)
    exact, _ = exact_top_k(queries, items, rows, seen, 10)
    index = IVFIndex(items, n_lists=8, n_probe=8)
    approx, _ = index.search(queries, rows, seen, 10)
    assert (np.sort(approx, axis=1) == np.sort(exact, axis=1)).all()
    assert ivf_recall(queries, items, rows, seen, 10, 8, 8)["recall@10_vs_brute_force"] == 1.0
    partial = ivf_recall(queries, items, rows, seen, 10, 16, 4)
    assert 0.3 < partial["recall@10_vs_brute_force"] < 1.0 and partial["probed"] == 4


def test_item_knn_scores_are_summed_cosine_similarities():
    rows = pd.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "y", "z", "x"]})
    matrix = baselines.interaction_matrix(rows, ["a", "b", "c"], ["x", "y", "z"])
    dense = matrix.toarray()
    norms = np.linalg.norm(dense, axis=0)
    cosine = dense.T @ dense / np.outer(norms, norms)
    np.testing.assert_allclose(
        baselines.item_knn_scores(matrix, np.array([0, 2])), dense[[0, 2]] @ cosine, rtol=1e-6
    )


def test_surprise_svd_without_the_package_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "surprise", None)  # import surprise -> ImportError
    rows = pd.DataFrame({"user": ["a"], "item": ["x"], "rating": [4.0]})
    assert baselines.surprise_svd(rows, {"test": rows}, 0) == (
        None,
        "scikit-surprise not installed",
    )


def test_ivf_search_is_brute_force_over_each_querys_probed_lists_less_its_seen_items():
    rng = np.random.default_rng(2)
    queries, items = _unit(rng, 30, 8), _unit(rng, 300, 8)
    seen = SeenItems(np.repeat(np.arange(30), 20), rng.integers(0, 300, 600), 30)
    index = IVFIndex(items, n_lists=12, n_probe=3)
    cols, scores = index.search(queries, np.arange(30), seen, 10)
    lists = np.argmax(items @ index.centroids.T, axis=1)
    for n, query in enumerate(queries):
        probed = np.argsort(-(index.centroids @ query), kind="stable")[:3]
        allowed = np.isin(lists, probed) & ~np.isin(np.arange(300), seen.of(n))
        full = np.where(allowed, items @ query, -np.inf)
        best = np.argsort(-full, kind="stable")[:10]
        assert set(cols[n]) == set(best[np.isfinite(full[best])])
        np.testing.assert_allclose(scores[n], full[best], rtol=1e-5)
    # One list probed, two items in it: the other slots are -inf at column 0.
    few, few_scores = IVFIndex(items[:2], n_lists=1, n_probe=1).search(
        queries[:1], np.array([0]), SeenItems(np.array([], int), np.array([], int), 1), 4
    )
    assert np.isinf(few_scores[0, 2:]).all() and few[0, 2:].tolist() == [0, 0]
    assert sorted(few[0, :2].tolist()) == [0, 1]
