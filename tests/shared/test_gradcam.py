"""shared.gradcam: heatmaps follow the evidence; overlays and the PNG grid."""

import keras
import numpy as np
import pytest

from shared.gradcam import gradcam_heatmaps, last_conv_layer_name, overlay, plot_gradcam_grid


def bright_spot_model():
    """Class 1's score is the mean of a 1x1 'feature' conv output: evidence is where pixels are
    bright."""
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    scores = keras.layers.Concatenate()([-pooled, pooled])
    model = keras.Model(inputs, scores)
    model.get_layer("features").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    return model


def test_heatmap_lights_up_where_the_evidence_is():
    image = np.zeros((1, 8, 8, 1), np.float32)
    image[0, 1:3, 5:7] = 1.0
    heat = gradcam_heatmaps(bright_spot_model(), image, [1])
    assert heat.shape == (1, 8, 8)
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0.0
    assert heat[0, 1:3, 5:7].min() == pytest.approx(1.0)
    assert heat[0, 5:, :3].max() == 0.0
    # The other class has negative gradients everywhere: nothing survives the ReLU.
    assert gradcam_heatmaps(bright_spot_model(), image, [0]).max() == 0.0


def test_last_conv_layer_name_and_error():
    assert last_conv_layer_name(bright_spot_model()) == "features"
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer with a 4-D"):
        last_conv_layer_name(dense)


def test_overlay_and_grid(tmp_path):
    image = np.full((16, 16, 1), 128, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    blended = overlay(image, heat)
    assert blended.shape == (16, 16, 3) and blended.min() >= 0.0 and blended.max() <= 1.0
    assert not np.allclose(blended[0, 0], blended[15, 15])  # hot corner differs from cold one
    path = plot_gradcam_grid([image, image], [heat, heat], ["a", "b"], tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one image"):
        plot_gradcam_grid([], [], [], tmp_path / "none.png")
