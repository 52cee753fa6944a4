"""Speech models: networks on (frames, bins) feature tensors (a residual 2-D CNN and a CRNN),
the classic baselines on MFCC statistics (scikit-learn), and what a run saves of them: the
model file, its SavedModel and its typed `model_meta.json`.

librosa features cannot run inside a Keras graph, so the networks take the features; their
first layers are the training-only augmentation and a Normalization layer holding the
training set's per-bin mean and variance, so the saved model needs nothing else.
"""

import dataclasses

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from apps.nlp.speech.augment import augmentation
from apps.nlp.speech.config import AugmentConfig, BaselineConfig, Config, ModelConfig
from shared import training
from shared.export import export_saved_model, load_saved_model, model_input_spec
from shared.layers import ResidualBlock
from shared.run import RunDir
from shared.steps import ModelMeta

BASELINE_NAMES = {"svm": "mfcc_svm", "logistic": "mfcc_logistic"}  # leaderboard names

BN_MOMENTUM = 0.9  # moving statistics settle within the few hundred steps of a small set


def build_model(
    config: ModelConfig,
    augment: AugmentConfig,
    n_classes: int,
    shape: tuple[int, int],
    mean: np.ndarray,
    variance: np.ndarray,
    kind: str = "logmel",
) -> keras.Model:
    """The configured network: features (batch, frames, bins) float32 in, probabilities out."""
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes. Received: n_classes={n_classes}")
    inputs = keras.Input(shape=tuple(shape), dtype="float32", name="features")
    x = inputs
    augment_layers = augmentation(augment, kind)
    if augment_layers is not None:
        x = augment_layers(x)
    x = keras.layers.Normalization(
        axis=-1, mean=mean, variance=variance, dtype="float32", name="normalize"
    )(x)
    x = keras.layers.Reshape((*shape, 1), name="channel")(x)
    body = _cnn_body if config.architecture == "cnn" else _crnn_body
    x = body(x, config)
    x = keras.layers.Dropout(config.dropout)(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"speech_{config.architecture}")


def _conv_bn_relu(x, filters: int):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return keras.layers.ReLU()(x)


def _cnn_body(x, config: ModelConfig):
    """A 3x3 stem and 2x2 pool, then one residual block per stage (each after the first halves
    time and frequency), then global average pooling."""
    x = _conv_bn_relu(x, config.filters[0])
    x = keras.layers.MaxPooling2D(name="stem_pool")(x)
    for stage, filters in enumerate(config.filters):
        block = ResidualBlock(
            filters, strides=2 if stage else 1, momentum=BN_MOMENTUM, name=f"stage{stage}"
        )
        x = block(x)
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def _crnn_body(x, config: ModelConfig):
    """Conv stages that pool frequency (and time once), then a bidirectional GRU over time."""
    for stage, filters in enumerate(config.filters):
        x = _conv_bn_relu(x, filters)
        x = keras.layers.MaxPooling2D((2 if stage == 0 else 1, 2))(x)
    frames, bins, channels = x.shape[1], x.shape[2], x.shape[3]
    x = keras.layers.Reshape((frames, bins * channels), name="to_sequence")(x)
    x = keras.layers.Bidirectional(
        keras.layers.GRU(config.rnn_units, return_sequences=True), name="bigru"
    )(x)
    return keras.layers.GlobalAveragePooling1D(name="pool")(x)


def compile_network(model: keras.Model, config: Config, n_train: int, n_classes: int) -> None:
    """Label-smoothed cross-entropy, accuracy and (with more words than k) top-k accuracy."""
    top_k = config.evaluate.top_k
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if n_classes > top_k:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(top_k, name=f"top{top_k}"))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.model.label_smoothing)
    training.compile_model(model, config.train, n_train, loss, metrics)


def predict_features(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The network's probabilities for (clips, frames, bins) features, `batch_size` at a time."""
    if not len(x):
        return np.zeros((0, model.output.shape[-1]), np.float32)
    return np.concatenate(
        [model.predict_on_batch(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    )


@dataclasses.dataclass
class Meta(ModelMeta):
    """A speech run's `model_meta.json`: what scoring needs to feed the network its numbers."""

    APP = "speech"

    class_names: list[str]  # the words, in the order of the network's outputs
    features: dict  # the feature parameters it was trained on; scoring refuses others
    features_digest: str  # short digest of `features` (the feature cache folder's name)
    feature_shape: list[int]  # (frames, bins) of one clip's features: the network's input
    checks: dict  # min_seconds and silence_db: which recordings are usable
    architecture: str  # the network: cnn or crnn
    split_mode: str  # how the clips were split: own (lists, split column), speaker or random


def load_model(run: RunDir) -> keras.Model:
    """The run's saved network, loaded in safe mode (its augmentation layers are registered by
    this module's import of them)."""
    return load_saved_model(run.model_path)


def write_saved_model(model: keras.Model, folder: str) -> None:
    """The network as a SavedModel whose `serve` takes float32 features (batch, frames, bins)."""
    export_saved_model(model, folder, model_input_spec(model))


def build_baseline(kind: str, config: BaselineConfig, seed: int) -> Pipeline:
    """Standardised MFCC statistics into an RBF SVM or a (multinomial) logistic regression."""
    if kind == "svm":
        classifier = SVC(kernel="rbf", C=config.svm_c, gamma="scale", random_state=seed)
    elif kind == "logistic":
        classifier = LogisticRegression(C=config.logistic_c, max_iter=2000, random_state=seed)
    else:
        raise ValueError(f"unknown baseline. Received: kind={kind!r}")
    return Pipeline([("standardise", StandardScaler()), (kind, classifier)])


def baseline_scores(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(clips, n_classes) scores whose argmax is the prediction and whose order ranks the words:
    probabilities for the logistic regression, one-vs-rest decision values for the SVM (Platt
    probabilities would cost five more fits and can disagree with its own prediction).
    A word missing from the training split scores -inf."""
    scores = (
        model.predict_proba(x) if hasattr(model, "predict_proba") else model.decision_function(x)
    )
    if scores.ndim == 1:  # a two-word SVM gives one decision value, positive for classes_[1]
        scores = np.stack([-scores, scores], axis=1)
    full = np.full((len(x), n_classes), -np.inf)
    full[:, model.classes_] = scores
    return full
