"""Vision networks: raw images of any size in, save -> load -> predict parity, transfer learning."""

import keras
import numpy as np
import pytest

from apps.vision.config import AugmentConfig, ModelConfig
from apps.vision.model import FEATURES, build_model, find_backbone


def raw_images(n, height, width, channels, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, channels), np.uint8)


@pytest.mark.parametrize("architecture", ["cnn", "resnet"])
def test_save_load_predict_parity(tmp_path, architecture):
    config = ModelConfig(
        architecture=architecture, filters=[4, 8], blocks_per_stage=1, dense_units=8
    )
    model = build_model(config, AugmentConfig(contrast=0.2, flip="horizontal"), 3, [16, 16], 1)
    assert model.input.dtype == "uint8" and model.get_layer(FEATURES) is not None
    images = raw_images(4, 16, 16, 1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    before, after = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    # Augmentation is off at inference: the same image always gets the same answer.
    np.testing.assert_allclose(model.predict(images, verbose=0), before, atol=1e-6)


def test_resizing_is_inside_the_model():
    model = build_model(
        ModelConfig(filters=[4], dense_units=0), AugmentConfig(enabled=False), 2, [8, 8], 3
    )
    small = raw_images(1, 8, 8, 3)
    big = np.repeat(np.repeat(small, 3, axis=1), 3, axis=2)  # 24x24, the same picture
    out_small, out_big = model.predict(small, verbose=0), model.predict(big, verbose=0)
    assert out_big.shape == (1, 2)
    np.testing.assert_allclose(out_big, out_small, atol=0.05)


def test_bad_class_count():
    with pytest.raises(ValueError, match="Received: n_classes=1"):
        build_model(ModelConfig(), AugmentConfig(), 1, [8, 8], 1)


def make_tiny_preset(folder):
    """The smallest KerasHub ResNet backbone, saved as a local preset (no download)."""
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        image_shape=(None, None, 3),
    )
    backbone.save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    return make_tiny_preset(tmp_path_factory.mktemp("preset") / "tiny_resnet")


def test_transfer_model_from_local_preset(tmp_path, tiny_preset):
    config = ModelConfig(architecture="transfer", backbone=str(tiny_preset), dense_units=0)
    model = build_model(config, AugmentConfig(enabled=False), 3, [16, 16], 1)
    backbone = find_backbone(model)
    assert backbone is not None and not backbone.trainable
    assert model.get_layer("gray_to_rgb") is not None  # grayscale images fed to an RGB backbone
    assert all(not w.trainable for w in backbone.weights) and model.trainable_weights
    images = raw_images(2, 16, 16, 1)
    path = tmp_path / "t.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize("convs", [1, 2])
def test_cnn_has_convs_per_stage_conv_layers_per_stage(convs):
    config = ModelConfig(filters=[4, 8], convs_per_stage=convs, dense_units=0)
    model = build_model(config, AugmentConfig(enabled=False), 2, [8, 8], 3)
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in conv] == [f for f in (4, 8) for _ in range(convs)]


def test_recipe_is_the_keras_io_simple_mnist_convnet():
    from apps.vision.recipe import build_recipe

    # keras-io's example on 28x28 digits has 34,826 parameters (its model.summary()).
    model = build_recipe(10, (28, 28), 1)
    assert model.count_params() == 34_826
    # uint8 images of any size in, resized inside, one probability per class out.
    out = keras.ops.convert_to_numpy(model(raw_images(2, 40, 40, 1), training=False))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_the_card_names_the_rate_the_range_test_chose_and_its_cost():
    from apps.vision.card import lr_find_text

    found = {
        "rate": 0.0013, "used": 0.0013, "pick": "valley", "steps": 98, "seconds": 20.5,
        "suggestions": {"valley": 0.0013, "steep": 0.0004, "minimum": 0.0012},
        "stopped": "diverged at step 98",
    }  # fmt: skip
    text = lr_find_text(found)
    assert "0.0013" in text and "98-step range test" in text and "20.5s" in text
    assert lr_find_text(None) == ""
    empty = {"used": 0.003, "stopped": "skipped: the range test runs on one replica"}
    assert "configured rate 0.003" in lr_find_text(empty)


def test_vision_config_takes_the_schedule_and_range_test_switches():
    from apps.vision.config import Config
    from shared.config import ConfigError, load_config

    config = load_config(
        Config, None, ["train.schedule=one_cycle", "train.lr_find=true", "train.backup_every=0"]
    )
    assert (config.train.schedule, config.train.lr_find, config.train.backup_every) == (
        "one_cycle", True, 0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="train.schedule"):
        load_config(Config, None, ["train.schedule=step"])
