"""Model builders: the preprocessor, the supervised network, the autoencoder and the scorer.

Training runs the preprocessor once over the data and fits the two networks on its outputs
(numeric tensors, so XLA and mixed precision apply); the exported scorer chains the same
preprocessor with the networks that trained, so it takes raw feature columns and strings.
"""

import keras
import numpy as np
from keras import layers, ops

from apps.fraud.config import ModelConfig
from apps.fraud.data import input_name


@keras.saving.register_keras_serializable(package="deepfield.fraud")
class ReconstructionError(layers.Layer):
    """Mean squared difference per row between an input and its reconstruction (float32)."""

    def call(self, inputs):
        original, reconstruction = inputs
        diff = ops.cast(original, "float32") - ops.cast(reconstruction, "float32")
        return ops.mean(ops.square(diff), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[0][:-1]


def embedding_size(vocabulary_size: int, configured: int) -> int:
    """fastai's rule of thumb: min(600, 1.6 * n^0.56), capped low for small tabular nets."""
    return configured or int(min(32, max(2, round(1.6 * vocabulary_size**0.56))))


def build_preprocessor(
    numeric: list[str], vocabularies: dict[str, list[str]], mean: np.ndarray, variance: np.ndarray
) -> keras.Model:
    """Raw columns -> {"numeric": standardised matrix, "cat_<column>": integer ids}.

    Unknown and missing categories map to id 0 (StringLookup's out-of-vocabulary bucket).
    """
    inputs, outputs = {}, {}
    numeric_inputs = []
    for column in numeric:
        name = input_name(column)
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        numeric_inputs.append(inputs[name])
    joined = (
        layers.Concatenate(name="numeric_columns")(numeric_inputs)
        if len(numeric_inputs) > 1
        else numeric_inputs[0]
    )
    outputs["numeric"] = layers.Normalization(
        mean=mean, variance=variance, name="standardise", dtype="float32"
    )(joined)
    for column, vocabulary in vocabularies.items():
        name = input_name(column)
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
        lookup = layers.StringLookup(
            vocabulary=vocabulary, num_oov_indices=1, name=f"lookup_{name}"
        )
        outputs[f"cat_{name}"] = lookup(inputs[name])
    return keras.Model(inputs, outputs, name="preprocessor")


def _core_inputs(n_numeric: int, vocabularies: dict[str, list[str]]) -> dict:
    inputs = {"numeric": keras.Input(shape=(n_numeric,), name="numeric")}
    for column in vocabularies:
        name = f"cat_{input_name(column)}"
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="int64")
    return inputs


def build_classifier(
    n_numeric: int, vocabularies: dict[str, list[str]], config: ModelConfig
) -> keras.Model:
    """MLP over standardised numerics and one learned embedding per categorical column."""
    inputs = _core_inputs(n_numeric, vocabularies)
    parts = [inputs["numeric"]]
    for column, vocabulary in vocabularies.items():
        name = input_name(column)
        size = len(vocabulary) + 1  # + the unknown bucket
        embedded = layers.Embedding(
            size, embedding_size(size, config.embedding_dim), name=f"embed_{name}"
        )(inputs[f"cat_{name}"])
        parts.append(layers.Flatten(name=f"flat_{name}")(embedded))
    x = layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    for i, units in enumerate(config.hidden_units):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    output = layers.Dense(1, activation="sigmoid", dtype="float32", name="fraud_probability")(x)
    return keras.Model(inputs, output, name="classifier")


def build_autoencoder(
    n_numeric: int, vocabularies: dict[str, list[str]], config: ModelConfig
) -> keras.Model:
    """Dense autoencoder over numerics and one-hot low-cardinality categoricals; outputs the error."""
    inputs = _core_inputs(n_numeric, vocabularies)
    parts = [inputs["numeric"]]
    for column, vocabulary in vocabularies.items():
        if len(vocabulary) + 1 > config.autoencoder_max_onehot:
            continue  # a one-hot of hundreds of merchants would drown the numeric signal
        name = input_name(column)
        parts.append(
            layers.CategoryEncoding(
                len(vocabulary) + 1, output_mode="one_hot", name=f"onehot_{name}"
            )(inputs[f"cat_{name}"])
        )
    x = layers.Concatenate(name="ae_input")(parts) if len(parts) > 1 else parts[0]
    width = x.shape[-1]
    h = x
    for i, units in enumerate(config.autoencoder_units):
        h = layers.Dense(units, activation="relu", name=f"encode_{i}")(h)
    for i, units in enumerate(reversed(config.autoencoder_units[:-1])):
        h = layers.Dense(units, activation="relu", name=f"decode_{i}")(h)
    reconstruction = layers.Dense(width, name="reconstruction")(h)
    error = ReconstructionError(name="anomaly_score", dtype="float32")([x, reconstruction])
    return keras.Model(inputs, error, name="autoencoder")


def build_scorer(preprocessor: keras.Model, networks: dict[str, keras.Model]) -> keras.Model:
    """Raw columns in; one score per trained network out, named by `networks`' keys
    (`fraud_probability`: the classifier, `anomaly_score`: the autoencoder). A network that
    failed to train is left out, so it never scores a row. This is what is saved and exported."""
    inputs = {
        name: keras.Input(shape=(1,), name=name, dtype=t.dtype)
        for name, t in preprocessor.input.items()
    }
    features = preprocessor(inputs)
    outputs = {
        output: layers.Reshape((), name=output)(network(features))
        for output, network in networks.items()
    }
    return keras.Model(inputs, outputs, name="fraud_scorer")
