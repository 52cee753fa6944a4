"""Medical networks: raw images in, temperature scaling inside, save -> load -> predict parity."""

import keras
import numpy as np
import pytest

from apps.medical.config import AugmentConfig, ModelConfig
from apps.medical.model import (
    FEATURES,
    TemperatureScaling,
    build_model,
    logits_model,
    set_temperature,
    temperature,
)
from shared.calibration import scaled_probabilities
from shared.gradcam import gradcam_heatmaps


def raw_images(n, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), np.uint8)


@pytest.mark.parametrize(("architecture", "multilabel"), [("cnn", False), ("resnet", True)])
def test_save_load_predict_parity_with_temperature(tmp_path, architecture, multilabel):
    config = ModelConfig(architecture=architecture, filters=[4, 8], dropout=0.1)
    model = build_model(config, AugmentConfig(), 3, [16, 16], 1, multilabel)
    assert model.input.dtype == "uint8" and model.get_layer(FEATURES) is not None
    images = raw_images(5)
    logits = logits_model(model).predict(images, verbose=0)
    set_temperature(model, 2.5)
    expected = scaled_probabilities(logits, 2.5, multilabel)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert temperature(loaded) == pytest.approx(2.5)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
    if not multilabel:
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    # Augmentation is off at inference; images of another size are resized inside the model.
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
    assert loaded.predict(raw_images(2, size=24), verbose=0).shape == (2, 3)


def test_temperature_layer_validation_and_config():
    with pytest.raises(ValueError, match="Received: temperature=0"):
        TemperatureScaling(temperature=0)
    layer = TemperatureScaling(multilabel=True, temperature=2.0)
    assert layer.get_config()["multilabel"] and layer.get_config()["temperature"] == 2.0
    out = keras.ops.convert_to_numpy(layer(np.array([[0.0, 2.0]], np.float32)))
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-np.array([[0.0, 1.0]]))), atol=1e-6)
    with pytest.raises(ValueError, match="Received: temperature=-1"):
        layer.set_temperature(-1)


def test_bad_output_count():
    with pytest.raises(ValueError, match="Received: n_outputs=1"):
        build_model(ModelConfig(filters=[4]), AugmentConfig(), 1, [16, 16], 1)


def test_gradcam_shape_and_normalisation():
    model = build_model(ModelConfig(filters=[4, 8]), AugmentConfig(enabled=False), 2, [16, 16], 1)
    images = raw_images(3, size=20)
    heatmaps = gradcam_heatmaps(logits_model(model), images, [1, 1, 0], FEATURES)
    assert heatmaps.shape == (3, 8, 8)  # one max-pool: half the 16-px model size
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    for heatmap in heatmaps:
        assert heatmap.max() == pytest.approx(1.0) or heatmap.max() == 0.0


@pytest.mark.parametrize("convs", [1, 2])
def test_cnn_has_convs_per_stage_conv_layers_per_stage(convs):
    config = ModelConfig(filters=[4, 8, 16], convs_per_stage=convs)
    model = build_model(config, AugmentConfig(enabled=False), 3, [16, 16], 3)
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in conv] == [f for f in (4, 8, 16) for _ in range(convs)]
    # Two max-pools between three stages whatever the depth of a stage.
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 2
