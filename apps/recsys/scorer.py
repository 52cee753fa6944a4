"""What `score` and `recommend` serve with: the pair scorers (predicted ratings, or two-tower
scores for implicit data), the id schema that rejects unknown users and items, and the
`Recommender` (top-K unseen items per user, popularity for unknown users)."""

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.recsys.config import ServeConfig
from apps.recsys.data import id_arrays
from apps.recsys.index import IVFIndex, SeenItems, batched_top_k
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
    table of top-K items.

    The towers are fixed after training, so every known user's embedding is computed once
    here: serving is then one matrix product per batch of users, the seen items set to -inf
    by a sparse offset before the top-K (`apps.recsys.index`), never fetched and dropped.
    """

    def __init__(self, run: RunDir, serve: ServeConfig | None = None):
        serve = serve or ServeConfig()
        self.meta = Meta.read(run)
        if not self.meta.retrieval_model:
            raise DataError(
                f"{run.path}: the two-tower retrieval model failed to train in this run "
                f"({self.meta.networks['two_tower']['reason']}); there is nothing to "
                "recommend with: train again with a lower model.retrieval_learning_rate"
            )
        self.model = load_model(run, "two_tower")
        user_tower = self.model.get_layer("user_tower")
        vocabulary = user_tower.get_layer("user_lookup").get_vocabulary()[1:]
        self.user_row_ = {u: n for n, u in enumerate(vocabulary)}
        self.users_ = set(self.user_row_)
        catalogue = read_catalogue(run)
        items = np.asarray(self.model.get_layer("index").candidate_embeddings, np.float32)
        cold = run.path / "cold_items.npz"
        if serve.cold_items and cold.exists():
            with np.load(cold, allow_pickle=False) as stored:
                catalogue += stored["items"].tolist()
                items = np.concatenate([items, stored["embeddings"].astype(np.float32)])
        self.catalogue = np.asarray(catalogue, dtype=object)
        self.column_ = pd.Series(np.arange(len(self.catalogue)), index=self.catalogue)
        users = np.asarray(vocabulary, dtype=str)
        queries = predict_in_batches(user_tower, users, 8192) if len(users) else None
        self.set_embeddings(queries, items)
        self._known_items(pd.read_parquet(run.path / "known_items.parquet"))
        self._item_metadata(pd.read_parquet(run.path / "items.parquet"))
        pop = self.meta.popularity
        self.popular_items_ = np.asarray(pop["items"], dtype=object)
        self.popular_scores_ = np.asarray(pop["counts"], np.float64) / max(pop["interactions"], 1)
        self.index_ = None
        if serve.index == "ivf":
            lists = serve.ivf_lists or int(np.sqrt(len(self.catalogue))) or 1
            self.index_ = IVFIndex(self.item_embeddings_, lists, serve.ivf_probe)
        self.non_finite_users_ = 0  # users of the last call whose model scores were not finite

    def set_embeddings(self, users=None, items=None) -> None:
        """Replace the user and/or item embeddings. A user whose embedding is not finite gets
        the popularity fallback; an item whose embedding is not finite is never served."""
        if users is not None:
            users = np.array(users, np.float32)
            self.bad_users_ = ~np.isfinite(users).all(axis=1)
            users[self.bad_users_] = 0.0
            self.user_embeddings_ = users
        if items is not None:
            items = np.array(items, np.float32)
            bad = ~np.isfinite(items).all(axis=1)
            items[bad] = 0.0
            self.item_embeddings_ = items
            self.item_offset_ = (
                np.where(bad, -np.inf, 0.0).astype(np.float32) if bad.any() else None
            )

    def _known_items(self, known: pd.DataFrame) -> None:
        rows = known["user"].map(self.user_row_)
        cols = known["item"].map(self.column_)
        both = rows.notna() & cols.notna()
        self.seen_ = SeenItems(
            rows[both].to_numpy(np.int64), cols[both].to_numpy(np.int64), len(self.user_row_)
        )
        # Every interaction the run knows, per catalogue item: the popularity within genres.
        self.item_counts_ = np.bincount(
            cols.dropna().to_numpy(np.int64), minlength=len(self.catalogue)
        ).astype(np.float64)
        self.interactions_ = max(int(len(known)), 1)

    def _item_metadata(self, items: pd.DataFrame) -> None:
        by_item = items.set_index("item") if len(items) else None
        titles = by_item["title"] if by_item is not None else None
        self.titles_ = (
            None if titles is None else pd.Series(self.catalogue).map(titles).fillna("").to_numpy()
        )
        genres = by_item["genres"] if by_item is not None else pd.Series(dtype=str)
        self.item_genres_ = [
            set(filter(None, str(g).split("|")))
            for g in pd.Series(self.catalogue).map(genres).fillna("")
        ]

    def recommend(
        self, users: list[str], k: int, batch_size: int = 8192, preferences: dict | None = None
    ) -> pd.DataFrame:
        """Top-k per user; `preferences` (user -> genres) for unknown users who stated some."""
        rows = np.array([self.user_row_.get(u, -1) for u in users], np.int64)
        cols = np.zeros((len(users), k), np.int64)
        scores = np.full((len(users), k), -np.inf, np.float64)
        source = np.full(len(users), "two_tower", dtype=object)
        known = np.flatnonzero(rows >= 0)
        if len(known):
            got, best = self._top(rows[known], k, batch_size)
            cols[known, : got.shape[1]], scores[known, : got.shape[1]] = got, best
        self.non_finite_users_ = 0
        for n in np.flatnonzero(~np.isfinite(scores).any(axis=1)):
            cols[n], scores[n], source[n] = self._fallback(users[n], rows[n], k, preferences)
        return self._table(users, cols, scores, source)

    def _top(self, rows: np.ndarray, k: int, batch_size: int):
        queries = self.user_embeddings_[rows]
        if self.index_ is not None:
            return self.index_.search(queries, rows, self.seen_, k)
        got, best = batched_top_k(
            queries, self.item_embeddings_, rows, self.seen_, k, self.item_offset_, batch_size
        )
        best[self.bad_users_[rows]] = -np.inf
        return got, best

    def _fallback(self, user: str, row: int, k: int, preferences: dict | None):
        """(columns, scores, source) of a user the towers cannot rank: the most popular items,
        within their stated genres when they named some; a known user's seen items left out."""
        if row >= 0:
            self.non_finite_users_ += 1
        wanted = set((preferences or {}).get(user, ())) if row < 0 else set()
        counts = self.item_counts_ / self.interactions_
        allowed = np.array([bool(g & wanted) for g in self.item_genres_]) if wanted else None
        if allowed is not None and allowed.any():
            picked = np.argsort(-np.where(allowed, counts, -np.inf), kind="stable")[:k]
            picked = picked[allowed[picked]]
            name, values = "popularity_preferences", counts[picked]
        else:
            popular = self.column_[self.popular_items_].to_numpy(np.int64)
            keep = ~np.isin(popular, self.seen_.of(row)) if row >= 0 else slice(None)
            picked, values = popular[keep][:k], self.popular_scores_[keep][:k]
            name = "popularity_fallback"
        out_cols, out_scores = np.zeros(k, np.int64), np.full(k, -np.inf)
        out_cols[: len(picked)], out_scores[: len(picked)] = picked, values
        return out_cols, out_scores, name

    def _table(self, users, cols, scores, source) -> pd.DataFrame:
        """The long table, one row per served item; a user with fewer than k servable items
        (nearly the whole catalogue seen) gets fewer rows, never a seen or unscored one."""
        served = np.isfinite(scores)
        k = cols.shape[1]
        frame = pd.DataFrame(
            {
                "user": np.repeat(np.asarray(users, dtype=object), k)[served.ravel()],
                "rank": np.cumsum(served, axis=1)[served],
                "item": self.catalogue[cols[served]],
                "score": np.round(scores[served], 6),
                "source": np.repeat(source, k)[served.ravel()],
            }
        )
        if self.titles_ is not None:
            frame.insert(3, "title", self.titles_[cols[served]])
        return frame


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


def read_preferences(spec: str | None) -> dict[str, list[str]]:
    """Stated genres per user from a users file with a header naming a `genres` (or
    `preferences`) column beside the user column (pipe-separated genres); {} otherwise."""
    path = Path(spec) if spec else None
    if path is None or not path.is_file():
        return {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().lower()
    if "genres" not in header and "preferences" not in header:
        return {}  # a plain list of ids
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise DataError(f"{path}: malformed users file ({first})") from exc
    names = {str(c).strip().lower(): c for c in frame.columns}
    user = next((names[c] for c in ("user", "user_id", "userid") if c in names), None)
    genres = next((names[c] for c in ("genres", "preferences") if c in names), None)
    if user is None or genres is None:
        return {}
    return {
        str(u).strip(): [g.strip() for g in text.split("|") if g.strip()]
        for u, text in zip(frame[user], frame[genres], strict=True)
        if text.strip()
    }
