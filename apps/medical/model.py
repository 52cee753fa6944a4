"""Medical networks: a small CNN, a residual network or a KerasHub backbone, calibrated outputs.

Every model takes raw uint8 images of any size (rescaling and resizing are layers inside it) and
ends in logits (the layer named `logits`), a built-in `Rescaling` by 1/T (the layer named
`temperature`, T fitted on validation) and a built-in softmax (one class per image) or sigmoid
(multi-label, per finding) `Activation` named `probabilities`. The saved and exported models
therefore give calibrated probabilities, and a saved `cnn` model loads with `keras` alone (no
project code registered).
The last feature map is the layer named `features`, which Grad-CAM explains.

`Meta` is the run's `model_meta.json`; `load_model` and `write_saved_model` read and export a
trained run's model.
"""

import dataclasses

import keras

from apps.medical.config import AugmentConfig, ModelConfig
from shared.export import export_image_model, export_saved_model, image_spec, load_saved_model
from shared.layers import ResidualBlock
from shared.run import RunDir
from shared.steps import ModelMeta
from shared.training import local_preset

FEATURES = "features"  # the last 4-D feature map (for Grad-CAM)
LOGITS = "logits"  # uncalibrated scores (for fitting the temperature)
TEMPERATURE = "temperature"  # the Rescaling by 1/T between the logits and the probabilities
BN_MOMENTUM = 0.9  # moving statistics must settle within the few hundred steps a small set gives
SERVED_INPUT = (
    "uint8 images (batch, height, width, channels), any height and width; "
    "DICOM pixels are rescaled and windowed to 8 bits before the model"
)


@dataclasses.dataclass
class OperatingPoint:
    """The decision thresholds on calibrated probabilities, chosen on validation."""

    metric: str  # the rate that must hold: sensitivity or specificity
    target: float  # its minimum on the split the thresholds were chosen on
    chosen_on: str  # that split: validation
    # class (binary: the positive one) or finding (multi-label) -> the lowest probability
    # flagged; empty for multi-class, where the most probable class is the decision
    thresholds: dict[str, float]


@dataclasses.dataclass
class Meta(ModelMeta):
    """The medical run's `model_meta.json`: what scoring and evaluation need of the model."""

    APP = "medical"

    task: str  # binary, multiclass or multilabel
    class_names: list[str]  # classes (or findings) in output order
    image_size: list[int]  # [height, width] the model resizes its input to
    channels: int  # 1 gray or 3 RGB: what the served model takes
    window: str  # the DICOM window preset scoring applies ('' the file's own)
    architecture: str  # cnn, resnet or transfer
    backbone: str | None  # transfer: the local KerasHub preset folder
    temperature: float  # fitted on validation logits, applied inside the model
    val_ece_before: float  # validation expected calibration error at T = 1
    val_ece_after: float  # ... and at the fitted temperature
    val_nll_before: float  # validation negative log-likelihood at T = 1
    val_nll_after: float  # ... and at the fitted temperature
    positive_index: int | None  # binary: the class a decision flags; else None
    operating_point: OperatingPoint  # the thresholds decisions use
    temperature_fitted: float | None = None  # the validation-NLL optimum (None: older runs)
    temperature_kept_one: bool = False  # True: the fit did not lower validation ECE, T = 1
    lr_find: dict | None = None  # train.lr_find's range test (rate used, suggestions, seconds)

    def __post_init__(self):
        if isinstance(self.operating_point, dict):  # read back from JSON
            self.operating_point = OperatingPoint(**self.operating_point)


@keras.saving.register_keras_serializable(package="deepfield")
class TemperatureScaling(keras.layers.Layer):
    """Probabilities from logits divided by a stored temperature (Guo et al., 2017).

    Models trained before the temperature became a built-in `Rescaling` hold this layer; it
    stays registered so their runs still load, score and export. New models do not use it.

    Args:
        multilabel: a sigmoid per column (several findings per image) instead of a softmax.
        temperature: the initial temperature (1.0: the plain softmax/sigmoid); the fitted value
            is set with `set_temperature` and saved with the weights.
    """

    def __init__(self, multilabel=False, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
        self.multilabel = bool(multilabel)
        self.initial_temperature = float(temperature)
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
            name="temperature",
        )

    def call(self, logits):
        scaled = keras.ops.cast(logits, "float32") / keras.ops.cast(self.temperature, "float32")
        return keras.ops.sigmoid(scaled) if self.multilabel else keras.ops.softmax(scaled, axis=-1)

    def set_temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"`temperature` must be > 0. Received: temperature={value}")
        self.temperature.assign(float(value))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"multilabel": self.multilabel, "temperature": self.initial_temperature})
        return config


def build_model(
    config: ModelConfig,
    augment: AugmentConfig,
    n_outputs: int,
    image_size,
    channels: int,
    multilabel: bool = False,
) -> keras.Model:
    """The configured network: raw uint8 images (batch, height, width, channels) in."""
    if n_outputs < (1 if multilabel else 2):
        raise ValueError(
            f"need at least 2 classes (1 finding for multi-label). Received: n_outputs={n_outputs}"
        )
    inputs = keras.Input(shape=(None, None, channels), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = keras.layers.Resizing(*image_size, antialias=True, name="resize")(x)
    layers = augmentation(augment)
    if layers is not None:
        x = layers(x)
    if config.architecture == "transfer":
        x = _backbone(x, config.backbone, channels)
    else:
        x = _conv_stages(x, config)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    logits = keras.layers.Dense(n_outputs, dtype="float32", name=LOGITS)(x)
    # Built-in layers: a hospital's scoring host loads model.keras with keras alone.
    scaled = keras.layers.Rescaling(1.0, dtype="float32", name=TEMPERATURE)(logits)
    activation = "sigmoid" if multilabel else "softmax"
    outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(scaled)
    return keras.Model(inputs, outputs, name=f"medical_{config.architecture}")


def augmentation(config: AugmentConfig) -> keras.Sequential | None:
    """Small rotations, shifts, zooms and contrast changes (flips only if asked), training only."""
    if not config.enabled:
        return None
    layers = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="nearest"))
    if config.translation or config.zoom:
        layers.append(
            keras.layers.RandomTranslation(
                config.translation, config.translation, fill_mode="nearest"
            )
        )
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="nearest"))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 1)))
    return keras.Sequential(layers, name="augment") if layers else None


def _conv_stages(x, config: ModelConfig):
    """cnn: per stage `convs_per_stage` 3x3 conv-BN-ReLU layers and a max-pool; resnet: a stem,
    then residual blocks that halve the size at each new stage. Either ends in `features`."""
    if config.architecture == "resnet":
        x = keras.layers.Conv2D(config.filters[0], 3, padding="same", use_bias=False, name="stem")(
            x
        )
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x))
    for stage, filters in enumerate(config.filters):
        if config.architecture == "resnet":
            for block in range(config.blocks_per_stage):
                x = ResidualBlock(
                    filters,
                    strides=2 if stage and not block else 1,
                    momentum=BN_MOMENTUM,
                    name=f"stage{stage}_block{block}",
                )(x)
            continue
        for _ in range(config.convs_per_stage):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x))
        if stage < len(config.filters) - 1:
            x = keras.layers.MaxPooling2D()(x)
    return keras.layers.Identity(name=FEATURES)(x)


def _backbone(x, preset: str, channels: int):
    """A frozen KerasHub backbone from a local preset folder (never downloaded: anything else
    is a ConfigError naming `model.backbone`)."""
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(local_preset(preset, "model.backbone"))
    backbone.trainable = False
    if channels == 1 and backbone.input_shape and backbone.input_shape[-1] == 3:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = backbone(x, training=False)
    if len(x.shape) != 4:
        raise ValueError(
            f"the backbone in {preset} must output a feature map (batch, h, w, c). "
            f"Received: shape={x.shape}"
        )
    return keras.layers.Identity(name=FEATURES)(x)


def logits_model(model: keras.Model) -> keras.Model:
    """The same network up to its uncalibrated logits (shares the weights)."""
    return keras.Model(model.input, model.get_layer(LOGITS).output)


def set_temperature(model: keras.Model, value: float) -> None:
    """Divide the logits by `value` from now on (and in the saved config)."""
    if value <= 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={value}")
    if not _has_layer(model, TEMPERATURE):  # a run saved with TemperatureScaling
        model.get_layer("probabilities").set_temperature(value)
        return
    # Rescaling reads its scale at call time; a predict function traced before would keep
    # the old one as a constant, so it is dropped and traced again on the next predict.
    model.get_layer(TEMPERATURE).scale = 1.0 / float(value)
    model.predict_function = None


def temperature(model: keras.Model) -> float:
    if not _has_layer(model, TEMPERATURE):
        return float(keras.ops.convert_to_numpy(model.get_layer("probabilities").temperature))
    return 1.0 / float(model.get_layer(TEMPERATURE).scale)


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def load_model(run: RunDir) -> keras.Model:
    """The run's saved model, loaded safely (custom layers and KerasHub classes registered)."""
    import keras_hub  # noqa: F401  registers the backbone classes a transfer model contains

    return load_saved_model(run.model_path)


def write_saved_model(model: keras.Model, folder: str, meta: Meta | None = None) -> None:
    """The model as a SavedModel: `serve` takes raw uint8 images of any size, `serve_bytes`
    encoded PNG/JPEG files, and `metadata` gives the class names, the temperature and the
    operating thresholds (NaN for a class without one) a scoring host needs."""
    if meta is None:
        export_saved_model(model, folder, image_spec(model.input.shape[-1]))
        return
    thresholds = meta.operating_point.thresholds
    positive = meta.class_names[meta.positive_index] if meta.positive_index is not None else ""
    metadata = {
        "app": "medical",
        "task": meta.task,
        "class_names": list(meta.class_names),
        "positive_class": positive,
        "thresholds": [float(thresholds.get(name, float("nan"))) for name in meta.class_names],
        "operating_metric": meta.operating_point.metric,
        "operating_target": float(meta.operating_point.target),
        "temperature": float(meta.temperature),
        "image_size": [int(v) for v in meta.image_size],
        "window": meta.window,
    }
    export_image_model(model, folder, meta.image_size, metadata)
