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


def test_image_export_serves_encoded_bytes_and_carries_its_metadata(tmp_path):
    import io

    from PIL import Image

    from shared.export import export_image_model

    inputs = keras.Input((None, None, 3), dtype="uint8")
    x = keras.layers.Resizing(6, 5)(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    metadata = {"class_names": ["ants", "bees"], "thresholds": [0.25, float("nan")], "app": "v"}
    export_image_model(model, str(tmp_path / "saved"), (6, 5), metadata)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    images = np.random.default_rng(0).integers(0, 256, (2, 6, 5, 3), np.uint8)
    encoded = []
    for image, form in zip(images, ("PNG", "JPEG"), strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=form, quality=100, subsampling=0)
        encoded.append(buffer.getvalue())
    expected = model.predict(images, verbose=0)
    from_bytes = served.serve_bytes(tf.constant(encoded)).numpy()
    np.testing.assert_allclose(from_bytes[0], expected[0], atol=1e-6)  # PNG is lossless
    np.testing.assert_allclose(from_bytes[1], expected[1], atol=0.05)
    np.testing.assert_allclose(served.serve(images).numpy(), expected, atol=1e-6)
    # A gray PNG of another size is decoded to 3 channels and resized inside the graph.
    buffer = io.BytesIO()
    Image.fromarray(images[0, ..., 0]).resize((20, 24)).save(buffer, format="PNG")
    assert served.serve_bytes(tf.constant([buffer.getvalue()])).shape == (1, 2)
    carried = served.signatures["metadata"]()
    assert carried["class_names"].numpy().tolist() == [b"ants", b"bees"]
    assert carried["thresholds"].numpy()[0] == np.float32(0.25)
    assert carried["app"].numpy() == b"v"
