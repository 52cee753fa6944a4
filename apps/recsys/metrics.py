"""Offline metrics: RMSE/MAE for ratings; Recall, NDCG, MAP (keras-rs), hit rate and catalogue
coverage at K for retrieval, each user's known items excluded from the ranking."""

import keras_rs
import numpy as np


def rating_metrics(y_true, y_pred) -> dict:
    error = np.asarray(y_pred, np.float64).reshape(-1) - np.asarray(y_true, np.float64).reshape(-1)
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, excluded cells never chosen, best first."""
    masked = np.where(exclude, -np.inf, scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(masked, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_metrics(
    scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray, ks: list[int]
) -> dict:
    """Per K: recall, ndcg, map (keras-rs), hit rate and catalogue coverage, over users with at
    least one relevant item. `scores`, `relevant` and `exclude` are [users, items]."""
    keep = relevant.any(axis=1)
    scores, relevant, exclude = scores[keep], relevant[keep], exclude[keep]
    top = top_k(scores, exclude, max(ks))
    y_true = _top_lists(top, relevant, exclude)
    out = {"users": int(keep.sum())}
    for k in ks:
        values = {}
        for name, metric in (
            ("recall", keras_rs.metrics.RecallAtK(k=k, shuffle_ties=False)),
            ("ndcg", keras_rs.metrics.NDCG(k=k, shuffle_ties=False)),
            ("map", keras_rs.metrics.MeanAveragePrecision(k=k, shuffle_ties=False)),
        ):
            for start in range(0, len(top), 1024):
                stop = start + 1024
                metric.update_state(
                    {key: v[start:stop] for key, v in y_true.items() if key != "scores"},
                    y_true["scores"][start:stop],
                )
            values[name] = float(metric.result())
        hits = np.take_along_axis(relevant, top[:, :k], axis=1)
        values["hit_rate"] = float(hits.any(axis=1).mean()) if len(top) else 0.0
        values["coverage"] = (
            float(len(np.unique(top[:, :k])) / scores.shape[1]) if len(top) else 0.0
        )
        out[f"@{k}"] = values
    return out


def _top_lists(top: np.ndarray, relevant: np.ndarray, exclude: np.ndarray) -> dict:
    """keras-rs inputs that give the same metrics at every K <= top.shape[1] as the full lists,
    at a fraction of the cost (keras-rs sorts every list whole: a minute for 2,000 users by
    15,000 items).

    Each user's list is their top items in rank order, then the relevant items below them (the
    recall, MAP and ideal-DCG denominators need them), then masked padding; the scores are
    the ranks, so keras-rs sorts them back into the same order.
    """
    n_top = top.shape[1]
    below = relevant & ~exclude  # keras-rs leaves masked items out of every denominator
    np.put_along_axis(below, top, False, axis=1)
    n_below = below.sum(axis=1)
    width = n_top + int(n_below.max(initial=0))
    labels = np.zeros((len(top), width), np.float32)
    mask = np.zeros((len(top), width), bool)
    scores = np.full((len(top), width), -1.0, np.float32)
    labels[:, :n_top] = np.take_along_axis(relevant, top, axis=1)
    mask[:, :n_top] = ~np.take_along_axis(exclude, top, axis=1)
    scores[:, :n_top] = n_top - np.arange(n_top)
    users, _ = np.nonzero(below)
    slot = n_top + np.concatenate([np.arange(n) for n in n_below]) if len(users) else users
    labels[users, slot], mask[users, slot], scores[users, slot] = 1.0, True, 0.0
    return {"labels": labels, "mask": mask, "scores": scores}


def recall_curve(scores, relevant, exclude, max_k: int) -> np.ndarray:
    """Mean recall@K for K = 1..max_k (users with a relevant item), from one sort."""
    keep = relevant.any(axis=1)
    top = top_k(scores[keep], exclude[keep], max_k)
    hits = np.take_along_axis(relevant[keep], top, axis=1).cumsum(axis=1)
    return (hits / relevant[keep].sum(axis=1, keepdims=True)).mean(axis=0)


def recall_at_k(scores, relevant, exclude, k: int) -> float:
    """Mean recall@k over users with a relevant item, as keras-rs's RecallAtK computes it (an
    excluded item is in no denominator) in NumPy: fast enough to log on validation every epoch."""
    keep = relevant.any(axis=1)
    if not keep.any():
        return 0.0
    relevant = relevant[keep] & ~exclude[keep]
    top = top_k(scores[keep], exclude[keep], k)
    hits = np.take_along_axis(relevant, top, axis=1).sum(axis=1)
    total = relevant.sum(axis=1)
    return float(np.divide(hits, total, out=np.zeros(len(total)), where=total > 0).mean())
