"""The fraud network's own layers: numeric-feature embeddings after Gorishniy et al. (2022),
"On Embeddings for Numerical Features in Tabular Deep Learning", and the residual block.

Both embeddings map each standardised numeric column to its own small vector, so the MLP on top
sees a non-linear, per-feature basis instead of one raw number; the paper finds this is what
closes most of the gap between MLPs and gradient-boosted trees on tables.
"""

import math

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="deepfield.fraud")
class PeriodicEmbedding(layers.Layer):
    """PLR embedding: per column, `frequencies` trainable frequencies c ~ N(0, sigma);
    [cos(2 pi c x), sin(2 pi c x)] goes through a per-column linear map to `dim` units and a
    ReLU. Input (batch, columns), output (batch, columns * dim)."""

    def __init__(self, frequencies: int = 16, dim: int = 8, sigma: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.frequencies, self.dim, self.sigma = frequencies, dim, sigma

    def build(self, input_shape):
        n = input_shape[-1]
        self.coefficients = self.add_weight(
            name="coefficients",
            shape=(n, self.frequencies),
            initializer=keras.initializers.RandomNormal(0.0, self.sigma),
        )
        bound = 1.0 / math.sqrt(2 * self.frequencies)  # torch's nn.Linear initialisation
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.kernel = self.add_weight(
            name="kernel", shape=(n, 2 * self.frequencies, self.dim), initializer=uniform
        )
        self.bias = self.add_weight(name="bias", shape=(n, self.dim), initializer=uniform)

    def call(self, x):
        angles = 2 * math.pi * ops.expand_dims(x, -1) * self.coefficients
        basis = ops.concatenate([ops.cos(angles), ops.sin(angles)], axis=-1)
        out = ops.relu(ops.einsum("bnk,nkd->bnd", basis, self.kernel) + self.bias)
        return ops.reshape(out, (-1, out.shape[1] * self.dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * self.dim)

    def get_config(self):
        return super().get_config() | {
            "frequencies": self.frequencies,
            "dim": self.dim,
            "sigma": self.sigma,
        }


@keras.saving.register_keras_serializable(package="deepfield.fraud")
class PiecewiseLinearEmbedding(layers.Layer):
    """PLE embedding: each column is encoded against its training quantile bins (`edges`, one
    list of bins + 1 increasing values per column): 0 below a bin, 1 above it, linear inside;
    then a per-column linear map to `dim` units and a ReLU. The bins are constants of the
    model, so it scores raw (standardised) values on its own."""

    def __init__(self, edges: list[list[float]], dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.edges, self.dim = [list(map(float, e)) for e in edges], dim

    def build(self, input_shape):
        n, bins = len(self.edges), len(self.edges[0]) - 1
        self.left = ops.convert_to_tensor([e[:-1] for e in self.edges], dtype="float32")
        width = [[max(b - a, 1e-6) for a, b in zip(e[:-1], e[1:], strict=True)] for e in self.edges]
        self.width = ops.convert_to_tensor(width, dtype="float32")
        bound = 1.0 / math.sqrt(bins)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.kernel = self.add_weight(name="kernel", shape=(n, bins, self.dim), initializer=uniform)
        self.bias = self.add_weight(name="bias", shape=(n, self.dim), initializer=uniform)

    def call(self, x):
        encoded = ops.clip((ops.expand_dims(x, -1) - self.left) / self.width, 0.0, 1.0)
        out = ops.relu(ops.einsum("bnk,nkd->bnd", encoded, self.kernel) + self.bias)
        return ops.reshape(out, (-1, out.shape[1] * self.dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * self.dim)

    def get_config(self):
        return super().get_config() | {"edges": self.edges, "dim": self.dim}


def quantile_edges(values, bins: int) -> list[list[float]]:
    """Per column of a (rows, columns) array: `bins` + 1 increasing quantile edges; a column with
    fewer distinct values gets its distinct values, padded with bins beyond its maximum (their
    encoding is always 0, so they never fire)."""
    edges = []
    for column in np.asarray(values, np.float64).T:
        cuts = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)))
        if len(cuts) < 2:
            cuts = np.array([cuts[0] - 0.5, cuts[0] + 0.5])
        pad = cuts[-1] + 1.0 + np.arange(bins + 1 - len(cuts))
        edges.append([float(v) for v in np.r_[cuts, pad]])
    return edges


def residual_block(x, width: int, dropout: float, name: str):
    """Pre-norm residual MLP block (Gorishniy et al. 2021's ResNet for tables): norm, dense
    (2x width, ReLU), dropout, dense back to width, dropout, add."""
    h = layers.LayerNormalization(name=f"{name}_norm")(x)
    h = layers.Dense(2 * width, activation="relu", name=f"{name}_expand")(h)
    h = layers.Dropout(dropout, name=f"{name}_dropout_hidden")(h)
    h = layers.Dense(width, name=f"{name}_project")(h)
    h = layers.Dropout(dropout, name=f"{name}_dropout_out")(h)
    return layers.Add(name=f"{name}_add")([x, h])


@keras.saving.register_keras_serializable(package="deepfield.fraud")
class RowFeatures(layers.Layer):
    """The engineered features of one row alone, inside the model: `log_amount` (log1p of the
    amount, negatives as 0) from the amount column, `hour_sin`/`hour_cos` from a timestamp in
    seconds; the FeatureBuilder's formulas. With them in the graph, a layout without
    per-entity history (the credit-card V1..V28 layout) is scored from its raw columns alone.
    Inputs: [amount] and/or [seconds], each (batch, 1), in that order; output (batch, k)."""

    def __init__(self, amount: bool, clock: bool, **kwargs):
        super().__init__(**kwargs)
        self.amount, self.clock = amount, clock

    def call(self, inputs):
        inputs = list(inputs)
        parts = []
        if self.amount:
            parts.append(ops.log1p(ops.maximum(ops.cast(inputs.pop(0), "float32"), 0.0)))
        if self.clock:
            seconds = ops.cast(inputs.pop(0), "float32")
            hours = ops.mod(seconds, 86400.0) / 3600.0
            angle = 2 * math.pi * hours / 24
            parts += [ops.sin(angle), ops.cos(angle)]
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], int(self.amount) + 2 * int(self.clock))

    def get_config(self):
        return super().get_config() | {"amount": self.amount, "clock": self.clock}
