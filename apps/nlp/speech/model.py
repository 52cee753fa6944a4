"""Speech models: networks on (frames, bins) feature tensors (a residual 2-D CNN and a CRNN),
the classic baselines on MFCC statistics (scikit-learn), and what a run saves of them: the
model file, its SavedModel and its typed `model_meta.json`.

librosa features cannot run inside a Keras graph, so the networks take the features; their
first layers are the training-only augmentation and a Normalization layer holding the
training set's per-bin mean and variance, so the saved model needs nothing else.
"""

import dataclasses

import keras
import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from apps.nlp.speech.audio import clip_length
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
    if config.cmvn == "utterance":
        x = UtteranceCMVN(dtype="float32", name="cmvn")(x)
        mean, variance = cmvn_statistics(mean, variance)
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


@keras.saving.register_keras_serializable(package="deepfield.speech")
class UtteranceCMVN(keras.layers.Layer):
    """Per-utterance cepstral mean and variance normalisation: each bin of a clip minus its
    mean over the clip's frames, over its spread there plus `floor` (a flat bin, such as a
    band the microphone never carried, stays near zero instead of being blown up).

    Args:
        floor: added to the standard deviation, in the input's units (dB); > 0.
    """

    def __init__(self, floor=1.0, **kwargs):
        super().__init__(**kwargs)
        if floor <= 0:
            raise ValueError(f"`floor` must be > 0. Received: floor={floor}")
        self.floor = float(floor)

    def call(self, x):
        mean = keras.ops.mean(x, axis=1, keepdims=True)
        spread = keras.ops.std(x, axis=1, keepdims=True)
        return (x - mean) / (spread + self.floor)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "floor": self.floor}


def cmvn_statistics(mean: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Normalization layer's statistics after `UtteranceCMVN`: each bin is already near
    zero mean and unit spread, so an identity (the layer is kept: one model layout)."""
    return np.zeros_like(mean), np.ones_like(variance)


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
    task: str = "word"  # word (one per clip) or sequence (CTC transcripts)
    unit: str = ""  # sequence: the CTC tokens, word or char


def load_model(run: RunDir) -> keras.Model:
    """The run's saved network, loaded in safe mode (its augmentation layers are registered by
    this module's import of them)."""
    return load_saved_model(run.model_path)


def write_saved_model(model: keras.Model, folder: str, params: dict | None = None) -> None:
    """The network as a SavedModel whose `serve` takes float32 features (batch, frames, bins);
    with the run's log-mel `params`, also `serve_waveform`: float32 waveforms at the run's rate,
    through the same front end as `apps.nlp.speech.features.extract`, in the graph.

    Word runs take (batch, samples) at the clip length (trimming and fitting a recording to it
    stay with the caller: `apps.nlp.speech.audio.load_clip`). Sequence runs take (batch, any
    samples) and return per-step logits to decode (`apps.nlp.speech.sequence.decode`); a
    recording shorter than the training utterances is padded with zeros to their length in the
    graph, as `TranscriptScorer` pads it, since per-utterance CMVN counts the padding. Send one
    recording per call: zeros padding a batch to its longest recording are not in-process."""
    if not params or params.get("kind") != "logmel":
        export_saved_model(model, folder, model_input_spec(model))
        return
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda inputs: model(inputs, training=False), [model_input_spec(model)]
    )
    length = clip_length(params["sample_rate"], params["clip_seconds"])
    sequence = params.get("task") == "sequence"
    waves = keras.InputSpec(shape=(None, None if sequence else length), dtype="float32")

    def serve_waveform(inputs):
        inputs = pad_to_length(inputs, length) if sequence else inputs
        return model(waveform_logmel(inputs, params), training=False)

    archive.add_endpoint("serve_waveform", serve_waveform, [waves])
    archive.write_out(folder, verbose=False)


def pad_to_length(waves, length: int):
    """(batch, samples) waveforms padded at the end with zeros to at least `length` samples."""
    short = keras.ops.maximum(0, length - keras.ops.shape(waves)[1])
    return keras.ops.pad(waves, [[0, 0], [0, short]])


def waveform_logmel(waves, params: dict):
    """(batch, samples) -> (batch, frames, bins) log-mel, as `features.extract` computes it
    (librosa's centred STFT pads with zeros; the same mel matrix; dB relative to each clip's
    peak, floored top_db below it)."""
    n_fft = params["n_fft"]
    padded = keras.ops.pad(waves, [[0, 0], [n_fft // 2, n_fft // 2]])
    real, imag = keras.ops.stft(
        padded, params["win_length"], params["hop_length"], n_fft, window="hann", center=False
    )
    power = real**2 + imag**2
    rate = params["sample_rate"]
    bank = librosa.filters.mel(
        sr=rate, n_fft=n_fft, n_mels=params["n_mels"], fmin=params["fmin"],
        fmax=min(params["fmax"], rate / 2),
    )  # fmt: skip
    mel = keras.ops.matmul(power, keras.ops.convert_to_tensor(bank.T.astype(np.float32)))
    db = 10.0 * keras.ops.log10(keras.ops.maximum(mel, 1e-10))
    top_db = params.get("top_db", 0.0)
    if not top_db:
        return db
    db = db - keras.ops.max(db, axis=(1, 2), keepdims=True)
    return keras.ops.maximum(db, -top_db)


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
