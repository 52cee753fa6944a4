"""What `score` and `recommend` serve with: the pair scorers (predicted ratings, or two-tower
scores for implicit data), the id schema that rejects unknown users and items, and the
`Recommender` (top-K unseen items per user, popularity for unknown users)."""

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.recsys.config import ServeConfig
from apps.recsys.data import id_arrays
from apps.recsys.model import Meta, load_model, read_catalogue
from shared.io import DataError
from shared.run import RunDir
from shared.scoring import InputSchema, predict_in_batches


class PairSchema(InputSchema):
    """User and item id columns; a pair with an id the model never saw is rejected, with why."""

    def __init__(self, columns, users: set, items: set):
        super().__init__(columns)
        self.users, self.items = users, items

    def validate(self, chunk):
        typed, reasons = super().validate(chunk)
        for column, vocabulary, what in (
            (self.columns[0].name, self.users, "user"),
            (self.columns[1].name, self.items, "item"),
        ):
            values = typed[column]
            unknown = (reasons == "") & ~values.isin(vocabulary)
            reasons[unknown] = (
                f"unknown {what} '" + values[unknown].str.slice(0, 40) + "' (not in training data)"
            )
        return typed, reasons


def predict_ratings(model: keras.Model, rows: pd.DataFrame, batch_size: int) -> np.ndarray:
    """A rating network's predictions for the rows' (user, item) pairs, unclipped."""
    return np.asarray(predict_in_batches(model, id_arrays(rows), batch_size)).reshape(-1)


def tower_scores(user_tower: keras.Model, item_embeddings: np.ndarray, users: list[str]):
    """[users, items] two-tower scores: each user's embedding dotted with every item's."""
    queries = predict_in_batches(user_tower, np.asarray(users, dtype=str), 8192)
    # float32 whatever the precision policy: NumPy's matmul on bfloat16 is slow and inexact.
    return np.asarray(queries, np.float32) @ np.asarray(item_embeddings, np.float32).T


class RatingScorer:
    """Predicted ratings of the serving rating network, clipped to the training range."""

    column = "predicted_rating"  # the output column

    def __init__(self, run: RunDir, meta: Meta, serve: ServeConfig):
        name, why = meta.rating_model(serve.rating_model)
        if name is None:
            raise DataError(f"{run.path}: no rating model to score with ({why})")
        if why:
            print(f"note: {why}scoring with {name}", flush=True)
        self.batch_size = serve.batch_size
        self.model_ = load_model(run, name)
        self.users_, self.items_ = (
            set(self.model_.get_layer(f"{what}_lookup").get_vocabulary()[1:])
            for what in ("user", "item")
        )
        self.range_ = meta.rating_range

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        low, high = self.range_
        rating = np.clip(predict_ratings(self.model_, rows, self.batch_size), low, high)
        return np.round(rating, 4)


class AffinityScorer:
    """For implicit data: each pair's two-tower score, the dot product of the user's and the
    item's embeddings (what recommend ranks by)."""

    column = "score"  # the output column

    def __init__(self, run: RunDir, serve: ServeConfig):
        self.batch_size = serve.batch_size
        retrieval = load_model(run, "two_tower")
        self.user_tower_ = retrieval.get_layer("user_tower")
        self.candidates_ = np.asarray(retrieval.get_layer("index").candidate_embeddings)
        catalogue = read_catalogue(run)
        self.item_row_ = pd.Series(np.arange(len(catalogue)), index=catalogue)
        self.users_ = set(self.user_tower_.get_layer("user_lookup").get_vocabulary()[1:])
        self.items_ = set(catalogue)
        print(
            "score: implicit data: each pair's two-tower score (what recommend ranks by)",
            flush=True,
        )

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        users = rows["user"].to_numpy(str)
        queries = predict_in_batches(self.user_tower_, users, self.batch_size)
        items = self.candidates_[rows["item"].map(self.item_row_).to_numpy(np.int64)]
        return np.round((np.asarray(queries) * items).sum(axis=1).astype(np.float64), 6)


def pair_scorer(run: RunDir, meta: Meta, serve: ServeConfig) -> RatingScorer | AffinityScorer:
    """The scorer of a run's pairs: ratings for explicit data, two-tower scores for implicit."""
    return RatingScorer(run, meta, serve) if meta.explicit_ratings else AffinityScorer(run, serve)


class Recommender:
    """Loads a run's retrieval model, catalogue, known items and titles; `recommend` returns the
    table of top-K items."""

    def __init__(self, run: RunDir):
        self.meta = Meta.read(run)
        if not self.meta.retrieval_model:
            raise DataError(
                f"{run.path}: the two-tower retrieval model failed to train in this run "
                f"({self.meta.networks['two_tower']['reason']}); there is nothing to "
                "recommend with: train again with a lower model.retrieval_learning_rate"
            )
        self.model = load_model(run, "two_tower")
        self.catalogue = np.asarray(read_catalogue(run), dtype=object)
        lookup = self.model.get_layer("user_tower").get_layer("user_lookup")
        self.user_row_ = {u: n for n, u in enumerate(lookup.get_vocabulary()[1:])}
        self.users_ = set(self.user_row_)
        known = pd.read_parquet(run.path / "known_items.parquet")
        # Known (user, item) pairs as sorted integer keys, for a vectorised exclusion.
        self.column_ = pd.Series(np.arange(len(self.catalogue)), index=self.catalogue)
        rows = known["user"].map(self.user_row_)
        cols = known["item"].map(self.column_)
        both = rows.notna() & cols.notna()
        self.n_items_ = len(self.catalogue)
        self.known_keys_ = np.unique(
            rows[both].to_numpy(np.int64) * self.n_items_ + cols[both].to_numpy(np.int64)
        )
        items = pd.read_parquet(run.path / "items.parquet")
        self.titles_ = items.set_index("item")["title"].to_dict() if len(items) else None
        pop = self.meta.popularity
        total = max(pop["interactions"], 1)
        self.popular_items_ = np.asarray(pop["items"], dtype=object)
        self.popular_scores_ = np.asarray(pop["counts"], np.float64) / total
        self.non_finite_users_ = 0  # users of the last call whose model scores were not finite

    def recommend(self, users: list[str], k: int, batch_size: int = 8192) -> pd.DataFrame:
        known_users = [u for u in users if u in self.users_]
        self.non_finite_users_ = 0
        parts = self._ranked(known_users, k, batch_size) if known_users else {}
        fallback = (self.popular_items_[:k], self.popular_scores_[:k], "popularity_fallback")
        picks = [parts.get(user, fallback) for user in users]
        counts = [len(p[0]) for p in picks]
        frame = pd.DataFrame(
            {
                "user": np.repeat(np.asarray(users, dtype=object), counts),
                "rank": np.concatenate([np.arange(1, c + 1) for c in counts]),
                "item": np.concatenate([p[0] for p in picks]),
                "score": np.round(np.concatenate([p[1] for p in picks]).astype(np.float64), 6),
                "source": np.repeat([p[2] for p in picks], counts),
            }
        )
        if self.titles_ is not None:
            frame.insert(3, "title", frame["item"].map(self.titles_).fillna(""))
        return frame

    def _ranked(self, known_users: list[str], k: int, batch_size: int) -> dict:
        """Per known user: (items, scores, source) of their top-k unseen items with a finite
        score; the popularity fallback for a user whose scores are none of them finite."""
        out = predict_in_batches(self.model, np.asarray(known_users, dtype=str), batch_size)
        rows, scores = np.asarray(out["items"], np.int64), np.asarray(out["scores"])
        user_rows = np.array([self.user_row_[u] for u in known_users], np.int64)
        keys = user_rows[:, None] * self.n_items_ + rows
        # A non-finite score is never served: such a candidate is dropped like a seen one.
        seen = np.isin(keys, self.known_keys_) | ~np.isfinite(scores)
        # Unseen candidates first, each group in score order (a stable sort on the flag).
        order = np.argsort(seen, axis=1, kind="stable")[:, :k]
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        fresh = ~np.take_along_axis(seen, order, axis=1)  # False only for a user who has
        # seen nearly the whole catalogue: they get fewer than k items, never a seen one
        parts = {}
        for n, user in enumerate(known_users):
            keep = fresh[n]
            if not keep.any() and not np.isfinite(scores[n]).any():
                self.non_finite_users_ += 1
                parts[user] = self._popular_unseen(user_rows[n], k)
                continue
            parts[user] = (self.catalogue[rows[n][keep]], scores[n][keep], "two_tower")
        return parts

    def _popular_unseen(self, user_row: int, k: int) -> tuple:
        """The most popular items a known user has not seen, as the popularity fallback."""
        keys = user_row * self.n_items_ + self.column_[self.popular_items_].to_numpy(np.int64)
        unseen = ~np.isin(keys, self.known_keys_)
        picked = np.flatnonzero(unseen)[:k]
        return self.popular_items_[picked], self.popular_scores_[picked], "popularity_fallback"


def read_users(spec: str | None) -> list[str]:
    """Comma-separated ids, or a file with one id per line (a `user`/`user_id` header is
    skipped)."""
    if not spec or not spec.strip():
        raise DataError("--users is empty: give comma-separated ids or a file of ids")
    path = Path(spec)
    if path.is_file():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        ids = [line.split(",")[0].strip() for line in (raw.strip() for raw in lines) if line]
        if ids and ids[0].lower() in ("user", "user_id", "userid"):
            ids = ids[1:]
        if not ids:
            raise DataError(f"{path}: no user ids in the file")
    else:
        if ("/" in spec or spec.endswith((".csv", ".txt"))) and "," not in spec:
            raise DataError(f"{spec}: no such users file")
        ids = [part.strip() for part in spec.split(",")]
        if any(not i for i in ids):
            raise DataError(f"--users {spec!r}: an empty user id between commas")
    return list(dict.fromkeys(ids))  # each user once, in the order given
