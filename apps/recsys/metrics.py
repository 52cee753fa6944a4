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
    y_true = {"labels": relevant.astype(np.float32), "mask": ~exclude}
    out = {"users": int(keep.sum())}
    for k in ks:
        values = {}
        for name, metric in (
            ("recall", keras_rs.metrics.RecallAtK(k=k, shuffle_ties=False)),
            ("ndcg", keras_rs.metrics.NDCG(k=k, shuffle_ties=False)),
            ("map", keras_rs.metrics.MeanAveragePrecision(k=k, shuffle_ties=False)),
        ):
            for start in range(0, len(scores), 1024):
                stop = start + 1024
                metric.update_state(
                    {key: v[start:stop] for key, v in y_true.items()},
                    scores[start:stop].astype(np.float32),
                )
            values[name] = float(metric.result())
        top = top_k(scores, exclude, k)
        hits = np.take_along_axis(relevant, top, axis=1)
        values["hit_rate"] = float(hits.any(axis=1).mean()) if len(top) else 0.0
        values["coverage"] = float(len(np.unique(top)) / scores.shape[1]) if len(top) else 0.0
        out[f"@{k}"] = values
    return out


def recall_curve(scores, relevant, exclude, max_k: int) -> np.ndarray:
    """Mean recall@K for K = 1..max_k (users with a relevant item), from one sort."""
    keep = relevant.any(axis=1)
    top = top_k(scores[keep], exclude[keep], max_k)
    hits = np.take_along_axis(relevant[keep], top, axis=1).cumsum(axis=1)
    return (hits / relevant[keep].sum(axis=1, keepdims=True)).mean(axis=0)
