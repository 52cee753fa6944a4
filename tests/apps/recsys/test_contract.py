"""The recsys app registers with the common contract (tests/contract.py).

The contract's model is the run's model.keras, the MF rating network that the smoke config
serves. The export holds two SavedModels (saved_model/rating and saved_model/retrieval), so the
export test is overridden to load the `rating` sub-folder, and checks `retrieval` beside it.
"""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps.recsys.model import Meta, load_model
from shared.run import RunDir
from tests.contract import AppContract


def pairs(path, rows=None) -> dict:
    """The (user, item) id columns of a file `score` reads, as the rating networks take them."""
    frame = pd.read_csv(path, dtype=str, nrows=rows)
    return {"user": frame["user_id"].to_numpy(str), "item": frame["item_id"].to_numpy(str)}


class TestRecsysContract(AppContract):
    APP = "recsys"

    @pytest.fixture
    def contract_run(self, trained):
        root, sets = trained
        return (root / "runs" / "recsys" / "latest").resolve(), sets

    def serving_batch(self, run):
        return pairs(run / "test_split.csv", rows=16)

    def keras_outputs(self, model, batch):
        tensors = {name: tf.constant(ids) for name, ids in batch.items()}
        return np.asarray(model.predict(tensors, verbose=0)).reshape(-1)

    def served_outputs(self, served, batch):
        tensors = {name: tf.constant(ids) for name, ids in batch.items()}
        return np.asarray(served.serve(tensors)).reshape(-1)

    def check_scores(self, run, model, scored, test_input):
        low, high = Meta.read(RunDir(run)).rating_range
        batch = pairs(test_input)
        scored_rows = scored["row"].to_numpy() - 1  # `row` counts the input's rows from 1
        expected = self.keras_outputs(model, {k: v[scored_rows] for k, v in batch.items()})
        np.testing.assert_allclose(
            scored["predicted_rating"], np.round(np.clip(expected, low, high), 4), atol=1e-4
        )

    def test_exported_saved_model_matches_the_keras_model(self, contract_run, tmp_path):
        """The contract's export test on saved_model/rating; saved_model/retrieval serves the
        retrieval model's top-K items and scores."""
        run, args = contract_run
        target = tmp_path / "export"
        assert self.cli("export", *args, "--output", str(target)) == 0
        batch = self.serving_batch(run)
        served = tf.saved_model.load(str(target / "rating"))
        np.testing.assert_allclose(
            self.served_outputs(served, batch),
            self.keras_outputs(self.load_model(run), batch),
            rtol=1e-4,
            atol=1e-5,
        )
        users = tf.constant(sorted(set(batch["user"])))
        retrieval = tf.saved_model.load(str(target / "retrieval"))  # kept: it owns the variables
        served = retrieval.serve(users)
        expected = load_model(RunDir(run), "two_tower")(users)
        assert np.asarray(served["items"]).tolist() == np.asarray(expected["items"]).tolist()
        np.testing.assert_allclose(served["scores"], expected["scores"], rtol=1e-5, atol=1e-6)
