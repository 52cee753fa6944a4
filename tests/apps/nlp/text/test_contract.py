"""The text app against the common contract (tests/contract.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apps.nlp.text.model import Meta, predict_texts
from shared.run import RunDir
from tests.apps.nlp.text.conftest import tiny_frame
from tests.contract import AppContract


class TestTextContract(AppContract):
    APP = "nlp"

    @pytest.fixture
    def contract_run(self, trained):
        root, sets = trained
        return (root / "runs" / "nlp" / "latest").resolve(), sets

    def serving_batch(self, run: Path):
        """Raw strings: one with no known word, one empty, one longer than the model reads."""
        texts = [*tiny_frame(6, seed=3).text, "entirely unseen words", ""]
        return np.array([*texts, "the film was great " * 40])

    def keras_outputs(self, model, batch) -> np.ndarray:
        return predict_texts(model, batch.tolist(), 4)

    def check_scores(self, run: Path, model, scored: pd.DataFrame, test_input: str) -> None:
        texts = pd.read_csv(test_input, keep_default_na=False)["text"].to_numpy()
        names = Meta.read(RunDir(run)).class_names
        expected = predict_texts(model, texts[scored["row"] - 1].tolist(), 8)
        probs = scored[[f"prob_{n}" for n in names]].to_numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert scored["predicted_label"].tolist() == [names[k] for k in expected.argmax(axis=1)]
