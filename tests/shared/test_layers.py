"""shared.layers.ResidualBlock: shapes, shortcut projection, validation, save/load round trip."""

import keras
import numpy as np
import pytest

from shared.layers import ResidualBlock


def test_shapes_and_projection():
    same = ResidualBlock(4)
    assert same.compute_output_shape((None, 8, 8, 4)) == (None, 8, 8, 4)
    out = same(np.ones((2, 8, 8, 4), np.float32))
    assert out.shape == (2, 8, 8, 4) and same.shortcut_conv is None
    down = ResidualBlock(6, strides=2)
    out = down(np.ones((2, 8, 8, 4), np.float32))
    assert out.shape == (2, 4, 4, 6) and down.shortcut_conv is not None
    assert float(keras.ops.min(out)) >= 0.0  # ends in a ReLU


def test_identity_shortcut_carries_the_input():
    block = ResidualBlock(3)
    x = np.random.default_rng(0).uniform(0, 1, (1, 5, 5, 3)).astype(np.float32)
    block(x)
    for weight in block.conv2.weights:  # residual branch outputs zero -> BN beta (0) -> out = x
        weight.assign(np.zeros(weight.shape))
    np.testing.assert_allclose(block(x, training=False), x, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"filters": 0}, "Received: filters=0"),
        ({"filters": 4, "strides": 3}, "Received: strides=3"),
        ({"filters": 4, "kernel_size": 2}, "Received: kernel_size=2"),
        ({"filters": 4, "l2": -1.0}, "Received: l2=-1.0"),
        ({"filters": 4, "momentum": 1.0}, "Received: momentum=1.0"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResidualBlock(**kwargs)


def test_config_and_save_load_round_trip(tmp_path):
    block = ResidualBlock(8, strides=2, kernel_size=5, l2=1e-4, momentum=0.8, name="rb")
    config = block.get_config()
    assert {k: config[k] for k in ("filters", "strides", "kernel_size", "l2", "momentum", "name")} == {
        "filters": 8, "strides": 2, "kernel_size": 5, "l2": 1e-4, "momentum": 0.8, "name": "rb",
    }  # fmt: skip
    assert block.bn1.momentum == 0.8
    inputs = keras.Input((None, None, 3))
    x = block(inputs)
    x = ResidualBlock(8)(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    data = np.random.default_rng(1).normal(size=(2, 12, 12, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("rb"), ResidualBlock)
    np.testing.assert_allclose(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6
    )
