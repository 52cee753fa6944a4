import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared import lr_find
from shared.config import ScheduledTrainConfig
from shared.run import RunDir


def regression_data(n=256, batch=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def linear_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_rates_rise_geometrically_between_the_bounds():
    rates = lr_find.exponential_rates(1e-6, 1.0, 7)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(rates[1:] / rates[:-1], 10.0, rtol=1e-9)
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        lr_find.exponential_rates(1.0, 1e-3, 10)


def test_smoothing_is_bias_corrected_and_lags_a_jump():
    smoothed = lr_find.smooth([2.0, 2.0, 2.0, 10.0], beta=0.9)
    assert smoothed[:3] == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    assert 2.0 < smoothed[3] < 10.0


def test_suggestions_of_a_known_curve():
    # Flat, a fall steepest at 1e-3, the minimum at 1e-1, then divergence.
    rates = np.geomspace(1e-6, 10, 141)
    logs = np.log10(rates)
    curve = 2.0 - 1.5 / (1 + np.exp(-(logs + 3) * 3)) + np.where(logs > -1, (logs + 1) ** 2, 0)
    found = lr_find.suggest(rates, curve)
    assert found["steep"] == pytest.approx(1e-3, rel=0.2)
    assert found["minimum"] == pytest.approx(1e-1 / 10, rel=0.2)
    assert 1e-4 < found["valley"] < 1e-1  # inside the falling stretch
    assert lr_find.suggest(rates[:6], curve[:6]) == {}  # too few points once the ends go


def test_range_test_stops_on_divergence_and_restores_the_weights():
    model = linear_model()
    before = [w.copy() for w in model.get_weights()]
    result = lr_find.lr_range_test(model, regression_data(), "mse", steps=120, max_lr=100.0)
    assert result.stopped != "done" and len(result.rates) < 120  # MSE at rate 100 blows up
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(result.suggestions) == set(lr_find.SUGGESTIONS)
    assert result.rate == result.suggestions["valley"]
    assert 1e-4 < result.rate < 10.0  # a linear model under Adam learns between these
    assert result.summary()["steps"] == len(result.rates)


def test_find_for_run_sets_the_rate_plots_it_and_reuses_it_on_resume(run_root):
    config = ScheduledTrainConfig(lr_find=True, lr_find_steps=60, learning_rate=0.5)
    run = RunDir.create("demo", {"x": 1}, str(run_root))
    tuned, found = lr_find.find_for_run(
        run, linear_model(), regression_data(), config, "mse", "net"
    )
    assert tuned.learning_rate == found["used"] == found["rate"] != 0.5
    assert math.isfinite(found["seconds"]) and found["pick"] == "valley"
    assert (run.path / "plots" / "lr_find.png").stat().st_size > 10_000
    again, second = lr_find.find_for_run(
        run, linear_model(), regression_data(), config, "mse", "net"
    )
    assert again.learning_rate == tuned.learning_rate and second["seconds"] == found["seconds"]
    off = dataclasses.replace(config, lr_find=False)
    assert lr_find.find_for_run(run, None, None, off, "mse", "net") == (off, None)
