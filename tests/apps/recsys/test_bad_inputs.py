"""The recsys pair scorer registered with the common bad-input table (tests/scorer_contract.py)."""

import pandas as pd
import pytest

from tests.scorer_contract import GOOD_ROWS, ScorerContract


class TestRecsysBadInputs(ScorerContract):
    APP = "recsys"
    INPUT = "table"
    NOT_APPLICABLE = {
        "nan_and_inf": "the pair scorer reads two id columns and no number",
        "wrong_type": "ids are strings: any value is a well-typed id (unknown ones are rejects)",
    }

    @pytest.fixture
    def scoring_run(self, trained):
        root, sets = trained
        return (root / "runs" / "recsys" / "latest").resolve(), sets

    def good_table(self, run):
        """Pairs of a user and an item both seen in training, under the scorer's column names."""
        user, item = pd.read_csv(run / "test_split.csv", nrows=0).columns[:2]
        known = pd.read_parquet(run / "known_items.parquet").head(GOOD_ROWS)
        return pd.DataFrame({user: known["user"].astype(str), item: known["item"].astype(str)})

    def required_column(self, run):
        """The user column, under whatever name the data gave it."""
        return self.good_table(run).columns[0]

    def unknown_id_row(self, row: dict) -> dict:
        first = next(iter(row))
        return {**row, first: "zz-user-never-seen"}
