"""The speech app keeps the common contract (tests/contract.py) on the tiny trained run."""

import numpy as np
import pytest

from apps.nlp.speech.audio import clip_length, fit_clip, read_audio
from apps.nlp.speech.features import extract
from apps.nlp.speech.model import Meta
from shared.run import RunDir
from tests.contract import AppContract


def clip_features(run, paths) -> np.ndarray:
    """The network's input for one-clip recordings: their features as scoring computes them."""
    params = Meta.read(RunDir(run)).features
    rate, length = params["sample_rate"], clip_length(params["sample_rate"], params["clip_seconds"])
    return np.stack([extract(fit_clip(read_audio(p, rate), length), params) for p in paths])


class TestSpeechContract(AppContract):
    APP = "speech"

    @pytest.fixture
    def contract_run(self, trained):
        root, sets = trained
        return (root / "runs" / "speech" / "latest").resolve(), sets

    def serving_batch(self, run):
        return clip_features(run, (run / "test_split.txt").read_text().splitlines()[:3])

    def check_scores(self, run, model, scored, test_input):
        assert (scored.windows == 1).all()  # the test split holds one-clip recordings
        prob = model.predict(clip_features(run, scored.path), verbose=0)
        words = np.array(Meta.read(RunDir(run)).class_names)
        assert (scored.predicted_word.to_numpy() == words[prob.argmax(axis=1)]).all()
        np.testing.assert_allclose(scored.probability, prob.max(axis=1), atol=1e-5)
        np.testing.assert_allclose(scored.top2_probability, np.sort(prob)[:, -2], atol=1e-5)
