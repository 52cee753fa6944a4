"""The vision app registered with the common contract test (tests/contract.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apps.vision.model import Meta
from shared.images import read_image
from shared.run import RunDir
from tests.apps.vision.conftest import pattern
from tests.contract import AppContract


class TestVisionContract(AppContract):
    APP = "vision"

    @pytest.fixture
    def contract_run(self, trained):
        root, sets = trained
        return (root / "runs" / "vision" / "latest").resolve(), sets

    def serving_batch(self, run: Path) -> np.ndarray:
        """Raw uint8 images at a size the model does not work at (20 px: it resizes them)."""
        channels = Meta.read(RunDir(run)).channels
        rng = np.random.default_rng(3)
        gray = np.stack([pattern(c, 20, rng) for c in range(3)])[..., None]
        return np.repeat(gray, channels, axis=-1)

    def check_scores(self, run: Path, model, scored: pd.DataFrame, test_input: str) -> None:
        """Every listed test image is scored, in order, with the model's own top class."""
        assert Path(test_input[1:]) == run / "test_split.txt"
        listed = Path(test_input[1:]).read_text().splitlines()
        assert scored.path.tolist() == listed and all(Path(p).is_absolute() for p in listed)
        meta = Meta.read(RunDir(run))
        images = [read_image(path, meta.channels)[None] for path in listed]
        prob = np.concatenate([model.predict(image, verbose=0) for image in images])
        names = np.array(meta.class_names)
        assert scored.predicted_label.tolist() == names[prob.argmax(axis=1)].tolist()
        np.testing.assert_allclose(scored.probability, prob.max(axis=1), atol=1e-5)
