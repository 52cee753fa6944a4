"""The speech scorer registered with the common bad-input table (tests/scorer_contract.py)."""

import pytest

from tests.scorer_contract import ScorerContract


class TestSpeechBadInputs(ScorerContract):
    APP = "speech"
    INPUT = "files"
    SUFFIX = ".wav"
    NOT_APPLICABLE = {"huge_image": "audio: the clip length limit is the speech reader's own check"}

    @pytest.fixture
    def scoring_run(self, trained):
        root, sets = trained
        return (root / "runs" / "speech" / "latest").resolve(), sets
