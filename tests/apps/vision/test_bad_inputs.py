"""The vision scorer registered with the common bad-input table (tests/scorer_contract.py)."""

import pytest

from tests.scorer_contract import ScorerContract


class TestVisionBadInputs(ScorerContract):
    APP = "vision"
    INPUT = "files"
    SUFFIX = ".png"

    @pytest.fixture
    def scoring_run(self, trained):
        root, sets = trained
        return (root / "runs" / "vision" / "latest").resolve(), sets
