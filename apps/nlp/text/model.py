"""Text classifiers that take raw strings: TextVectorization + BiLSTM, a Transformer encoder built
from shared layers, a KerasHub BERT-family classifier from a local preset folder, and the
TF-IDF + logistic regression baseline; loading a run's models, its SavedModel, its metadata.

The vocabulary (TextVectorization adapted on the training texts) or the preset's tokenizer is
part of every model, so a saved or exported model maps raw strings to probabilities.
"""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.nlp.text.config import ModelConfig
from apps.nlp.text.data import TextData
from shared.export import export_saved_model as export_endpoint
from shared.export import load_saved_model
from shared.layers import TokenAndPositionEmbedding, TransformerBlock
from shared.run import RunDir
from shared.steps import ModelMeta
from shared.training import local_preset

VECTORIZE = "vectorize"  # the layer name the XLA split cuts after (string ops do not compile)
INPUT = "raw strings (batch,); tokenization inside the model"  # what the served model takes


@dataclasses.dataclass
class Meta(ModelMeta):
    """The text app's `model_meta.json`: the classes, every network trained and the one kept."""

    class_names: list[str]  # the classes, in the order of the model's outputs
    multi_label: bool  # sigmoid outputs: any number of classes per text
    networks: list[str]  # every network trained, in training order
    best: str  # the network saved as model.keras: the lowest finite validation loss
    failed_networks: dict[str, str]  # name -> why it failed; never selected, no models/<name>
    validation_loss: dict[str, float]  # the lowest validation loss of each network that trained
    learning_rates: dict[str, float]  # the peak learning rate of each network
    sequence_length: int  # tokens the run's model reads per text; longer texts are truncated
    network_seconds: dict[str, float]  # wall seconds of each network's training

    APP = "nlp"


def make_vectorizer(config: ModelConfig, texts: list[str]) -> keras.layers.TextVectorization:
    """TextVectorization adapted on the training texts (lower-cased, punctuation stripped)."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=config.max_tokens,
        output_sequence_length=config.sequence_length,
        ngrams=config.ngrams if config.ngrams > 1 else None,
        name=VECTORIZE,
    )
    vectorizer.adapt(tf.constant(texts, dtype=tf.string), batch_size=1024)
    return vectorizer


@keras.saving.register_keras_serializable(package="deepfield_text")
class MaskedMeanPooling(keras.layers.Layer):
    """The mean over a text's tokens (the mask's true steps); zeros for a text with none.

    GlobalAveragePooling1D divides by the number of tokens, so a text that has none once
    punctuation is stripped (the SMS ":)") came out NaN and turned the whole batch's loss NaN.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return keras.ops.mean(inputs, axis=1)
        weights = keras.ops.expand_dims(keras.ops.cast(mask, inputs.dtype), axis=-1)
        total = keras.ops.sum(inputs * weights, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def _head(x, config: ModelConfig, n_classes: int, multi_label: bool):
    x = keras.layers.Dropout(config.dropout)(x)
    # float32 outputs under a mixed policy: probabilities must sum to 1 to the last digit shown.
    activation = "sigmoid" if multi_label else "softmax"
    return keras.layers.Dense(n_classes, activation=activation, dtype="float32", name="probs")(x)


def build_bilstm(
    config: ModelConfig,
    vectorizer: keras.layers.TextVectorization,
    n_classes: int,
    multi_label: bool = False,
) -> keras.Model:
    """Raw strings -> token ids -> embedding -> bidirectional LSTM -> class probabilities."""
    texts = keras.Input(shape=(1,), dtype="string", name="text")
    ids = vectorizer(texts)
    x = keras.layers.Embedding(
        vectorizer.vocabulary_size(), config.embedding_dim, mask_zero=True, name="embedding"
    )(ids)
    x = keras.layers.Bidirectional(keras.layers.LSTM(config.lstm_units), name="bilstm")(x)
    return keras.Model(texts, _head(x, config, n_classes, multi_label), name="bilstm")


def build_transformer(
    config: ModelConfig,
    vectorizer: keras.layers.TextVectorization,
    n_classes: int,
    multi_label: bool = False,
) -> keras.Model:
    """Raw strings -> token ids -> token+position embedding -> Transformer blocks -> mean pool."""
    texts = keras.Input(shape=(1,), dtype="string", name="text")
    ids = vectorizer(texts)
    x = TokenAndPositionEmbedding(
        vectorizer.vocabulary_size(),
        config.sequence_length,
        config.embedding_dim,
        name="embedding",
    )(ids)
    for index in range(config.transformer_layers):
        x = TransformerBlock(
            config.embedding_dim,
            config.num_heads,
            config.feed_forward_dim,
            config.dropout,
            name=f"transformer_{index}",
        )(x)
    x = MaskedMeanPooling(name="pool")(x)  # the mask keeps padding out
    return keras.Model(texts, _head(x, config, n_classes, multi_label), name="transformer")


def build_bert(config: ModelConfig, n_classes: int, multi_label: bool = False) -> keras.Model:
    """A KerasHub TextClassifier from the local preset folder, its preprocessor attached.

    `predict` and `fit` take raw strings: the task runs its tokenizer in the input pipeline.
    Anything but a local preset folder is a ConfigError naming `model.preset` (never downloaded).
    """
    import keras_hub

    preset = local_preset(config.preset, "model.preset")
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=config.preset_sequence_length
    )
    return keras_hub.models.TextClassifier.from_preset(
        preset,
        num_classes=n_classes,
        preprocessor=preprocessor,
        activation="sigmoid" if multi_label else "softmax",
        dropout=config.dropout,
        load_weights=True,
    )


def is_hub_task(model: keras.Model) -> bool:
    return getattr(model, "preprocessor", None) is not None


def predict_texts(model: keras.Model, texts: list[str], batch_size: int):
    """Probabilities (float32 NumPy) for raw strings, for both kinds of model."""
    if not texts:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    if is_hub_task(model):
        prob = model.predict(tf.constant(texts), batch_size=batch_size, verbose=0)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts)[:, None]).batch(batch_size)
        prob = model.predict(dataset, verbose=0)
    return np.asarray(prob, dtype=np.float32)


def fit_baseline(data: TextData) -> tuple[dict[str, np.ndarray], float]:
    """TF-IDF (words and word pairs) + logistic regression on the same split: val/test probs,
    and the seconds its fit took."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000
    )
    features = vectorizer.fit_transform(data.splits["train"].texts)
    classifier = LogisticRegression(C=4.0, max_iter=2000)
    if data.multi_label:
        classifier = OneVsRestClassifier(classifier)
    classifier.fit(features, data.splits["train"].labels)
    seconds = time.perf_counter() - start
    out = {}
    for split in ("val", "test"):
        prob = classifier.predict_proba(vectorizer.transform(data.splits[split].texts))
        if not data.multi_label and prob.shape[1] != len(data.class_names):
            full = np.zeros((len(prob), len(data.class_names)))  # a class missing from train
            full[:, classifier.classes_] = prob
            prob = full
        out[split] = prob
    return out, seconds


def _load(path: Path) -> keras.Model:
    """A saved text model, loaded safely (shared layers and KerasHub classes registered)."""
    import keras_hub  # noqa: F401  registers the KerasHub task, backbone and tokenizer classes

    return load_saved_model(path)


def load_model(run: RunDir) -> keras.Model:
    """The run's model (the network that won on validation), from `model.keras`."""
    return _load(run.model_path)


def load_network(run: RunDir, name: str) -> keras.Model:
    """One network the run trained, from `models/<name>.keras`."""
    return _load(run.path / "models" / f"{name}.keras")


def write_saved_model(model: keras.Model, folder: str) -> None:
    """A TensorFlow SavedModel whose `serve` signature takes a batch of raw strings (shape [n])."""
    spec = keras.InputSpec(shape=(None,), dtype="string")
    if is_hub_task(model):

        def serve(texts):  # the KerasHub preprocessor tokenizes inside the endpoint
            return keras.ops.cast(model(model.preprocessor(texts), training=False), "float32")

        export_endpoint(model, folder, spec, serve, track=[model.preprocessor])
    else:
        export_endpoint(
            model,
            folder,
            spec,
            lambda texts: model(keras.ops.expand_dims(texts, -1), training=False),
        )
