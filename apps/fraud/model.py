"""The fraud app's models: the preprocessor, the supervised network, the autoencoder, the scorer
that chains them, and the scikit-learn baselines; loading and exporting a run's scorer, and
what `model_meta.json` records about it.

Training runs the preprocessor once over the data and fits the two networks on its outputs
(numeric tensors, so XLA and mixed precision apply); the exported scorer chains the same
preprocessor with the networks that trained, so it takes raw feature columns and strings.
"""

import dataclasses

import keras
import numpy as np
from keras import layers, ops

from apps.fraud.config import ModelConfig
from apps.fraud.data import input_name
from apps.fraud.features import FeatureSpec
from apps.fraud.layers import (
    PeriodicEmbedding,
    PiecewiseLinearEmbedding,
    RowFeatures,
    residual_block,
)
from shared.export import export_saved_model, load_saved_model, named_input_spec
from shared.run import RunDir
from shared.steps import ModelMeta

NETWORKS = {"network": "fraud_probability", "autoencoder": "anomaly_score"}  # name: its output
FEATURES_OUTPUT = "model_features"  # the scorer's preprocessed matrix, for the scikit-learn
# models (standardised numerics, then category ids)
RISK_SCORE = "risk_score"  # the scores file's column of the shipped model's score
CANDIDATES = ("network", "hist_gradient_boosting", "blend", "logistic_regression")  # the
# models a run may ship, in the order that breaks a tie on validation AUPRC


@dataclasses.dataclass
class Meta(ModelMeta):
    """`model_meta.json` of a fraud run: what scoring checks and computes, and how it decides."""

    label: str  # the label column of the training file
    schema: dict  # the InputSchema (as a dict) every file to score is checked against
    feature_spec: dict  # the FeatureSpec (as a dict) of the engineered features
    numeric_inputs: list[str]  # the scorer's numeric input columns: raw, and the engineered
    # ones the model does not compute itself
    model_numeric: list[str]  # the columns of the standardised numeric matrix, in order
    categorical_inputs: list[str]  # the scorer's categorical input columns
    vocabulary_sizes: dict[str, int]  # categorical column: values kept (others are unknown)
    networks: list[str]  # the networks that trained and are in the scorer
    failed_networks: dict[str, str]  # network: why it failed (left out of the scorer)
    decision_model: str  # the model the run ships: the best on validation AUPRC of the
    # network, gradient boosting, their blend and logistic regression
    decision_output: str  # the scores file's column that decides (risk_score)
    blend_weight: float | None  # the network's weight in the blend (None: no blend)
    baselines: list[str]  # the scikit-learn models saved in baselines/<name>.skops
    validation_auprc: dict[str, float]  # every model's validation AUPRC, which selected it
    threshold: float  # flag a row when the decision output is >= this
    thresholds: dict[str, float]  # every model's threshold, networks and baselines
    threshold_rule: str  # cost or f1: what the thresholds optimise on validation
    threshold_optimises: str  # the rule in words, for the summary and the model card
    validation_flagged_fraction: float  # share of validation rows the decision model flags
    costs: dict  # the evaluate config the thresholds were chosen with
    baseline_seconds: dict[str, float]  # baseline: fit seconds

    APP = "fraud"


def load_model(run: RunDir) -> keras.Model:
    """The run's scorer (`model.keras`), with this module's layers registered."""
    return load_saved_model(run.model_path)


def write_saved_model(model: keras.Model, folder: str) -> None:
    """The scorer as a SavedModel whose `serve` takes one (batch, 1) float32 or string tensor
    per column, by column name, and returns each trained network's score by its output name."""
    export_saved_model(model, folder, named_input_spec(model))


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
    numeric: list[str],
    vocabularies: dict[str, list[str]],
    mean: np.ndarray,
    variance: np.ndarray,
    row_features: "RowFeatureSpec | None" = None,
) -> keras.Model:
    """Raw columns -> {"numeric": standardised matrix, "cat_<column>": integer ids}.

    With `row_features`, its engineered columns (the last ones of `numeric`) are computed
    inside the model from its raw amount and seconds columns, which become inputs instead.
    Unknown and missing categories map to id 0 (StringLookup's out-of-vocabulary bucket).
    """
    derived = row_features.names if row_features else []
    inputs, outputs = {}, {}

    def numeric_input(column: str):
        name = input_name(column)
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        return inputs[name]

    numeric_inputs = [numeric_input(c) for c in numeric[: len(numeric) - len(derived)]]
    if derived:
        raw = [numeric_input(c) for c in row_features.raw_columns]
        numeric_inputs.append(
            RowFeatures(bool(row_features.amount), bool(row_features.seconds), name="row_features")(
                raw
            )
        )
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


@dataclasses.dataclass
class RowFeatureSpec:
    """The engineered features a layout without per-entity history computes from one row, so
    the saved model computes them itself: from the amount (`log_amount`) and a timestamp in
    seconds (`hour_sin`, `hour_cos`)."""

    amount: str | None
    seconds: str | None

    @property
    def names(self) -> list[str]:
        return (["log_amount"] if self.amount else []) + (
            ["hour_sin", "hour_cos"] if self.seconds else []
        )

    @property
    def raw_columns(self) -> list[str]:
        return [c for c in (self.amount, self.seconds) if c]

    @classmethod
    def of(cls, spec: FeatureSpec) -> "RowFeatureSpec | None":
        """The in-model features of a layout, or None: with per-entity history, or calendar
        features from parsed dates, the features are the feature builder's (outside)."""
        if spec.has_history or (spec.has_clock and spec.timestamp_unit == "datetime"):
            return None
        found = cls(spec.amount, spec.timestamp if spec.has_clock else None)
        return found if found.names else None


def _core_inputs(n_numeric: int, vocabularies: dict[str, list[str]]) -> dict:
    inputs = {"numeric": keras.Input(shape=(n_numeric,), name="numeric")}
    for column in vocabularies:
        name = f"cat_{input_name(column)}"
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="int64")
    return inputs


def build_classifier(
    n_numeric: int,
    vocabularies: dict[str, list[str]],
    config: ModelConfig,
    edges: list[list[float]] | None = None,
) -> keras.Model:
    """The supervised network: standardised numerics beside their periodic or piecewise-linear
    embeddings (`edges`: the training quantile bins, for piecewise), one learned embedding per
    categorical column, then pre-norm residual blocks with dropout (or a plain MLP when
    model.residual_blocks is 0) and a sigmoid."""
    inputs = _core_inputs(n_numeric, vocabularies)
    parts = [inputs["numeric"], *_numeric_embedding(inputs["numeric"], config, edges)]
    for column, vocabulary in vocabularies.items():
        name = input_name(column)
        size = len(vocabulary) + 1  # + the unknown bucket
        embedded = layers.Embedding(
            size, embedding_size(size, config.embedding_dim), name=f"embed_{name}"
        )(inputs[f"cat_{name}"])
        parts.append(layers.Flatten(name=f"flat_{name}")(embedded))
    x = layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    if config.residual_blocks:
        x = layers.Dense(config.block_width, name="stem")(x)
        for i in range(config.residual_blocks):
            x = residual_block(x, config.block_width, config.dropout, f"block_{i}")
        x = layers.LayerNormalization(name="head_norm")(x)
        x = layers.Activation("relu", name="head_relu")(x)
    else:
        for i, units in enumerate(config.hidden_units):
            x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
            x = layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    output = layers.Dense(1, activation="sigmoid", dtype="float32", name="fraud_probability")(x)
    return keras.Model(inputs, output, name="classifier")


def _numeric_embedding(numeric, config: ModelConfig, edges) -> list:
    if config.numeric_embedding == "periodic":
        layer = PeriodicEmbedding(
            config.embedding_frequencies,
            config.numeric_embedding_dim,
            config.embedding_sigma,
            name="periodic_embedding",
        )
    elif config.numeric_embedding == "piecewise":
        if edges is None:
            raise ValueError("model.numeric_embedding=piecewise needs the training bins (edges)")
        layer = PiecewiseLinearEmbedding(
            edges, config.numeric_embedding_dim, name="piecewise_embedding"
        )
    else:
        return []
    return [layer(numeric)]


def build_autoencoder(
    n_numeric: int, vocabularies: dict[str, list[str]], config: ModelConfig
) -> keras.Model:
    """Dense autoencoder over numerics and one-hot low-cardinality categoricals; outputs its
    reconstruction error."""
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


def build_scorer(
    preprocessor: keras.Model, networks: dict[str, keras.Model], categorical: list[str]
) -> keras.Model:
    """Raw columns in; one score per trained network out, named by `networks`' keys
    (`fraud_probability`: the classifier, `anomaly_score`: the autoencoder), and the
    preprocessed matrix the scikit-learn models read (`model_features`: standardised numerics,
    then the ids of the `categorical` columns in that order). A network that failed to train is
    left out, so it never scores a row. This is what is saved and exported."""
    inputs = {
        name: keras.Input(shape=(1,), name=name, dtype=t.dtype)
        for name, t in preprocessor.input.items()
    }
    features = preprocessor(inputs)
    outputs = {
        output: layers.Reshape((), name=output)(network(features))
        for output, network in networks.items()
    }
    ids = [
        layers.Activation("linear", dtype="float32", name=f"id_{input_name(c)}")(
            ops.cast(features[f"cat_{input_name(c)}"], "float32")
        )
        for c in categorical
    ]
    outputs[FEATURES_OUTPUT] = (
        layers.Concatenate(name=FEATURES_OUTPUT)([features["numeric"], *ids])
        if ids
        else layers.Activation("linear", name=FEATURES_OUTPUT)(features["numeric"])
    )
    return keras.Model(inputs, outputs, name="fraud_scorer")


def predict_rows(model: keras.Model, features: dict, batch_size: int) -> np.ndarray:
    """One score per row of preprocessed features, by calling the network directly: the
    per-epoch score of a multi-worker fit runs it too, where `predict` would share the rows
    out across workers."""
    rows = len(next(iter(features.values())))
    parts = [
        keras.ops.convert_to_numpy(
            model({k: v[i : i + batch_size] for k, v in features.items()}, training=False)
        ).reshape(-1)
        for i in range(0, rows, batch_size)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
