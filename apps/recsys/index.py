"""Top-K items per user over fixed item embeddings, each user's seen items excluded inside the
computation: exact (one matrix product per batch of users, a sparse -inf offset on the seen
cells, argpartition) or approximate (an inverted-file index: k-means lists of items, a few
lists probed per user), with the approximate index's recall against the exact one."""

import time

import numpy as np

SCORE_CELLS = 1 << 26  # at most this many [users, items] scores at once (256 MB of float32)


class SeenItems:
    """Each user row's seen catalogue columns, as compressed sparse rows."""

    def __init__(self, user_rows: np.ndarray, item_cols: np.ndarray, n_users: int):
        keys = np.unique(np.asarray(user_rows, np.int64) * (1 << 32) + np.asarray(item_cols))
        rows, self.cols = keys >> 32, (keys & 0xFFFFFFFF).astype(np.int64)
        self.indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=self.indptr[1:])

    def cells(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch row, column) of every seen cell of the users `rows`, without a Python loop."""
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        counts = stops - starts
        batch = np.repeat(np.arange(len(rows)), counts)
        first = np.repeat(starts - np.cumsum(counts) + counts, counts)
        return batch, self.cols[first + np.arange(len(batch))]

    def of(self, row: int) -> np.ndarray:
        return self.cols[self.indptr[row] : self.indptr[row + 1]]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best columns, best first, and their scores (-inf: an excluded column)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else None
    if part is None:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


def exact_top_k(
    queries: np.ndarray,
    items: np.ndarray,
    rows: np.ndarray,
    seen: SeenItems,
    k: int,
    item_offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k of `queries` (the users `rows`) over `items`; seen cells score -inf
    before the top-k, so every user gets k unseen items when the catalogue has them."""
    scores = queries @ items.T
    if item_offset is not None:  # items that may never be served (a non-finite embedding)
        scores += item_offset
    batch, cols = seen.cells(rows)
    scores[batch, cols] = -np.inf
    return top_k_rows(scores, k)


def batched_top_k(queries, items, rows, seen, k, item_offset=None, batch_size: int = 8192):
    """`exact_top_k` over batches of users small enough to keep the score matrix in memory."""
    step = max(1, min(batch_size, SCORE_CELLS // max(len(items), 1)))
    if len(rows) <= step:
        return exact_top_k(queries, items, rows, seen, k, item_offset)
    parts = [
        exact_top_k(queries[s : s + step], items, rows[s : s + step], seen, k, item_offset)
        for s in range(0, len(rows), step)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class IVFIndex:
    """An inverted-file index over unit item embeddings (dot-product scores): spherical k-means
    puts each item in one list; a query scores only the items of its `n_probe` best lists."""

    def __init__(self, items: np.ndarray, n_lists: int, n_probe: int, seed: int = 0, rounds=10):
        items = np.asarray(items, np.float32)
        self.items, self.n_probe = items, max(1, min(n_probe, n_lists))
        n_lists = max(1, min(n_lists, len(items)))
        rng = np.random.default_rng(seed)
        # k-means on a sample: a million items need no more than a few hundred per list.
        sample = items[rng.permutation(len(items))[: max(n_lists * 256, 1)]]
        centroids = sample[rng.choice(len(sample), n_lists, replace=False)]
        for _ in range(rounds):
            assign = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, sample)
            empty = ~np.bincount(assign, minlength=n_lists).astype(bool)
            sums[empty] = centroids[empty]
            centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        self.centroids = centroids
        assign = np.argmax(items @ centroids.T, axis=1)
        self.order = np.argsort(assign, kind="stable")
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=n_lists))])
        # Lists as contiguous slices of the items sorted by list (a matmul each, no gather),
        # and each item's list and slot in it, to place a query's seen items among its candidates.
        self.sorted_items = items[self.order]
        sizes = np.diff(self.starts)
        self.item_list, self.item_slot = np.empty((2, len(items)), np.int64)
        self.item_list[self.order] = np.repeat(np.arange(n_lists), sizes)
        self.item_slot[self.order] = np.arange(len(items)) - np.repeat(self.starts[:-1], sizes)
        self.width = max(int(sizes.max()), 1)  # the longest list: every list's padded width

    @property
    def n_lists(self) -> int:
        return len(self.centroids)

    def search(self, queries: np.ndarray, rows: np.ndarray, seen: SeenItems, k: int):
        """Per query the top-k unseen items of its probed lists: (columns, scores), -inf and
        column 0 where fewer than k candidates were found. Batched: per batch of queries, one
        matrix product per list against the queries that probe it (a loop over lists, not
        over users), into a [queries, probed lists x longest list] score matrix."""
        queries = np.asarray(queries, np.float32)
        rows = np.asarray(rows)
        probe, _ = top_k_rows(queries @ self.centroids.T, self.n_probe)
        step = max(1, SCORE_CELLS // (probe.shape[1] * self.width))
        columns = np.zeros((len(queries), k), np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        for s in range(0, len(queries), step):
            part = slice(s, s + step)
            columns[part], scores[part] = self._search_batch(
                queries[part], rows[part], probe[part], seen, k
            )
        return columns, scores

    def _search_batch(self, queries, rows, probe, seen: SeenItems, k: int):
        n, n_probe = probe.shape
        values = np.full((n * n_probe, self.width), -np.inf, np.float32)
        flat = probe.ravel()  # (query, probe slot) pairs, query-major
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(self.n_lists + 1))
        for lst in np.flatnonzero(np.diff(bounds)):
            pairs = order[bounds[lst] : bounds[lst + 1]]
            members = self.sorted_items[self.starts[lst] : self.starts[lst + 1]]
            values[pairs, : len(members)] = queries[pairs // n_probe] @ members.T
        values = values.reshape(n, n_probe, self.width)
        # A seen item scores -inf where its list was probed: (query, probe slot, slot in list).
        batch, cols = seen.cells(rows)
        match = probe[batch] == self.item_list[cols][:, None]
        hit = match.any(axis=1)
        values[batch[hit], match[hit].argmax(axis=1), self.item_slot[cols[hit]]] = -np.inf
        top, best = top_k_rows(values.reshape(n, -1), k)
        lists = np.take_along_axis(probe, top // self.width, axis=1)
        found = self.order[np.minimum(self.starts[lists] + top % self.width, len(self.order) - 1)]
        out = np.zeros((n, k), np.int64), np.full((n, k), -np.inf, np.float32)
        out[0][:, : top.shape[1]] = np.where(np.isfinite(best), found, 0)
        out[1][:, : top.shape[1]] = best
        return out


def ivf_recall(queries, items, rows, seen, k: int, n_lists: int, n_probe: int, seed: int = 0):
    """The IVF index's recall@k against brute force (the share of each user's exact top-k that
    it finds, averaged) and both searches' seconds."""
    start = time.perf_counter()
    exact, _ = batched_top_k(queries, items, rows, seen, k)
    exact_s = time.perf_counter() - start
    index = IVFIndex(items, n_lists, n_probe, seed)
    start = time.perf_counter()
    approx, approx_scores = index.search(queries, rows, seen, k)
    ivf_s = time.perf_counter() - start
    found = [
        len(np.intersect1d(e, a[np.isfinite(s)])) / max(len(e), 1)
        for e, a, s in zip(exact, approx, approx_scores, strict=True)
    ]
    return {
        f"recall@{k}_vs_brute_force": round(float(np.mean(found)) if found else 0.0, 4),
        "lists": index.n_lists,
        "probed": index.n_probe,
        "users": int(len(rows)),
        "brute_force_s": round(exact_s, 4),
        "ivf_s": round(ivf_s, 4),
    }
