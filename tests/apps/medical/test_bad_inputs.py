"""The medical scorer registered with the common bad-input table (tests/scorer_contract.py)."""

from pathlib import Path

import pytest

from tests.scorer_contract import ScorerContract

SAMPLES = Path(__file__).resolve().parents[3] / "datasets" / "medical" / "samples"


class TestMedicalBadInputs(ScorerContract):
    APP = "medical"
    INPUT = "files"
    ALSO = ("npz",)
    SUFFIX = ".png"

    @pytest.fixture
    def scoring_run(self, trained):
        _, sets, run = trained
        return run, sets

    def good_files(self, run, tmp_path):
        """The committed sample's PNG images (the tiny run's test split is an NPZ)."""
        return sorted(SAMPLES.glob("*.png"))
