"""The fraud app's models: the preprocessor, the supervised network, the autoencoder, the scorer
that chains them, and the scikit-learn baselines; loading and exporting a run's scorer, and
what `model_meta.json` records about it.

Training runs the preprocessor once over the data and fits the two networks on its outputs
(numeric tensors, so XLA and mixed precision apply); the exported scorer chains the same
preprocessor with the networks that trained, so it takes raw feature columns and strings.
"""

import dataclasses
import time

import keras
import numpy as np
from keras import layers, ops
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from apps.fraud.config import ModelConfig
from apps.fraud.data import input_name
from shared.export import export_saved_model, load_saved_model, named_input_spec
from shared.run import RunDir
from shared.splits import SPLITS
from shared.steps import ModelMeta

NETWORKS = {"network": "fraud_probability", "autoencoder": "anomaly_score"}  # name: its output
BASELINES = ("logistic_regression", "hist_gradient_boosting")


@dataclasses.dataclass
class Meta(ModelMeta):
    """`model_meta.json` of a fraud run: what scoring checks and computes, and how it decides."""

    label: str  # the label column of the training file
    schema: dict  # the InputSchema (as a dict) every file to score is checked against
    feature_spec: dict  # the FeatureSpec (as a dict) of the engineered features
    numeric_inputs: list[str]  # the scorer's numeric input columns, raw and engineered
    categorical_inputs: list[str]  # the scorer's categorical input columns
    vocabulary_sizes: dict[str, int]  # categorical column: values kept (others are unknown)
    networks: list[str]  # the networks that trained and are in the scorer
    failed_networks: dict[str, str]  # network: why it failed (left out of the scorer)
    decision_model: str  # the model whose score decides: the trained network with best AUPRC
    decision_output: str  # the scorer output that decides (fraud_probability, anomaly_score)
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


def _baseline_matrix(features: dict, vocabularies: dict) -> sparse.csr_matrix:
    """Standardised numerics plus one-hot categories, for logistic regression."""
    blocks = [sparse.csr_matrix(features["numeric"])]
    for column, vocabulary in vocabularies.items():
        ids = features[f"cat_{input_name(column)}"].reshape(-1)
        blocks.append(
            sparse.csr_matrix(
                (np.ones(len(ids)), (np.arange(len(ids)), ids)),
                shape=(len(ids), len(vocabulary) + 1),
            )
        )
    return sparse.hstack(blocks).tocsr()


def _baseline_dense(features: dict, vocabularies: dict) -> np.ndarray:
    """Standardised numerics plus category ids, for gradient boosting."""
    cat_names = [f"cat_{input_name(c)}" for c in vocabularies]
    return np.hstack([features["numeric"]] + [features[n].astype(np.float64) for n in cat_names])


def fit_baselines(features: dict, labels: dict, vocabularies: dict, seed: int) -> tuple:
    """scikit-learn baselines on the networks' preprocessed features and splits: each one's
    validation and test scores ({name: {split: scores}}) and fit seconds ({name: seconds})."""
    logistic = LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced")
    matrices = {s: _baseline_matrix(features[s], vocabularies) for s in SPLITS}
    dense = {s: _baseline_dense(features[s], vocabularies) for s in SPLITS}
    n_numeric = features["train"]["numeric"].shape[1]
    # Native categorical splits for columns that fit HGB's 255 bins; wider ones stay ordinal.
    categorical_mask = [False] * n_numeric + [len(vocabularies[c]) + 1 < 255 for c in vocabularies]
    boosting = HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        categorical_features=np.array(categorical_mask) if any(categorical_mask) else None,
        random_state=seed,
    )
    fitted = {
        "logistic_regression": (logistic, matrices),
        "hist_gradient_boosting": (boosting, dense),
    }
    seconds = {}
    for name, (model, inputs) in fitted.items():
        start = time.perf_counter()
        model.fit(inputs["train"], labels["train"])
        seconds[name] = round(time.perf_counter() - start, 3)
    print(
        "train: baselines fitted (logistic regression "
        f"{seconds['logistic_regression']:.1f}s, histogram gradient boosting "
        f"{seconds['hist_gradient_boosting']:.1f}s)",
        flush=True,
    )
    scores = {
        name: {s: model.predict_proba(inputs[s])[:, 1] for s in ("val", "test")}
        for name, (model, inputs) in fitted.items()
    }
    return scores, seconds
