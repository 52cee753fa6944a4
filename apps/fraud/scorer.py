"""Scoring raw transactions with a trained run: check, add the engineered features, score with
every trained network, and decide at the run's threshold."""

import keras
import numpy as np
import pandas as pd

from apps.fraud import serving
from apps.fraud.data import model_inputs
from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.model import NETWORKS, RISK_SCORE, Meta, load_model
from shared.run import RunDir
from shared.scoring import InputSchema, predict_in_batches


class TransactionScorer:
    """Turns validated raw rows into the trained networks' scores and the decision.

    Called chunk by chunk in file order: the feature builder carries each entity's recent rows
    from one chunk to the next.
    """

    def __init__(self, meta: Meta, model: keras.Model, batch_size: int, fitted: dict):
        self.meta = meta
        self.model = model
        self.fitted = fitted  # the scikit-learn models the shipped score needs
        self.features = FeatureBuilder(FeatureSpec(**meta.feature_spec))
        self.schema = InputSchema.from_dict(meta.schema)
        self.batch_size = batch_size
        self.outputs = [NETWORKS[n] for n in meta.networks]
        self.output_columns = (
            ["row"]
            + ([self.schema.id_column] if self.schema.id_column else [])
            + self.outputs
            + [RISK_SCORE, "decision"]
        )

    @classmethod
    def from_run(cls, run: RunDir, batch_size: int) -> "TransactionScorer":
        meta = Meta.read(run)
        return cls(meta, load_model(run), batch_size, serving.load_baselines(run, meta))

    def predict(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The scorer's outputs for rows that already hold the engineered features."""
        arrays = model_inputs(frame, self.meta.numeric_inputs, self.meta.categorical_inputs)
        return predict_in_batches(self.model, arrays, self.batch_size)

    def network_scores(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """`predict`, keyed by network name (`network`, `autoencoder`) instead of output."""
        out = self.predict(frame)
        return {name: out[output] for name, output in NETWORKS.items() if output in out}

    def __call__(self, typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        frame = pd.concat([typed, self.features.transform(typed)], axis=1)
        out = self.predict(frame)
        result = pd.DataFrame({"row": typed.index})
        if self.schema.id_column:
            result[self.schema.id_column] = typed[self.schema.id_column].to_numpy()
        for output in self.outputs:
            result[output] = np.round(out[output], 6)
        risk = serving.risk_scores(self.meta, out, self.fitted)
        result[RISK_SCORE] = np.round(risk, 6)
        flagged = risk >= self.meta.threshold
        result["decision"] = np.where(flagged, "flag", "pass")
        return result
