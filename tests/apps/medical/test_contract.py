"""The medical app registered with the common contract test (tests/contract.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apps.medical.model import Meta
from apps.medical.sample import generate
from shared.run import RunDir
from tests.contract import AppContract


class TestMedicalContract(AppContract):
    APP = "medical"

    @pytest.fixture
    def contract_run(self, trained):
        _, sets, run = trained
        return run, sets

    def serving_batch(self, run: Path) -> np.ndarray:
        """Raw uint8 radiographs at 40 px, a size the model does not work at (it resizes)."""
        return np.stack(generate(6, 40, seed=3)["train_images"])[..., None]

    def check_scores(self, run: Path, model, scored: pd.DataFrame, test_input: str) -> None:
        """Every image of the test NPZ is scored, in order, with the model's calibrated
        probabilities and the decision at the saved operating point."""
        assert Path(test_input) == run / "test_split.npz"
        with np.load(test_input, allow_pickle=False) as archive:
            images = archive["images"]
        assert scored.id.tolist() == [f"{test_input}:images:{i}" for i in range(len(images))]
        meta = Meta.read(RunDir(run))
        prob = model.predict(images, verbose=0)
        columns = [f"p_{name}" for name in meta.class_names]
        np.testing.assert_allclose(scored[columns].to_numpy(), prob, atol=1e-5)
        threshold = meta.operating_point.thresholds["abnormal"]
        flagged = scored.p_abnormal >= threshold
        assert (scored.decision == np.where(flagged, "abnormal", "normal")).all()
