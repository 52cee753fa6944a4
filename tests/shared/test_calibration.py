import numpy as np
import pytest

from shared.calibration import fit_temperature, negative_log_likelihood, scaled_probabilities
from shared.evaluation import expected_calibration_error


def overconfident(n=4000, temperature=3.0, seed=0):
    """Labels drawn from softmax(z), reported as logits 3 * z: a model 3x too confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    prob = scaled_probabilities(z, 1.0)
    y = np.array([rng.choice(3, p=p) for p in prob])
    return z * temperature, y


def test_temperature_recovers_a_known_miscalibration_and_ece_drops():
    logits, y = overconfident()
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = scaled_probabilities(logits, 1.0)
    after = scaled_probabilities(logits, t)
    ece_before = expected_calibration_error((before.argmax(1) == y), before.max(1))
    ece_after = expected_calibration_error((after.argmax(1) == y), after.max(1))
    assert ece_before > 0.1 and ece_after < 0.03
    assert negative_log_likelihood(logits, y, t) < negative_log_likelihood(logits, y, 1.0)
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))  # ranking unchanged


def test_multilabel_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (3000, 2))
    y = (rng.random((3000, 2)) < 1 / (1 + np.exp(-z))).astype(float)
    assert fit_temperature(z * 0.5, y, multilabel=True) == pytest.approx(0.5, rel=0.1)
    np.testing.assert_allclose(
        scaled_probabilities([[0.0, 2.0]], 2.0, True), [[0.5, 1 / (1 + np.exp(-1))]]
    )


def test_bad_calibration_input():
    with pytest.raises(ValueError, match="Received: logits"):
        fit_temperature(np.zeros(3), [0, 1, 0])
    with pytest.raises(ValueError, match="Received: temperature=0"):
        scaled_probabilities(np.zeros((1, 2)), 0)
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0)) == 1.0
