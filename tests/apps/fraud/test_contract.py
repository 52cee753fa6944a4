"""The fraud app registers with the common contract (tests/contract.py)."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps.fraud.data import model_inputs
from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.model import NETWORKS, Meta
from apps.fraud.serving import load_baselines, risk_scores
from shared.run import RunDir
from shared.scoring import InputSchema, predict_in_batches
from tests.contract import AppContract


def scorer_inputs(run, path, rows=None) -> dict:
    """The scorer's input arrays for the rows of a file to score, as `score` computes them."""
    meta = Meta.read(RunDir(run))
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=rows)
    typed, _ = InputSchema.from_dict(meta.schema).validate(raw)
    features = FeatureBuilder(FeatureSpec(**meta.feature_spec)).transform(typed)
    frame = pd.concat([typed, features], axis=1)
    return model_inputs(frame, meta.numeric_inputs, meta.categorical_inputs)


def stacked(outputs: dict) -> np.ndarray:
    """The scorer's named outputs (scores, and the model_features matrix) side by side, one
    row per input row, in name order."""
    rows = len(next(iter(outputs.values())))
    return np.hstack([np.asarray(outputs[name]).reshape(rows, -1) for name in sorted(outputs)])


class TestFraudContract(AppContract):
    APP = "fraud"

    @pytest.fixture
    def contract_run(self, trained):
        root, sets = trained
        return (root / "runs" / "fraud" / "latest").resolve(), sets

    def serving_batch(self, run):
        return scorer_inputs(run, run / "test_split.csv", rows=64)

    def keras_outputs(self, model, batch):
        return stacked(predict_in_batches(model, batch, 32))

    def served_outputs(self, served, batch):
        outputs = served.serve({name: tf.constant(values) for name, values in batch.items()})
        return stacked({name: tensor.numpy() for name, tensor in outputs.items()})

    def check_scores(self, run, model, scored, test_input):
        meta = Meta.read(RunDir(run))
        expected = predict_in_batches(model, scorer_inputs(run, test_input), 256)
        for output in meta.networks:
            name = NETWORKS[output]
            np.testing.assert_allclose(scored[name], expected[name], atol=1e-6)
        risk = risk_scores(meta, expected, load_baselines(RunDir(run), meta))
        np.testing.assert_allclose(scored[meta.decision_output], risk, atol=1e-6)
        near = np.isclose(risk, meta.threshold, atol=1e-6)
        flagged = risk >= meta.threshold
        assert ((scored["decision"] == "flag") == flagged)[~near].all()
