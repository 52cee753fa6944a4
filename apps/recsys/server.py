"""`deepfield recsys serve`: `POST /score` with user-item pairs as JSON rows (predicted ratings,
or two-tower scores for implicit data, unknown ids rejected as `score` rejects them) and
`POST /recommend` {"users": [...], "k": 10} (top-K unseen items, popularity for unknown users,
as `recommend` writes them). Both are batched across requests on the worker thread."""

import pandas as pd

from apps.recsys.model import Meta
from apps.recsys.scorer import PairSchema, Recommender, pair_scorer
from shared.run import RunDir
from shared.scoring import InputSchema, score_joined_groups
from shared.server import Adapter, RequestError, records, submit_rows, table_rows_call


class RecsysAdapter(Adapter):
    kind = "rows"

    def __init__(self, config, run: RunDir):
        self.meta = Meta.read(run)
        self.serve = config.serve
        schema = InputSchema.from_dict(self.meta.schema)
        self.user_col, self.item_col = schema.names
        self.scorer = pair_scorer(run, self.meta, config.serve)
        self.schema = PairSchema(schema.columns, self.scorer.users_, self.scorer.items_)
        self.table_schema = self.schema  # POST /score also takes the pairs as a CSV
        self.recommender = Recommender(run, config.serve) if self.meta.retrieval_model else None

    def model_calls(self) -> dict:
        return {
            "score": table_rows_call(self.schema, self._score_batch),
            "recommend": self._recommend_batch,
        }

    def _score_batch(self, frame: pd.DataFrame, bounds) -> tuple:
        """The batch's requests (joined, rows numbered 1..N) checked and scored in one pass
        (`score_joined_groups`)."""

        def predict(typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
            pairs = pd.DataFrame({"user": typed[self.user_col], "item": typed[self.item_col]})
            return pd.DataFrame(
                {
                    "row": typed.index,
                    self.user_col: pairs["user"].to_numpy(),
                    self.item_col: pairs["item"].to_numpy(),
                    self.scorer.column: self.scorer.predict(pairs),
                }
            )

        return score_joined_groups(frame, bounds, self.schema, predict)

    def score(self, rows: list[dict], submit) -> tuple[list[dict], list[dict]]:
        return submit_rows(submit, "score", rows)

    def recommend(self, body, submit) -> tuple[list[dict], list[dict]]:
        """The /recommend answer: one output row per served item, as `recommend` writes."""
        if self.recommender is None:
            raise RequestError("this run has no retrieval model to recommend with", 409)
        users, k, preferences = self._recommend_request(body)
        table = submit("recommend", (users, k, preferences), len(users))
        return records(table), []

    def _recommend_request(self, body) -> tuple[list[str], int, dict]:
        if not isinstance(body, dict) or not isinstance(body.get("users"), list):
            raise RequestError('expected a JSON object {"users": ["u1", ...], "k": 10}')
        users = body["users"]
        if not users or not all(isinstance(u, str | int) and str(u).strip() for u in users):
            raise RequestError('"users" must be a non-empty list of non-empty ids')
        k = body.get("k", self.serve.k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.meta.max_k:
            raise RequestError(f'"k" must be an integer between 1 and {self.meta.max_k}')
        preferences = body.get("preferences") or {}
        if not isinstance(preferences, dict) or not all(
            isinstance(g, list) for g in preferences.values()
        ):
            raise RequestError('"preferences" must map user ids to lists of genres')
        # Each user once, in the order given, as `recommend --users` reads them.
        ids = list(dict.fromkeys(str(u).strip() for u in users))
        return ids, k, {str(u): [str(g) for g in v] for u, v in preferences.items()}

    def _recommend_batch(self, parts: list) -> list:
        """One `Recommender.recommend` per distinct k over the batch's users."""
        out: list = [None] * len(parts)
        for k in sorted({part[1] for part in parts}):
            chosen = [n for n, part in enumerate(parts) if part[1] == k]
            users = list(dict.fromkeys(u for n in chosen for u in parts[n][0]))
            preferences = {u: g for n in chosen for u, g in parts[n][2].items()}
            table = self.recommender.recommend(users, k, self.serve.batch_size, preferences)
            by_user = dict(tuple(table.groupby("user", sort=False)))
            empty = table.iloc[:0]
            for n in chosen:
                frames = [by_user.get(u, empty) for u in parts[n][0]]
                out[n] = pd.concat(frames, ignore_index=True)
        return out

    def routes(self, app, server) -> None:
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request

        from shared.server import json_body

        @app.post("/recommend")
        async def recommend(request: Request):
            with server.expecting() as submit:  # a forming batch may wait for this request
                body = await json_body(request)
                work = lambda: self.recommend(body, submit)  # noqa: E731
                count = len(body["users"]) if isinstance(body, dict) and "users" in body else 0
                return await run_in_threadpool(server.answer, "/recommend", work, count)

    def metadata(self) -> dict:
        return {
            "schema": self.schema.to_dict(),
            "outputs": ["row", self.user_col, self.item_col, self.scorer.column],
            "explicit_ratings": self.meta.explicit_ratings,
            "rating_range": self.meta.rating_range,
            "users": len(self.scorer.users_),
            "items": len(self.scorer.items_),
            "recommend": {
                "available": self.recommender is not None,
                "default_k": self.serve.k,
                "max_k": self.meta.max_k,
                "request": {"users": ["u1", "u2"], "k": self.serve.k},
            },
            "request": {"rows": [{self.user_col: "u1", self.item_col: "i1"}]},
        }


def load(config, run: RunDir) -> RecsysAdapter:
    return RecsysAdapter(config, run)
