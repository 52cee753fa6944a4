"""Model builders (biased MF, neural CF, the two-tower retrieval model and its top-K index), the
bias and popularity baselines, a run's metadata, and loading and exporting a run's networks.

Every network takes raw ids (strings): the StringLookup layers inside map them to rows, index 0
being the out-of-vocabulary bucket.
"""

import dataclasses
from pathlib import Path

import keras
import keras_rs
import numpy as np
import pandas as pd
from keras import ops

from apps.recsys.config import ModelConfig
from shared.export import export_saved_model, named_input_spec
from shared.io import DataError, read_json
from shared.run import RunDir
from shared.steps import ModelMeta

RATING_MODELS = ("mf", "ncf")  # the rating networks, in the order they train and serve
MAX_K = 100  # recommend serves at most this many items per user
RETRIEVAL_K = 10  # the retrieval leaderboard's cut-off (Recall@10, NDCG@10)


@keras.saving.register_keras_serializable(package="deepfield_recsys")
class GlobalBias(keras.layers.Layer):
    """Adds one trainable scalar, started at `initial_value` (the training mean rating)."""

    def __init__(self, initial_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_value), name="bias"
        )

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value}


@keras.saving.register_keras_serializable(package="deepfield_recsys")
class InBatchSoftmax(keras.layers.Layer):
    """Logits of every query against every candidate of the batch, over the temperature.

    Row i's positive is candidate i; the others are its negatives, except candidates with the
    same item id, whose logits are removed. Given each candidate's
    sampling probability, keras-rs's SamplingProbabilityCorrection subtracts its log first.
    """

    def __init__(self, temperature: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
        self.temperature = float(temperature)
        self.correction = keras_rs.layers.SamplingProbabilityCorrection()

    def call(self, queries, candidates, candidate_ids, candidate_probability=None):
        logits = ops.matmul(queries, ops.transpose(candidates)) / self.temperature
        if candidate_probability is not None:
            # logQ correction: popular items are over-represented among in-batch negatives.
            logits = self.correction(logits, ops.cast(candidate_probability, logits.dtype))
        # Accidental hits: another row's candidate that is this row's positive item. keras-rs
        # 0.4's RemoveAccidentalHits adds the smallest *positive* float to them (a no-op), so
        # they are masked here with a large negative logit instead.
        ids = ops.cast(candidate_ids, "int32")
        same = ops.equal(ops.expand_dims(ids, 1), ops.expand_dims(ids, 0))
        diagonal = ops.cast(ops.eye(ops.shape(logits)[0]), "bool")
        hit = ops.logical_and(same, ops.logical_not(diagonal))
        return ops.where(hit, ops.cast(-1e9, logits.dtype), logits)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="deepfield_recsys")
def in_batch_softmax_loss(y_true, y_pred):
    """Cross-entropy of each row of in-batch logits against its diagonal positive."""
    labels = ops.eye(ops.shape(y_pred)[0], dtype=y_pred.dtype)
    return keras.losses.categorical_crossentropy(labels, y_pred, from_logits=True)


@keras.saving.register_keras_serializable(package="deepfield_recsys")
class ItemIndex(keras_rs.layers.BruteForceRetrieval):
    """keras-rs brute-force top-K over a fixed number of items, savable with the model.

    BruteForceRetrieval creates its candidate variables only when candidates are given, so a
    loaded model had nowhere to put them; this layer creates them (zeros) from its config.
    """

    def __init__(self, num_candidates: int, dim: int, k: int = 10, **kwargs):
        if num_candidates < 1 or dim < 1:
            raise ValueError(
                f"num_candidates and dim must be >= 1. Received: num_candidates={num_candidates}, "
                f"dim={dim}"
            )
        super().__init__(
            candidate_embeddings=ops.zeros((num_candidates, dim)),
            candidate_ids=ops.arange(num_candidates, dtype="int32"),
            k=min(k, num_candidates),
            **kwargs,
        )
        self.num_candidates, self.dim = int(num_candidates), int(dim)

    def get_config(self):
        return {**super().get_config(), "num_candidates": self.num_candidates, "dim": self.dim}


def _id_input(name: str):
    return keras.Input(shape=(), dtype="string", name=name)


def _lookup(vocabulary: list[str], name: str):
    return keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1, name=name)


@keras.saving.register_keras_serializable(package="deepfield_recsys")
class ImplicitFeedback(keras.layers.Layer):
    """SVD++'s implicit user term (Koren 2008): |N(u)|^-1/2 * sum of y_j over the items j in
    N(u), the items user u rated in training, whatever the ratings were.

    The (user row, item row) pairs are kept as non-trainable weights, so the saved model holds
    them; each call sums every user's item factors at once (one gather and one segment sum
    over the pairs: as cheap as a second embedding lookup for catalogues of this size).
    """

    def __init__(self, n_users: int, n_items: int, n_pairs: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.n_users, self.n_items, self.n_pairs, self.dim = n_users, n_items, n_pairs, dim

    def build(self, input_shape):
        init = keras.initializers.RandomNormal(stddev=0.05)
        self.factors = self.add_weight(shape=(self.n_items, self.dim), initializer=init, name="y")
        pair = {"shape": (self.n_pairs,), "initializer": "zeros", "trainable": False}
        self.pair_user = self.add_weight(dtype="int32", name="pair_user", **pair)
        self.pair_item = self.add_weight(dtype="int32", name="pair_item", **pair)
        self.pair_weight = self.add_weight(name="pair_weight", **pair)

    def set_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> None:
        """The training pairs, by lookup row; each weighs 1/sqrt(its user's count)."""
        counts = np.bincount(user_rows, minlength=self.n_users)
        order = np.argsort(user_rows, kind="stable")  # grouped by user: a local gather
        self.pair_user.assign(user_rows[order].astype(np.int32))
        self.pair_item.assign(item_rows[order].astype(np.int32))
        self.pair_weight.assign((1.0 / np.sqrt(counts[user_rows[order]])).astype(np.float32))

    def call(self, user_rows):
        y = ops.take(self.factors, self.pair_item, axis=0) * ops.expand_dims(self.pair_weight, 1)
        per_user = ops.segment_sum(y, self.pair_user, num_segments=self.n_users)
        return ops.take(per_user, ops.cast(user_rows, "int32"), axis=0)

    def get_config(self):
        sizes = {"n_users": self.n_users, "n_items": self.n_items, "n_pairs": self.n_pairs}
        return {**super().get_config(), **sizes, "dim": self.dim}


@keras.saving.register_keras_serializable(package="deepfield_recsys")
class UserHistory(keras.layers.Layer):
    """The two-tower user tower's history term: per user a weighted sum of learned item
    embeddings over (at most `length` of) the items it had in training, weights of unit L2
    norm, as YouTube DNN's averaged watch history.

    Each user's item rows and weights are non-trainable weights, padded to `length` (weight 0),
    so the saved model holds them and a step gathers only its batch's users' histories.
    """

    def __init__(self, n_users: int, n_items: int, length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.n_users, self.n_items, self.length, self.dim = n_users, n_items, length, dim

    def build(self, input_shape):
        init = keras.initializers.RandomNormal(stddev=0.05)
        self.factors = self.add_weight(shape=(self.n_items, self.dim), initializer=init, name="y")
        table = {"shape": (self.n_users, self.length), "initializer": "zeros", "trainable": False}
        self.history_items = self.add_weight(dtype="int32", name="history_items", **table)
        self.history_weights = self.add_weight(name="history_weights", **table)

    def set_history(self, user_rows: np.ndarray, item_rows: np.ndarray, weights: np.ndarray):
        """The training pairs by lookup row; per user the `length` of highest weight are kept
        (the latest, with recency weights), their weights scaled to unit L2 norm."""
        order = np.lexsort((-np.asarray(weights), user_rows))  # per user, heaviest first
        users, items, w = user_rows[order], item_rows[order], np.asarray(weights)[order]
        first = np.searchsorted(users, users)  # each pair's user's first position
        rank = np.arange(len(users)) - first
        keep = rank < self.length
        w = np.where(keep, w, 0.0)
        norms = np.sqrt(np.bincount(users, w**2, minlength=self.n_users))
        table_items = np.zeros((self.n_users, self.length), np.int32)
        table_weights = np.zeros((self.n_users, self.length), np.float32)
        table_items[users[keep], rank[keep]] = items[keep]
        table_weights[users[keep], rank[keep]] = w[keep] / norms[users[keep]]
        self.history_items.assign(table_items)
        self.history_weights.assign(table_weights)

    def call(self, user_rows, exclude_items=None):
        """Each user's history sum, less the item `exclude_items` names (the training
        positive: a test item is never in its user's history, so a positive must not be in
        its own either, or the tower learns to find the history instead of what comes next).
        Row 0 (the out-of-vocabulary row, also the padding) excludes nothing."""
        rows = ops.cast(user_rows, "int32")
        items = ops.take(self.history_items, rows, axis=0)  # [batch, length]
        weights = ops.take(self.history_weights, rows, axis=0)
        if exclude_items is not None:
            same = ops.equal(items, ops.expand_dims(ops.cast(exclude_items, "int32"), 1))
            weights = ops.where(same, ops.zeros_like(weights), weights)
        embedded = ops.take(self.factors, items, axis=0)  # [batch, length, dim]
        return ops.sum(embedded * ops.expand_dims(ops.cast(weights, embedded.dtype), -1), axis=1)

    def get_config(self):
        sizes = {"n_users": self.n_users, "n_items": self.n_items, "length": self.length}
        return {**super().get_config(), **sizes, "dim": self.dim}


def build_mf(
    users: list[str],
    items: list[str],
    config: ModelConfig,
    mean: float,
    implicit: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """Biased matrix factorisation: mean + b_u + b_i + p_u . q_i, L2 on factors and biases.

    With `implicit` (the training pairs' user and item ids) and `config.mf_implicit`, SVD++:
    the user factor becomes p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j.
    """
    user_in, item_in = _id_input("user"), _id_input("item")
    u = _lookup(users, "user_lookup")(user_in)
    i = _lookup(items, "item_lookup")(item_in)
    reg = keras.regularizers.L2(config.mf_l2)
    init = keras.initializers.RandomNormal(stddev=0.05)
    # MF is lookups and one dot product: it stays float32 under a mixed policy (bfloat16 would
    # cost rating accuracy, and its activity-regulariser losses must match the float32 loss).
    f32 = {"activity_regularizer": reg, "dtype": "float32"}
    p = keras.layers.Embedding(len(users) + 1, config.mf_dim, init, name="user_factors", **f32)(u)
    if config.mf_implicit and implicit is not None:
        layer = ImplicitFeedback(
            len(users) + 1, len(items) + 1, len(implicit[0]), config.mf_dim, name="implicit", **f32
        )
        p = keras.layers.Add(name="user_total", dtype="float32")([p, layer(u)])
        rows = [
            np.searchsorted(np.asarray(v), ids) + 1
            for v, ids in zip((users, items), implicit, strict=True)
        ]
        layer.set_pairs(*rows)
    q = keras.layers.Embedding(len(items) + 1, config.mf_dim, init, name="item_factors", **f32)(i)
    bu = keras.layers.Embedding(len(users) + 1, 1, "zeros", name="user_bias", **f32)(u)
    bi = keras.layers.Embedding(len(items) + 1, 1, "zeros", name="item_bias", **f32)(i)
    dot = keras.layers.Dot(axes=1, name="match", dtype="float32")([p, q])
    out = keras.layers.Add(name="sum", dtype="float32")([dot, bu, bi])
    out = GlobalBias(mean, name="rating", dtype="float32")(out)
    return keras.Model({"user": user_in, "item": item_in}, out, name="mf")


def build_ncf(users: list[str], items: list[str], config: ModelConfig, mean: float) -> keras.Model:
    """Neural CF (He et al. 2017): a GMF branch and an MLP branch joined by a last dense layer."""
    user_in, item_in = _id_input("user"), _id_input("item")
    u = _lookup(users, "user_lookup")(user_in)
    i = _lookup(items, "item_lookup")(item_in)
    reg = keras.regularizers.L2(config.ncf_l2)
    d = config.ncf_dim

    def embed(ids, n, name):
        # float32 tables: their activity-regulariser losses must match the float32 loss.
        return keras.layers.Embedding(n + 1, d, "random_normal", reg, name=name, dtype="float32")(
            ids
        )

    gmf = keras.layers.Multiply(name="gmf")(
        [embed(u, len(users), "gmf_user"), embed(i, len(items), "gmf_item")]
    )
    mlp = keras.layers.Concatenate(name="mlp_in")(
        [embed(u, len(users), "mlp_user"), embed(i, len(items), "mlp_item")]
    )
    for n, width in enumerate(config.ncf_hidden):
        mlp = keras.layers.Dense(width, activation="relu", name=f"mlp_{n}")(mlp)
        mlp = keras.layers.Dropout(config.ncf_dropout, name=f"mlp_dropout_{n}")(mlp)
    joined = keras.layers.Concatenate(name="neumf")([gmf, mlp])
    out = keras.layers.Dense(1, name="predict", dtype="float32")(joined)
    out = GlobalBias(mean, name="rating", dtype="float32")(out)
    return keras.Model({"user": user_in, "item": item_in}, out, name="ncf")


def _tower(x, config: ModelConfig, prefix: str):
    for n, width in enumerate(config.tower_hidden):
        x = keras.layers.Dense(width, activation="relu", name=f"{prefix}_dense_{n}")(x)
    x = keras.layers.Dense(config.tower_dim, name=f"{prefix}_out")(x)
    return keras.layers.UnitNormalization(name=f"{prefix}_embedding")(x)


def history_weights(users: np.ndarray, order: np.ndarray | None, half_life: float) -> np.ndarray:
    """Each training pair's weight in its user's history: 0.5 ** (how many of the user's items
    came after it / half_life), so the latest items count most; without a half-life every item
    weighs 1, less a hair per later item, so that a capped history keeps the latest. `order`:
    the pairs' times (any sortable values; None: no order, every item weighs 1)."""
    if order is None:
        return np.ones(len(users))
    frame = pd.DataFrame({"user": users, "order": order})
    later = frame.groupby("user")["order"].rank(method="first", ascending=False).to_numpy() - 1
    if half_life <= 0:
        return 1.0 - 1e-6 * later
    return np.power(0.5, later / half_life)


def build_user_tower(
    users: list[str],
    config: ModelConfig,
    history: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    items: list[str] | None = None,
) -> keras.Model:
    """Raw user id -> unit embedding: the id lookup, then `user_core` on the lookup's row.

    With `history` (the training pairs' user ids, item ids and times or None) and
    `config.user_history`, the core also reads the user's history, as YouTube DNN does: a
    weighted mean of learned embeddings of the items (of `items`) the user had in training,
    the latest weighted most (`config.history_half_life`). The pairs are weights of the
    model, so the tower still takes a bare user id; a user's history is what it was at training.
    The core then also takes `exclude_item`, the item row to leave out of the history (the
    trainer passes each row's positive; the served tower, row 0: nothing).
    """
    row = keras.Input(shape=(), dtype="int64", name="user_row")
    x = keras.layers.Embedding(len(users) + 1, config.tower_dim, name="user_id_embedding")(row)
    if config.user_history and history is not None and items is not None:
        rows = [
            np.searchsorted(np.asarray(v), np.asarray(ids, str)) + 1
            for v, ids in zip((users, items), history[:2], strict=True)
        ]
        longest = int(np.bincount(rows[0]).max())
        layer = UserHistory(
            len(users) + 1,
            len(items) + 1,
            min(config.history_length, longest),
            config.tower_dim,
            name="user_history",
            dtype="float32",  # a bfloat16 sum over 100 items lost the training to NaN under XLA
        )
        exclude = keras.Input(shape=(), dtype="int64", name="exclude_item")
        x = keras.layers.Add(name="user_features")([x, layer(row, exclude)])  # builds the layer
        layer.set_history(*rows, history_weights(rows[0], history[2], config.history_half_life))
        core = keras.Model(
            {"user_row": row, "exclude_item": exclude}, _tower(x, config, "user"), name="user_core"
        )
        user_in = _id_input("user")
        looked_up = _lookup(users, "user_lookup")(user_in)
        # Serving excludes nothing: row 0 is the padding, which weighs 0 anyway.
        served = core({"user_row": looked_up, "exclude_item": ops.zeros_like(looked_up)})
        return keras.Model(user_in, served, name="user_tower")
    core = keras.Model(row, _tower(x, config, "user"), name="user_core")
    user_in = _id_input("user")
    return keras.Model(user_in, core(_lookup(users, "user_lookup")(user_in)), name="user_tower")


def build_item_tower(items: list[str], n_genres: int, config: ModelConfig) -> keras.Model:
    """Item id embedding, plus a projection of the multi-hot genres when there are any.

    As in the user tower, the id lookup comes first and `item_core` takes its row.
    """
    row = keras.Input(shape=(), dtype="int64", name="item_row")
    x = keras.layers.Embedding(len(items) + 1, config.tower_dim, name="item_id_embedding")(row)
    core_inputs, inputs = {"item_row": row}, {"item": _id_input("item")}
    if n_genres:
        core_inputs["genres"] = keras.Input(shape=(n_genres,), name="genres")
        inputs["genres"] = keras.Input(shape=(n_genres,), name="genres")
        g = keras.layers.Dense(config.tower_dim, use_bias=False, name="genre_embedding")(
            core_inputs["genres"]
        )
        x = keras.layers.Add(name="item_features")([x, g])
    core = keras.Model(core_inputs, _tower(x, config, "item"), name="item_core")
    rows = {"item_row": _lookup(items, "item_lookup")(inputs["item"])}
    if n_genres:
        rows["genres"] = inputs["genres"]
    return keras.Model(inputs, core(rows), name="item_tower")


def build_two_tower_trainer(
    users: list[str],
    items: list[str],
    user_tower: keras.Model,
    item_tower: keras.Model,
    config: ModelConfig,
) -> keras.Model:
    """Training graph: (user, item[, genres], item_index[, item_probability]) -> in-batch logits.

    It calls the towers' cores after lookups of its own, so that the string lookups (which XLA
    cannot compile) sit at its top level, where `shared.training.xla_split` can move them into
    the input pipeline.
    """
    inputs = {"user": _id_input("user"), "item": _id_input("item")}
    item_rows = {"item_row": _lookup(items, "item_lookup")(inputs["item"])}
    if "genres" in item_tower.input:
        inputs["genres"] = keras.Input(shape=item_tower.input["genres"].shape[1:], name="genres")
        item_rows["genres"] = inputs["genres"]
    inputs["item_index"] = keras.Input(shape=(), dtype="int32", name="item_index")
    probability = None
    if config.sampling_correction:
        inputs["item_probability"] = keras.Input(shape=(), name="item_probability")
        probability = inputs["item_probability"]
    user_core, user_rows = user_tower.get_layer("user_core"), _lookup(users, "user_lookup")
    if isinstance(user_core.input, dict):  # a history-reading tower: leave the positive out
        rows = {"user_row": user_rows(inputs["user"]), "exclude_item": item_rows["item_row"]}
        queries = user_core(rows)
    else:
        queries = user_core(user_rows(inputs["user"]))
    candidates = item_tower.get_layer("item_core")(item_rows)
    logits = InBatchSoftmax(config.temperature, name="in_batch")(
        queries, candidates, inputs["item_index"], probability
    )
    return keras.Model(inputs, logits, name="two_tower")


def build_retrieval(user_tower: keras.Model, item_embeddings, k: int) -> keras.Model:
    """Raw user id -> (top-k scores, top-k item rows) over the precomputed item embeddings."""
    user_in = _id_input("user")
    index = ItemIndex(int(item_embeddings.shape[0]), int(item_embeddings.shape[1]), k, name="index")
    index.update_candidates(ops.convert_to_tensor(item_embeddings, "float32"))
    embedding = user_tower(user_in)
    scores, rows = index(embedding)
    return keras.Model(user_in, {"scores": scores, "items": rows}, name="retrieval")


# ---------------------------------------------------------------------------------------------
# baselines


def bias_baseline(rows: pd.DataFrame, damping: float) -> dict:
    """Global mean plus damped item then user biases (Koren's baseline predictor)."""
    mean = float(rows["rating"].mean())
    resid = rows["rating"] - mean
    grouped = resid.groupby(rows["item"])
    item_bias = grouped.sum() / (grouped.count() + damping)
    resid = resid - rows["item"].map(item_bias)
    grouped = resid.groupby(rows["user"])
    user_bias = grouped.sum() / (grouped.count() + damping)
    return {"mean": mean, "item": item_bias, "user": user_bias}


def bias_predict(bias: dict, rows: pd.DataFrame) -> np.ndarray:
    return (
        bias["mean"]
        + rows["item"].map(bias["item"]).fillna(0.0).to_numpy()
        + rows["user"].map(bias["user"]).fillna(0.0).to_numpy()
    ).astype(np.float32)


def fit_popularity(frame: pd.DataFrame) -> tuple[list[str], dict]:
    """The retrieval catalogue (every training item, sorted) and the most-popular list: the
    popularity baseline's whole fit."""
    tr = frame[frame.retrieval_split == "train"]
    counts = tr["item"].value_counts()
    n = MAX_K + int(frame.groupby("user")["item"].size().max())
    popularity = {
        "items": counts.index[:n].tolist(),
        "counts": counts.to_numpy()[:n].tolist(),
        "interactions": int(len(tr)),
    }
    return sorted(tr["item"].unique()), popularity


def popularity_scores(popularity: dict, items: list[str]) -> np.ndarray:
    """Most-popular ranking as exact scores (n - rank); ties by catalogue order."""
    counts = dict(zip(popularity["items"], popularity["counts"], strict=True))
    order = np.argsort(-np.array([counts.get(i, 0) for i in items]), kind="stable")
    scores = np.empty(len(items), np.float64)
    scores[order] = len(items) - np.arange(len(items))
    return scores


# ---------------------------------------------------------------------------------------------
# a run's metadata and networks


@dataclasses.dataclass
class Meta(ModelMeta):
    """A recsys run's `model_meta.json`."""

    explicit_ratings: bool  # whether the data had ratings (without: retrieval only)
    networks: dict[str, dict]  # per network: {"status": "ok"} or {"status": "failed", "reason"}
    rating_models: list[str]  # the rating networks that trained, of RATING_MODELS
    retrieval_model: bool  # whether the two-tower retrieval model trained
    baseline_seconds: dict[str, float]  # each baseline's measured fit seconds
    schema: dict  # the id columns `score` reads (shared.scoring.InputSchema.to_dict)
    max_k: int  # recommend serves at most this many items per user
    popularity: dict  # the popularity baseline: items, their counts, training interactions
    items: int  # items in the retrieval catalogue (catalogue.json)
    rating_range: list[float] | None = None  # lowest and highest training rating (None: implicit)
    baseline_failures: dict[str, str] = dataclasses.field(default_factory=dict)  # baseline ->
    # why it has no row (an optional package not installed)

    APP = "recsys"

    @property
    def failed(self) -> dict[str, str]:
        """The networks that failed to train, with why."""
        return {n: v["reason"] for n, v in self.networks.items() if v["status"] == "failed"}

    def rating_model(self, wanted: str) -> tuple[str | None, str | None]:
        """The rating network that serves: `wanted` if it trained, else the other one (with a
        note saying why); (None, why) when no rating network trained."""
        if wanted in self.rating_models:
            return wanted, None
        if self.rating_models:
            why = f"serve.rating_model={wanted} failed in this run ({self.failed[wanted]}); "
            return self.rating_models[0], why
        if not self.explicit_ratings:
            return None, "the data had no explicit ratings"
        return None, "every rating model failed in this run: " + "; ".join(self.failed.values())


def model_path(run: RunDir, name: str) -> Path:
    """MF is the run's model.keras (what `score` and `export` use by default)."""
    return {"mf": run.model_path, "two_tower": run.path / "retrieval.keras"}.get(
        name, run.path / f"{name}.keras"
    )


def load_model(run: RunDir, name: str = "mf") -> keras.Model:
    """One of a run's networks: `mf` (model.keras, the default rating model), `ncf`, or
    `two_tower` (retrieval.keras); a missing one (it failed to train) is one clear error."""
    path = model_path(run, name)
    if not path.exists():
        raise DataError(f"{path}: no saved {name} model in this run (did it fail to train?)")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def read_catalogue(run: RunDir) -> list[str]:
    """The item ids that the retrieval index's rows stand for, in row order."""
    return read_json(run.path / "catalogue.json")


def serving_models(run: RunDir, wanted: str) -> dict[str, keras.Model]:
    """The run's served networks by SavedModel sub-folder: `rating` (the `wanted` rating
    network, or the one that trained) and `retrieval`; a network that failed is left out."""
    meta = Meta.read(run)
    rating, _ = meta.rating_model(wanted)
    names = {"rating": rating, "retrieval": "two_tower" if meta.retrieval_model else None}
    return {sub: load_model(run, name) for sub, name in names.items() if name}


def served_text(rating: str | None, retrieval: bool) -> str:
    """What the SavedModel's sub-folders take and give, in words (`rating`: the rating network
    served, None without one; `retrieval`: whether the retrieval model is served)."""
    parts = [f"rating/ ({rating}): user and item id strings -> rating"] * bool(rating)
    parts += ["retrieval/: a user id string -> top-K scores and catalogue rows"] * retrieval
    return "; ".join(parts)


def write_saved_model(model: keras.Model, folder: str) -> None:
    """`model` as a SavedModel whose `serve` takes its raw ids: {"user", "item"} string tensors
    for a rating network, a user id string tensor for the retrieval model."""
    export_saved_model(model, folder, named_input_spec(model))


def write_saved_models(models: dict[str, keras.Model], folder: str) -> None:
    """Each of `models` (`serving_models`' layout) as a SavedModel in its sub-folder of `folder`."""
    for sub, model in models.items():
        write_saved_model(model, str(Path(folder) / sub))
