"""Baselines beyond the bias and popularity ones: the `surprise` package's SVD at its defaults
(the standard rating row; a benchmark-only extra) and cosine item-kNN for the top-K."""

import time

import numpy as np
import pandas as pd
from scipy import sparse

SURPRISE_MISSING = "scikit-surprise not installed"


def surprise_svd(train: pd.DataFrame, parts: dict, seed: int) -> tuple[dict | None, str | None]:
    """Fit surprise's SVD at its defaults (100 factors, 20 epochs, lr 0.005, reg 0.02: the row
    papers quote) on `train`; ({split: predictions, "seconds": s}, None), or (None, why) when
    the package is not installed. Predictions are clipped to the training rating range, as
    surprise does."""
    try:
        from surprise import SVD, Dataset, Reader
    except ImportError:
        return None, SURPRISE_MISSING
    start = time.perf_counter()
    scale = (float(train["rating"].min()), float(train["rating"].max()))
    data = Dataset.load_from_df(train[["user", "item", "rating"]], Reader(rating_scale=scale))
    algo = SVD(random_state=seed)
    algo.fit(data.build_full_trainset())
    out = {
        split: np.array(
            [algo.predict(u, i).est for u, i in zip(rows["user"], rows["item"], strict=True)]
        )
        for split, rows in parts.items()
    }
    return out | {"seconds": time.perf_counter() - start}, None


def interaction_matrix(rows: pd.DataFrame, users: list[str], items: list[str]) -> sparse.csr_matrix:
    """Binary [users, items] CSR of `rows` (users or items outside the lists are dropped)."""
    user_row = pd.Series(np.arange(len(users)), index=users)
    item_col = pd.Series(np.arange(len(items)), index=items)
    r, c = rows["user"].map(user_row), rows["item"].map(item_col)
    keep = r.notna() & c.notna()
    data = np.ones(int(keep.sum()), np.float32)
    shape = (len(users), len(items))
    matrix = sparse.csr_matrix((data, (r[keep].to_numpy(int), c[keep].to_numpy(int))), shape)
    matrix.data[:] = 1.0  # a repeated pair counts once
    return matrix


def item_knn_scores(train: sparse.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Cosine item-kNN over every neighbour: user u's score of item i is the sum of the cosine
    similarities between i and each item u has (similarities from the `train` co-occurrences).
    Computed as (X_u Xn^T) Xn with Xn the column-normalised matrix, never the items x items
    similarity matrix (a billion cells for a 30,000-item catalogue)."""
    norms = np.sqrt(np.asarray(train.sum(axis=0)).ravel())
    scaled = train @ sparse.diags(1.0 / np.maximum(norms, 1e-12))
    profile = train[users]
    return np.asarray(((profile @ scaled.T) @ scaled).todense(), np.float32)
