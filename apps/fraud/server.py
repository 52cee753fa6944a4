"""`deepfield fraud serve`: raw transactions as JSON rows, answered as `score` answers a file.

Each request is scored as a file of its rows would be: the history features (counts and sums
per entity over the windows) come from the request's own earlier rows, and an id repeated
within the request is a reject, so an answer never depends on what other clients sent. The
requests of a batch are checked, featurised and scored together, in one pass of the run's own
`TransactionScorer` (validation costs more than the network on a few rows: batching only the
network would leave the server bound by per-request checks).
"""

import copy

import numpy as np
import pandas as pd

from apps.fraud.data import input_name, model_inputs
from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.model import RISK_SCORE
from apps.fraud.scorer import TransactionScorer
from shared.run import RunDir
from shared.scoring import group_of_rows, score_joined_groups
from shared.server import Adapter, submit_rows, table_rows_call


class RequestHistory:
    """The run's feature builder over several requests' rows at once, each request's history
    its own: an entity's id is prefixed with its request's number before the builder sees it.
    Rows are numbered 1..N across the requests, as `score_joined_groups` numbers them."""

    def __init__(self, spec: FeatureSpec, bounds: np.ndarray):
        self.spec, self.bounds = spec, bounds

    def transform(self, typed: pd.DataFrame) -> pd.DataFrame:
        rows = typed
        if self.spec.has_history and len(self.bounds) > 2:
            request = group_of_rows(self.bounds, typed.index.to_numpy())
            rows = typed.copy()
            entity = typed[self.spec.entity].astype(str)
            rows[self.spec.entity] = request.astype(str) + "\x1f" + entity
        return FeatureBuilder(self.spec).transform(rows)


class FraudAdapter(Adapter):
    kind = "rows"

    def __init__(self, scorer: TransactionScorer, run: RunDir):
        self.scorer, self.run = scorer, run
        self.table_schema = scorer.schema  # POST /score also takes the transactions as a CSV

    def model_calls(self) -> dict:
        return {"score": table_rows_call(self.scorer.schema, self._score_batch)}

    def warm_up(self) -> None:
        """Trace `predict_on_batch` for any batch size: Keras traces again for each new
        shape until its second, then keeps a function for any batch (`reduce_retracing`)."""
        meta = self.scorer.meta
        for n in (1, 2, 3):
            arrays = {input_name(c): np.zeros((n, 1), np.float32) for c in meta.numeric_inputs}
            for c in meta.categorical_inputs:
                arrays[input_name(c)] = np.full((n, 1), "", dtype=object)
            self.scorer.model.predict_on_batch(arrays)

    def _score_batch(self, frame: pd.DataFrame, bounds: np.ndarray) -> tuple:
        """The batch's requests (joined, rows numbered 1..N) checked and scored in one pass."""
        scorer = copy.copy(self.scorer)  # the run's scorer, with the batch's feature state
        scorer.features = RequestHistory(self.scorer.features.spec, bounds)
        scorer.predict = self._predict
        return score_joined_groups(frame, bounds, self.scorer.schema, scorer)

    def _predict(self, frame: pd.DataFrame) -> dict:
        """`TransactionScorer.predict`, as one `predict_on_batch` for a batch that fits its
        batch size: the same outputs, without `model.predict`'s set-up per call (about 0.2 s
        on 2 cores, 10 to 50 times the network's own time on a server's few rows)."""
        if len(frame) > self.scorer.batch_size:
            return self.scorer.predict(frame)
        meta = self.scorer.meta
        arrays = model_inputs(frame, meta.numeric_inputs, meta.categorical_inputs)
        return {k: np.asarray(v) for k, v in self.scorer.model.predict_on_batch(arrays).items()}

    def score(self, rows: list[dict], submit) -> tuple[list[dict], list[dict]]:
        return submit_rows(submit, "score", rows)

    def metadata(self) -> dict:
        meta = self.scorer.meta
        return {
            "schema": self.scorer.schema.to_dict(),
            "outputs": self.scorer.output_columns,
            "decision": {
                "model": meta.decision_model,
                "column": RISK_SCORE,
                "threshold": meta.threshold,
                "rule": meta.threshold_optimises,
                "flag_when": f"{RISK_SCORE} >= threshold",
            },
            "networks": meta.networks,
            "classes": ["pass", "flag"],
            "request": {"rows": [dict.fromkeys(self.scorer.schema.names, "...")]},
        }


def load(config, run: RunDir) -> FraudAdapter:
    return FraudAdapter(TransactionScorer.from_run(run, config.score.batch_size), run)
