"""The text scorer registered with the common bad-input table (tests/scorer_contract.py)."""

import pytest

from tests.scorer_contract import ScorerContract


class TestTextBadInputs(ScorerContract):
    APP = "nlp"
    INPUT = "table"
    REQUIRED_COLUMN = "text"
    TEXT_COLUMN = "text"
    NOT_APPLICABLE = {
        "nan_and_inf": "the text scorer reads one text column and no number",
        "wrong_type": "every value of a text column is text",
        "unknown_ids": "texts carry no ids; unseen words are the tokenizer's out-of-vocabulary",
    }

    @pytest.fixture
    def scoring_run(self, trained):
        root, sets = trained
        return (root / "runs" / "nlp" / "latest").resolve(), sets
