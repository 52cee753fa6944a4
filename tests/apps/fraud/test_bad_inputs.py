"""The fraud scorer registered with the common bad-input table (tests/scorer_contract.py)."""

import pytest

from tests.scorer_contract import ScorerContract


class TestFraudBadInputs(ScorerContract):
    APP = "fraud"
    INPUT = "table"
    REQUIRED_COLUMN = "amount"
    NUMERIC_COLUMN = "amount"
    TEXT_COLUMN = "merchant_category"
    NOT_APPLICABLE = {
        "unknown_ids": "ids are free in fraud: an unseen card or merchant is a valid new one "
        "(its category falls to the out-of-vocabulary bucket)",
    }

    @pytest.fixture
    def scoring_run(self, trained):
        root, sets = trained
        return (root / "runs" / "fraud" / "latest").resolve(), sets
