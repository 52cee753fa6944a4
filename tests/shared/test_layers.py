"""shared.layers: the residual block (shapes, shortcut projection, validation, save/load round
trip), fused batch normalisation, random resized crops and the Transformer pieces."""

import keras
import numpy as np
import pytest
import tensorflow as tf

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
    assert {
        k: config[k] for k in ("filters", "strides", "kernel_size", "l2", "momentum", "name")
    } == {
        "filters": 8,
        "strides": 2,
        "kernel_size": 5,
        "l2": 1e-4,
        "momentum": 0.8,
        "name": "rb",
    }
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


# --- Transformer pieces: TokenAndPositionEmbedding, TransformerBlock -----------------------------

from shared.layers import TokenAndPositionEmbedding, TransformerBlock  # noqa: E402


def _encoder(vocabulary=20, length=6, width=8):
    ids = keras.Input(shape=(length,), dtype="int32")
    x = TokenAndPositionEmbedding(vocabulary, length, width, name="embed")(ids)
    x = TransformerBlock(width, 2, 16, dropout=0.0, name="block")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(ids, keras.layers.Dense(2, activation="softmax")(x))


def test_embedding_mask_and_positions():
    layer = TokenAndPositionEmbedding(10, 5, 4)
    ids = np.array([[3, 4, 0, 0, 0], [3, 4, 5, 6, 7]])
    out = layer(ids)
    assert out.shape == (2, 5, 4)
    np.testing.assert_array_equal(layer.compute_mask(ids), ids != 0)
    # The same token at two positions gets two different vectors (position embedding added).
    same = layer(np.array([[3, 3, 0, 0, 0]]))
    assert not np.allclose(same[0, 0], same[0, 1])


def test_transformer_block_ignores_padded_positions():
    model = _encoder()
    embed, block = model.get_layer("embed"), model.get_layer("block")
    ids = np.array([[5, 6, 7, 0, 0, 0]])
    x = embed(ids)
    mask = embed.compute_mask(ids)
    # Changing what sits in the padded positions must not change the real ones: the mask hides
    # them from attention. Without the mask it does change them.
    noise = x + np.concatenate([np.zeros((1, 3, 8)), np.ones((1, 3, 8))], axis=1).astype("float32")
    np.testing.assert_allclose(
        block(x, mask=mask)[0, :3], block(noise, mask=mask)[0, :3], atol=1e-5
    )
    assert not np.allclose(block(x)[0, :3], block(noise)[0, :3], atol=1e-3)


@pytest.mark.parametrize(
    "factory,message",
    [
        (lambda: TokenAndPositionEmbedding(0, 4, 4), "Received: vocabulary_size=0"),
        (lambda: TokenAndPositionEmbedding(5, 4, -1), "Received: embedding_dim=-1"),
        (lambda: TransformerBlock(8, 3, 16), "Received: embedding_dim=8, num_heads=3"),
        (lambda: TransformerBlock(8, 2, 0), "Received: feed_forward_dim=0"),
        (lambda: TransformerBlock(8, 2, 16, dropout=1.0), "Received: dropout=1.0"),
    ],
)
def test_transformer_validation(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_transformer_layers_save_load_round_trip(tmp_path):
    model = _encoder()
    embed, block = model.get_layer("embed"), model.get_layer("block")
    assert {
        k: embed.get_config()[k]
        for k in ("vocabulary_size", "sequence_length", "embedding_dim", "mask_zero")
    } == {"vocabulary_size": 20, "sequence_length": 6, "embedding_dim": 8, "mask_zero": True}
    assert {
        k: block.get_config()[k]
        for k in ("embedding_dim", "num_heads", "feed_forward_dim", "dropout")
    } == {"embedding_dim": 8, "num_heads": 2, "feed_forward_dim": 16, "dropout": 0.0}
    ids = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]])
    path = tmp_path / "encoder.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("block"), TransformerBlock)
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), model.predict(ids, verbose=0), atol=1e-6
    )


def test_random_resized_crop_passes_images_through_at_inference_and_crops_in_training():
    from shared.layers import RandomResizedCrop

    images = np.random.default_rng(0).random((6, 12, 12, 3)).astype("float32")
    layer = RandomResizedCrop((0.3, 0.6), seed=1)
    np.testing.assert_array_equal(layer(images, training=False), images)
    crops = keras.ops.convert_to_numpy(layer(images, training=True))
    assert crops.shape == images.shape
    assert not np.allclose(crops, images)  # at most 60% of the area, zoomed back
    flat = np.full((2, 12, 12, 1), 0.25, "float32")  # a crop of a flat image stays flat
    np.testing.assert_allclose(layer(flat, training=True), flat, atol=1e-6)


def test_random_resized_crop_validation_and_save_load(tmp_path):
    from shared.layers import RandomResizedCrop

    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop((0.0, 1.0))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCrop((0.5, 1.0), ratio=(2.0, 1.0))
    model = keras.Sequential([keras.Input((8, 8, 3)), RandomResizedCrop((0.4, 1.0), seed=3)])
    model.save(tmp_path / "crop.keras")
    loaded = keras.saving.load_model(tmp_path / "crop.keras").layers[0]
    assert (loaded.scale, loaded.ratio, loaded.seed) == ((0.4, 1.0), (0.75, 4 / 3), 3)


def test_fused_batch_norm_trains_like_keras_batch_norm_and_saves(tmp_path):
    from shared.layers import FusedBatchNormalization

    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    results = []
    for kind in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = kind(momentum=0.9)
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 4))
        layer.beta.assign(np.linspace(-1.0, 1.0, 4))
        inputs = tf.Variable(x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(inputs, training=True) * upstream)
        grads = tape.gradient(loss, [inputs, layer.gamma.value, layer.beta.value])
        results.append(
            [layer(inputs, training=True).numpy(), *[g.numpy() for g in grads]]
            + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
            + [keras.ops.convert_to_numpy(layer(x, training=False))]
        )
    for keras_bn, fused in zip(*results, strict=True):
        np.testing.assert_allclose(fused, keras_bn, rtol=1e-4, atol=1e-4)
    # not the identity: the moving statistics moved from (0, 1) towards the batch's
    assert results[1][4].mean() > 0.1 and results[1][5].mean() > 1.5
    model = keras.Sequential([keras.Input((5, 5, 4)), FusedBatchNormalization(momentum=0.8)])
    model.save(tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras", safe_mode=True).layers[0]
    assert isinstance(loaded, FusedBatchNormalization) and loaded.momentum == 0.8
