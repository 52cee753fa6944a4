"""Vision networks: a small CNN, a residual network, and a KerasHub backbone with a new head;
loading and exporting a run's model, and its metadata.

Every model takes raw uint8 images of any size and does its own rescaling and resizing, so the
saved and exported models need no preprocessing outside them. The last feature map is the layer
named `features`, which Grad-CAM explains.
"""

import dataclasses

import keras

from apps.vision.config import AugmentConfig, ModelConfig
from shared.export import export_image_model, export_saved_model, image_spec, load_saved_model
from shared.layers import FusedBatchNormalization, RandomResizedCrop, ResidualBlock
from shared.run import RunDir
from shared.steps import ModelMeta
from shared.training import local_preset

FEATURES = "features"  # name of the last 4-D feature map (for Grad-CAM)
# Batch-norm moving statistics must settle within the few hundred steps a small image set
# gives; with Keras's default 0.99 validation accuracy stayed near chance for many epochs.
BN_MOMENTUM = 0.9
INPUT = "uint8 images (batch, height, width, channels), any height and width"  # what it serves


@dataclasses.dataclass
class Meta(ModelMeta):
    """The vision run's `model_meta.json`."""

    class_names: list[str]  # the classes, in the order of the model's outputs
    image_size: list[int]  # [height, width] the model resizes every image to
    channels: int  # 1 gray or 3 RGB: what the model and the scorer read images as
    architecture: str  # cnn, resnet or transfer
    backbone: str | None  # transfer: the KerasHub preset folder; None otherwise
    # train.lr_find: the range test's summary (rate used, suggestions, steps, seconds); None off
    lr_find: dict | None = None

    APP = "vision"


def build_model(
    config: ModelConfig, augment: AugmentConfig, n_classes: int, image_size, channels: int
) -> keras.Model:
    """The configured network, raw images (batch, height, width, channels) uint8 in."""
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes. Received: n_classes={n_classes}")
    inputs = keras.Input(shape=(None, None, channels), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = keras.layers.Resizing(*image_size, antialias=True, name="resize")(x)
    augment_layers = augmentation(augment)
    if augment_layers is not None:
        x = augment_layers(x)
    if config.architecture == "cnn":
        x = _cnn_body(x, config)
    elif config.architecture == "resnet":
        x = _resnet_body(x, config)
    else:
        x = _backbone_body(x, config, channels)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if config.dense_units:
        x = keras.layers.Dropout(config.dropout)(x)
        x = keras.layers.Dense(config.dense_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(config.dropout)(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"vision_{config.architecture}")


def augmentation(config: AugmentConfig) -> keras.Sequential | None:
    """Random flips, resized crops, rotations, zooms, shifts and contrast, active only while
    training."""
    layers = []
    if config.enabled:
        if config.flip != "none":
            layers.append(keras.layers.RandomFlip(config.flip))
        if config.crop_scale:
            layers.append(RandomResizedCrop((config.crop_scale, 1.0), name="random_resized_crop"))
        if config.rotation:
            layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="constant"))
        if config.zoom:
            layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant"))
        if config.translation:
            layers.append(
                keras.layers.RandomTranslation(
                    config.translation, config.translation, fill_mode="constant"
                )
            )
        if config.contrast:
            layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 1)))
    return keras.Sequential(layers, name="augment") if layers else None


def _conv_bn_relu(x, filters: int):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = FusedBatchNormalization(momentum=BN_MOMENTUM)(x)
    return keras.layers.ReLU()(x)


def _cnn_body(x, config: ModelConfig):
    """Stages of `convs_per_stage` 3x3 conv-BN-ReLU and a 2x2 max-pool (the pool left out of
    the last stage)."""
    for stage, filters in enumerate(config.filters):
        for _ in range(config.convs_per_stage):
            x = _conv_bn_relu(x, filters)
        if stage < len(config.filters) - 1:
            x = keras.layers.MaxPooling2D()(x)
    return keras.layers.Identity(name=FEATURES)(x)


def _resnet_body(x, config: ModelConfig):
    """A 3x3 stem, then stages of residual blocks; each stage after the first halves the size."""
    x = _conv_bn_relu(x, config.filters[0])
    for stage, filters in enumerate(config.filters):
        for block in range(config.blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = ResidualBlock(
                filters, strides=strides, momentum=BN_MOMENTUM, name=f"stage{stage}_block{block}"
            )(x)
    return keras.layers.Identity(name=FEATURES)(x)


def load_backbone(preset: str) -> keras.Model:
    """A KerasHub backbone from a local preset folder (never downloaded: anything else is a
    ConfigError naming `model.backbone`)."""
    import keras_hub

    return keras_hub.models.Backbone.from_preset(local_preset(preset, "model.backbone"))


def _backbone_body(x, config: ModelConfig, channels: int):
    backbone = load_backbone(config.backbone)
    backbone.trainable = False  # frozen for the head; `train` unfreezes it to fine-tune
    wanted = backbone.input_shape[-1] if backbone.input_shape else None
    if channels == 1 and wanted == 3:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = backbone(x, training=False)
    if len(x.shape) != 4:
        raise ValueError(
            f"the backbone in {config.backbone} must output a feature map (batch, h, w, c). "
            f"Received: shape={x.shape}"
        )
    return keras.layers.Identity(name=FEATURES)(x)


def find_backbone(model: keras.Model) -> keras.Model | None:
    """The nested KerasHub backbone of a transfer model, if any."""
    import keras_hub

    for layer in model.layers:
        if isinstance(layer, keras_hub.models.Backbone):
            return layer
    return None


def load_model(run: RunDir) -> keras.Model:
    """The run's saved model, loaded safely (custom layers and KerasHub classes registered)."""
    import keras_hub  # noqa: F401  registers the backbone classes a transfer model contains

    return load_saved_model(run.model_path)


def write_saved_model(model: keras.Model, folder: str, meta: Meta | None = None) -> None:
    """`model` as a SavedModel in `folder`: `serve` takes raw uint8 images, `serve_bytes`
    encoded PNG/JPEG files, and `metadata` gives the class names in output order (the decision
    is the most probable class, so there is no threshold to carry)."""
    if meta is None:
        export_saved_model(model, folder, image_spec(model.input.shape[-1]))
        return
    metadata = {
        "app": "vision",
        "class_names": list(meta.class_names),
        "image_size": [int(v) for v in meta.image_size],
        "channels": int(meta.channels),
    }
    export_image_model(model, folder, meta.image_size, metadata)
