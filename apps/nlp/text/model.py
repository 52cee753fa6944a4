"""Text classifiers that take raw strings: a Kim-style CNN, a fastText-style bag of n-gram
embeddings, a BiGRU, a BiLSTM, a pre-layer-norm Transformer built from KerasHub layers, a
KerasHub BERT-family classifier from a local preset folder, and the TF-IDF + logistic
regression baseline; loading a run's models, its SavedModel, its metadata.

The vocabulary (TextVectorization adapted on the training texts) or the preset's tokenizer is
part of every model, so a saved or exported model maps raw strings to probabilities. Only
built-in Keras and KerasHub layers: a saved `model.keras` loads without this project.
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
    best: str  # model.keras: the network with the lowest finite validation loss, or `blend`
    failed_networks: dict[str, str]  # name -> why it failed; never selected, no models/<name>
    validation_loss: dict[str, float]  # the lowest validation loss of each network that trained
    learning_rates: dict[str, float]  # the peak learning rate of each network
    sequence_length: int  # tokens the run's model reads per text; longer texts are truncated
    network_seconds: dict[str, float]  # wall seconds of each network's training
    # The blend of the networks with TF-IDF + LR: weights (each model's share), the TF-IDF C,
    # validation accuracies (blend, best network), seconds, selected (shipped); {} when none.
    blend: dict = dataclasses.field(default_factory=dict)
    # train.refit: network -> epochs it was trained again for on train + validation
    refit: dict[str, int] = dataclasses.field(default_factory=dict)
    # The leaderboard's metric and the blend's bar (evaluate.metric): accuracy or macro_f1
    metric: str = "accuracy"

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


def make_bag_vectorizer(config: ModelConfig, texts: list[str]) -> keras.layers.TextVectorization:
    """TF-IDF over word 1..`bag_ngrams`-grams adapted on the training texts: fastText's bag."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=config.bag_max_tokens,
        output_mode="tf_idf",
        ngrams=config.bag_ngrams if config.bag_ngrams > 1 else None,
        name=VECTORIZE,
    )
    vectorizer.adapt(tf.constant(texts, dtype=tf.string), batch_size=1024)
    return vectorizer


CHAR_VECTORIZE = "vectorize_chars"  # fasttext's character n-gram bag, when it has one


def make_char_vectorizer(config: ModelConfig, texts: list[str]):
    """TF-IDF over character 1..`bag_char_ngrams`-grams of the lower-cased text, punctuation
    and spaces kept (an n-gram may span two words), adapted on the training texts; None when
    `bag_char_ngrams` is 0."""
    if not config.bag_char_ngrams:
        return None
    vectorizer = keras.layers.TextVectorization(
        max_tokens=config.bag_char_max_tokens,
        standardize="lower",
        split="character",
        output_mode="tf_idf",
        ngrams=config.bag_char_ngrams if config.bag_char_ngrams > 1 else None,
        name=CHAR_VECTORIZE,
    )
    vectorizer.adapt(tf.constant(texts, dtype=tf.string), batch_size=1024)
    return vectorizer


def make_char_id_vectorizer(config: ModelConfig, texts: list[str]):
    """Character ids of the lower-cased text (spaces, digits and punctuation kept), padded or
    truncated to `char_sequence_length`, adapted on the training texts: char_cnn's input."""
    vectorizer = keras.layers.TextVectorization(
        standardize="lower",
        split="character",
        output_sequence_length=config.char_sequence_length,
        name=VECTORIZE,
    )
    vectorizer.adapt(tf.constant(texts, dtype=tf.string), batch_size=1024)
    return vectorizer


# What each network reads, by the vectorizer it shares with others: a network not named here
# reads token ids (`make_vectorizer`: cnn, bigru, bilstm, transformer).
VECTORIZER_KINDS = {"fasttext": "bag", "char_cnn": "char_ids"}
VECTORIZER_MAKERS = {
    "ids": (make_vectorizer, "tokens"),
    "bag": (make_bag_vectorizer, "n-grams"),
    "char_ids": (make_char_id_vectorizer, "characters"),
}


def vectorizer_kind(network: str) -> str:
    """The kind of vectorizer `network` reads (a key of VECTORIZER_MAKERS)."""
    return VECTORIZER_KINDS.get(network, "ids")


def vectorizer_names(model: keras.Model) -> list[str]:
    """The names of `model`'s TextVectorization layers (where XLA cuts the graph)."""
    return [
        layer.name for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)
    ]


def _text_input():
    return keras.Input(shape=(1,), dtype="string", name="text")


def _head(x, config: ModelConfig, n_classes: int, multi_label: bool):
    x = keras.layers.Dropout(config.dropout)(x)
    # float32 outputs under a mixed policy: probabilities must sum to 1 to the last digit shown.
    activation = "sigmoid" if multi_label else "softmax"
    return keras.layers.Dense(n_classes, activation=activation, dtype="float32", name="probs")(x)


def _embed(ids, vectorizer, config: ModelConfig, mask_zero: bool):
    return keras.layers.Embedding(
        vectorizer.vocabulary_size(), config.embedding_dim, mask_zero=mask_zero, name="embedding"
    )(ids)


def build_cnn(
    config: ModelConfig,
    vectorizer,
    n_classes: int,
    multi_label: bool = False,
    widths=None,
    name: str = "cnn",
):
    """Kim (2014): one convolution per kernel width over the token embeddings, each max-pooled
    over time, concatenated. Max pooling needs no mask (padding never wins a max that a real
    n-gram's feature beats, and an empty text still gives finite numbers). `widths` (default
    `cnn_widths`) and `name` let the same network read characters (`build_char_cnn`)."""
    texts = _text_input()
    x = _embed(vectorizer(texts), vectorizer, config, mask_zero=False)
    x = keras.layers.SpatialDropout1D(config.embedding_dropout, name="embedding_dropout")(x)
    pooled = [
        keras.layers.GlobalMaxPooling1D(name=f"max_{width}")(
            keras.layers.Conv1D(
                config.cnn_filters, width, padding="same", activation="relu", name=f"conv_{width}"
            )(x)
        )
        for width in widths or config.cnn_widths
    ]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="features")(pooled)
    return keras.Model(texts, _head(x, config, n_classes, multi_label), name=name)


def build_char_cnn(config: ModelConfig, vectorizer, n_classes: int, multi_label: bool = False):
    """The Kim CNN over character embeddings (`make_char_id_vectorizer`'s ids), kernel widths
    `char_cnn_widths` characters: it reads what the word vectorizer strips (currency signs,
    digits, "www.") and misspellings, one n-gram feature per filter."""
    widths = config.char_cnn_widths
    return build_cnn(config, vectorizer, n_classes, multi_label, widths, name="char_cnn")


def build_fasttext(
    config: ModelConfig, vectorizer, n_classes: int, multi_label: bool = False, chars=None
):
    """fastText (Joulin et al. 2017): the text as a bag of word and word-pair embeddings. The
    bag is the TF-IDF vector over 1..`bag_ngrams`-grams, L2-normalised, times the embedding
    matrix (a Dense layer without bias): a weighted mean of the n-gram embeddings, exact for
    any length and zero for a text without known n-grams. `vectorizer` is the bag's own
    (`make_bag_vectorizer`), not the sequence one; `chars` (`make_char_vectorizer`) adds a
    bag of character n-grams, normalised on its own and embedded beside the words'
    (Bojanowski et al. 2017's subword n-grams, here over the whole text)."""
    texts = _text_input()
    x = keras.layers.UnitNormalization(name="l2")(vectorizer(texts))
    if chars is not None:
        x = keras.layers.Concatenate(name="bags")(
            [x, keras.layers.UnitNormalization(name="l2_chars")(chars(texts))]
        )
    x = keras.layers.Dense(config.embedding_dim, use_bias=False, name="embedding")(x)
    x = keras.layers.Dense(config.embedding_dim, activation="relu", name="hidden")(x)
    return keras.Model(texts, _head(x, config, n_classes, multi_label), name="fasttext")


def _recurrent(kind: str, config: ModelConfig, vectorizer, n_classes: int, multi_label: bool):
    texts = _text_input()
    x = _embed(vectorizer(texts), vectorizer, config, mask_zero=True)
    x = keras.layers.SpatialDropout1D(config.embedding_dropout, name="embedding_dropout")(x)
    cell = keras.layers.LSTM if kind == "bilstm" else keras.layers.GRU
    units = config.lstm_units if kind == "bilstm" else config.gru_units
    x = keras.layers.Bidirectional(cell(units), name=kind)(x)
    return keras.Model(texts, _head(x, config, n_classes, multi_label), name=kind)


def build_bilstm(config: ModelConfig, vectorizer, n_classes: int, multi_label: bool = False):
    """Raw strings -> token ids -> embedding -> bidirectional LSTM -> class probabilities."""
    return _recurrent("bilstm", config, vectorizer, n_classes, multi_label)


def build_bigru(config: ModelConfig, vectorizer, n_classes: int, multi_label: bool = False):
    """Raw strings -> token ids -> embedding -> bidirectional GRU -> class probabilities."""
    return _recurrent("bigru", config, vectorizer, n_classes, multi_label)


def _encode(texts, config: ModelConfig, vectorizer):
    import keras_hub

    x = keras_hub.layers.TokenAndPositionEmbedding(
        vectorizer.vocabulary_size(),
        config.sequence_length,
        config.embedding_dim,
        embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        mask_zero=True,  # the encoder blocks read the padding mask from it
        name="embedding",
    )(vectorizer(texts))
    for index in range(config.transformer_layers):
        x = keras_hub.layers.TransformerEncoder(
            config.feed_forward_dim,
            config.num_heads,
            dropout=config.dropout,
            activation="gelu",
            normalize_first=True,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name=f"transformer_{index}",
        )(x)
    # Pre-LN blocks leave the residual stream unnormalised: one norm closes the stack.
    return keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)


def encoder_layers(config: ModelConfig) -> list[str]:
    """The names of the encoder's weighted layers, shared by `pretrain` and the classifier."""
    blocks = [f"transformer_{i}" for i in range(config.transformer_layers)]
    return ["embedding", *blocks, "final_norm"]


def build_encoder(config: ModelConfig, vectorizer) -> keras.Model:
    """Raw strings -> token states: KerasHub token + position embedding, pre-layer-norm
    Transformer encoder blocks and a final norm. What `pretrain` trains on masked tokens."""
    texts = _text_input()
    return keras.Model(texts, _encode(texts, config, vectorizer), name="encoder")


def build_transformer(
    config: ModelConfig,
    vectorizer,
    n_classes: int,
    multi_label: bool = False,
    encoder: keras.Model | None = None,
) -> keras.Model:
    """The encoder's layers (weights copied from a pretrained `encoder` when given), max-pooled
    over positions, and the head; one flat graph, so XLA can cut it after the vectorizer.

    Max pooling rather than a masked mean: GlobalAveragePooling1D divides by the number of
    tokens, and a text with none once punctuation is stripped (the SMS ":)") came out NaN; a
    custom pooling layer would tie the saved model to project code.
    """
    texts = _text_input()
    x = keras.layers.GlobalMaxPooling1D(name="pool")(_encode(texts, config, vectorizer))
    model = keras.Model(texts, _head(x, config, n_classes, multi_label), name="transformer")
    if encoder is not None:
        for name in encoder_layers(config):
            model.get_layer(name).set_weights(encoder.get_layer(name).get_weights())
    return model


BUILDERS = {
    "cnn": build_cnn,
    "char_cnn": build_char_cnn,
    "fasttext": build_fasttext,
    "bigru": build_bigru,
    "bilstm": build_bilstm,
    "transformer": build_transformer,
}


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


BASELINE_C = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # the baseline's C grid, picked on validation


def fit_baseline(data: TextData) -> tuple[dict[str, np.ndarray], float, float]:
    """TF-IDF (words and word pairs, sublinear tf) + logistic regression on the same split, its
    C the one of BASELINE_C with the best validation macro F1: val/test probs, the seconds the
    fits took and the C."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000
    )
    features = vectorizer.fit_transform(data.splits["train"].texts)
    split_features = {s: vectorizer.transform(data.splits[s].texts) for s in ("val", "test")}
    best = None
    for C in BASELINE_C:
        out = _baseline_probabilities(data, features, split_features, C)
        y, prob = data.splits["val"].labels, out["val"]
        predicted = prob >= 0.5 if data.multi_label else prob.argmax(axis=1)
        score = f1_score(y, predicted, average="macro", zero_division=0)
        if best is None or score > best[0]:
            best = (score, C, out)
    return best[2], time.perf_counter() - start, best[1]


def _baseline_probabilities(data: TextData, features, split_features: dict, C: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    classifier = LogisticRegression(C=C, max_iter=2000)
    if data.multi_label:
        classifier = OneVsRestClassifier(classifier)
    classifier.fit(features, data.splits["train"].labels)
    out = {}
    for split, x in split_features.items():
        prob = classifier.predict_proba(x)
        if not data.multi_label and prob.shape[1] != len(data.class_names):
            full = np.zeros((len(prob), len(data.class_names)))  # a class missing from train
            full[:, classifier.classes_] = prob
            prob = full
        out[split] = prob
    return out


def _load(path: Path) -> keras.Model:
    """A saved text model, loaded safely (the KerasHub classes registered when it uses any:
    importing keras_hub costs seconds of every `score` of a CNN or a blend that never needs it)."""
    if uses_keras_hub(path):
        import keras_hub  # noqa: F401  registers the KerasHub task, backbone and tokenizer classes
    return load_saved_model(path)


def uses_keras_hub(path: Path) -> bool:
    """Whether the `.keras` archive's config names a KerasHub class (True when unreadable, so
    that loading fails, if at all, with Keras's own message)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return b"keras_hub" in archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return True


def load_model(run: RunDir) -> keras.Model:
    """The run's model (the network or blend that won on validation), from `model.keras`."""
    return _load(run.model_path)


def load_network(run: RunDir, name: str) -> keras.Model:
    """One model the run trained, from `models/<name>.keras`."""
    return _load(run.path / "models" / f"{name}.keras")


ENCODER = "encoder.keras"  # what `pretrain` writes in its run folder


def load_encoder(folder: str) -> keras.Model:
    """The encoder `pretrain` wrote in run folder `folder` (its vectorizer inside)."""
    from shared.config import ConfigError

    path = Path(folder) / ENCODER
    if not path.is_file():
        raise ConfigError(f"model.pretrained: no {ENCODER} in {folder}; run `pretrain` first")
    return _load(path)


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
