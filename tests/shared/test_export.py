"""Loading a saved model safely, and the SavedModel export that serves it in inference mode."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared.export import export_saved_model, load_saved_model, model_input_spec
from shared.io import DataError
from shared.layers import ResidualBlock


def test_load_saved_model_round_trip_and_missing_file(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = ResidualBlock(4)(inputs)  # a shared layer, registered by load_saved_model itself
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    model.save(tmp_path / "m.keras")
    loaded = load_saved_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(DataError, match="no saved model"):
        load_saved_model(tmp_path / "missing.keras")


def test_export_serves_batch_norm_in_inference_mode(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs)))
    model.get_layer(index=2).moving_mean.assign([5.0, -5.0, 1.0])  # far from any batch's mean
    export_saved_model(model, str(tmp_path / "saved"), model_input_spec(model))
    served = tf.saved_model.load(str(tmp_path / "saved"))  # kept: its variables live with it
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0), atol=1e-5)
