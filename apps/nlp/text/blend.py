"""The blend: the networks' and a TF-IDF + logistic regression model's probabilities, mixed
with weights fitted on validation, saved as one Keras model that takes raw strings.

The TF-IDF members are Keras layers end to end: `TextVectorization(output_mode="tf_idf")`
over word 1-2 grams (and, in a second member, over character 1-5 grams of the lower-cased
text, `model.blend_char_ngrams`, with the word 1-2 grams beside them, `model.blend_char_words`),
adapted on the training texts, an L2 `UnitNormalization` per vectorizer (and of the joined row
when there are two), and a `Dense` layer carrying the logistic regression's coefficients.
scikit-learn fits those coefficients on the very features the layers compute (batch by batch,
as a sparse matrix), so the exported model reproduces the fitted one exactly; each member's C
is chosen on validation.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf
from scipy import sparse

from apps.nlp.text.config import ModelConfig
from apps.nlp.text.data import Split

# Logistic regression C, picked on validation. Character n-grams are many weak features: on
# SMS spam their validation loss still fell at C=32, so the grid reaches 128.
C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
# The weights are searched on a grid over the simplex: shares in steps of 1/20 for up to four
# models (1,771 blends), 1/10 beyond (a 6-model grid in 1/20 steps would be 53,130).
FINE, COARSE = 20, 10
TFIDF = "tfidf"  # the TF-IDF vectorizer's layer name (the character member: its characters')
TFIDF_WORDS = "tfidf_words"  # the character member's word 1-2 gram vectorizer (blend_char_words)
TFIDF_NAME = "tfidf_keras"  # the word TF-IDF model's name among the blended models
CHARS_NAME = "tfidf_chars"  # the character TF-IDF model's name among the blended models
CHUNK = 64  # texts vectorized at a time: a dense chunk is CHUNK x vocabulary floats


@dataclasses.dataclass
class Blend:
    """What fitting the blend gave: the TF-IDF model, its C, the weights and validation loss."""

    tfidf: keras.Model
    C: float
    chars: keras.Model | None  # the character n-gram TF-IDF model (None: model.blend_char_ngrams 0)
    chars_C: float | None
    weights: dict[str, float]  # each model's share (networks by name, TFIDF_NAME), summing to 1
    validation_loss: float  # the blend's validation log loss at `weights`
    seconds: float  # fitting the TF-IDF model and the weights


def _layout(config: ModelConfig, chars: bool) -> dict:
    """TextVectorization's arguments for the word 1-2 grams, or for the character
    1..`blend_char_ngrams`-grams of the lower-cased text with spaces and punctuation kept (an
    n-gram may span two words: "txt 8", "£1000", "www.")."""
    if chars:
        return {"standardize": "lower", "split": "character", "ngrams": config.blend_char_ngrams}
    return {"ngrams": 2}


def vectorizers(config: ModelConfig, texts: list[str], chars: bool = False) -> list:
    """The member's vectorizers: word 1-2 grams; or character n-grams, and beside them the word
    1-2 grams when `model.blend_char_words` (one logistic regression reads both).

    Measured (README "Text"): words beside the characters lowered the member's validation log
    loss on both real sets (SMS spam 0.0282 -> 0.0271), but not the blend's validation score,
    so it is off by default.
    """
    if not chars:
        return [_vectorizer(config, texts)]
    out = [_vectorizer(config, texts, chars=True)]
    if config.blend_char_words:
        out.append(_vectorizer(config, texts, name=TFIDF_WORDS))
    return out


def _vectorizer(config: ModelConfig, texts: list[str], chars: bool = False, name: str = TFIDF):
    """TF-IDF over word 1-2 grams (or characters: `_layout`) with scikit-learn's smoothed idf,
    1 + ln((1 + n) / (1 + df)), and none for out-of-vocabulary n-grams (as scikit-learn ignores
    them).

    Keras's own adapted idf, ln(1 + n / (1 + df)), weighs rare n-grams up to twice as hard
    against common ones; on SMS spam it cost the logistic regression five points of accuracy
    ("call", "free" and "txt" are common words). The weights are given, not adapted.
    """
    layout = _layout(config, chars)
    max_tokens = config.blend_char_max_tokens if chars else config.tfidf_max_tokens
    counter = keras.layers.TextVectorization(
        max_tokens=max_tokens, output_mode="multi_hot", **layout
    )
    counter.adapt(tf.constant(texts, dtype=tf.string), batch_size=1024)
    df = np.zeros(counter.vocabulary_size())
    for start in range(0, len(texts), CHUNK):
        df += keras.ops.convert_to_numpy(counter(tf.constant(texts[start : start + CHUNK]))).sum(0)
    idf = 1.0 + np.log((1.0 + len(texts)) / (1.0 + df))
    idf[0] = 0.0  # index 0 is the OOV token: with it in the vocabulary, its weight is ours
    return keras.layers.TextVectorization(
        output_mode="tf_idf",
        vocabulary=counter.get_vocabulary(),
        idf_weights=idf.astype("float32"),
        name=name,
        **layout,
    )


def member_vectorizers(model: keras.Model) -> list:
    """A TF-IDF member's vectorizers, in the order its features are joined."""
    return [layer for layer in model.layers if layer.name in (TFIDF, TFIDF_WORDS)]


def tfidf_features(vectorizers, texts: list[str]) -> sparse.csr_matrix:
    """The TF-IDF rows the Keras layers compute, as a sparse matrix: each vectorizer's
    L2-normalised, joined and (with several) L2-normalised again. `vectorizers`: one layer or
    a list."""
    if not isinstance(vectorizers, list | tuple):
        vectorizers = [vectorizers]
    normalize = keras.layers.UnitNormalization(dtype="float32")
    rows = []
    for start in range(0, len(texts), CHUNK):
        batch = tf.constant(texts[start : start + CHUNK])
        parts = [normalize(keras.ops.cast(v(batch), "float32")) for v in vectorizers]
        dense = parts[0] if len(parts) == 1 else normalize(keras.ops.concatenate(parts, axis=-1))
        rows.append(sparse.csr_matrix(keras.ops.convert_to_numpy(dense)))
    return sparse.vstack(rows).tocsr() if rows else sparse.csr_matrix((0, 1))


def _fit_classifier(x, y, C: float, multi_label: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    classifier = LogisticRegression(C=C, max_iter=2000)
    if multi_label:
        classifier = OneVsRestClassifier(classifier)
    return classifier.fit(x, y)


def _linear_weights(classifier, n_features: int, n_classes: int, multi_label: bool):
    """(kernel, bias) of the Dense layer whose softmax (or sigmoids) equals the classifier's
    probabilities. Binary LR has one logit z: softmax over [0, z] is its sigmoid. A class the
    training texts lack gets a bias that rules it out, as predict_proba's zero column does."""
    kernel = np.zeros((n_features, n_classes), dtype=np.float32)
    bias = np.full(n_classes, -30.0, dtype=np.float32)
    if multi_label:
        for k, estimator in enumerate(classifier.estimators_):
            if hasattr(estimator, "coef_"):
                kernel[:, k], bias[k] = estimator.coef_[0], estimator.intercept_[0]
            else:  # a label constant in training: scikit-learn's constant predictor
                bias[k] = 30.0 if estimator.y_[0] else -30.0
        return kernel, bias
    classes = classifier.classes_
    if len(classes) == 2:
        bias[classes] = 0.0
        kernel[:, classes[1]], bias[classes[1]] = classifier.coef_[0], classifier.intercept_[0]
    else:
        kernel[:, classes], bias[classes] = classifier.coef_.T, classifier.intercept_
    return kernel, bias


def log_loss(y, prob: np.ndarray, multi_label: bool) -> float:
    """Mean cross-entropy of `prob` (clipped away from 0 and 1) against `y`."""
    prob = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    if multi_label:
        return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))
    return float(-np.mean(np.log(prob[np.arange(len(y)), np.asarray(y, dtype=int)])))


def fit_tfidf(
    config: ModelConfig,
    train: Split,
    val: Split,
    n_classes: int,
    multi_label: bool,
    chars: bool = False,
):
    """The TF-IDF (words, or characters and words) + logistic regression model as Keras layers,
    its C the best of C_GRID on validation log loss; (model, C)."""
    vectorizer = vectorizers(config, train.texts, chars)
    x_train, x_val = tfidf_features(vectorizer, train.texts), tfidf_features(vectorizer, val.texts)
    best = None
    for C in C_GRID:
        classifier = _fit_classifier(x_train, train.labels, C, multi_label)
        kernel, bias = _linear_weights(classifier, x_train.shape[1], n_classes, multi_label)
        prob = _probabilities(x_val @ kernel + bias, multi_label)
        loss = log_loss(val.labels, prob, multi_label)
        if best is None or loss < best[0]:
            best = (loss, C, kernel, bias)
    _, C, kernel, bias = best
    name = CHARS_NAME if chars else TFIDF_NAME
    return build_tfidf(vectorizer, kernel, bias, multi_label, name), C


def refit_tfidf(
    config: ModelConfig, split: Split, C: float, data, chars: bool = False
) -> keras.Model:
    """The TF-IDF model fitted again on `split` (train + validation) at the chosen C."""
    vectorizer = vectorizers(config, split.texts, chars)
    x = tfidf_features(vectorizer, split.texts)
    classifier = _fit_classifier(x, split.labels, C, data.multi_label)
    kernel, bias = _linear_weights(classifier, x.shape[1], len(data.class_names), data.multi_label)
    name = CHARS_NAME if chars else TFIDF_NAME
    return build_tfidf(vectorizer, kernel, bias, data.multi_label, name)


def _probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return 1 / (1 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def build_tfidf(
    vectorizer, kernel: np.ndarray, bias: np.ndarray, multi_label: bool, name: str = TFIDF_NAME
):
    """Raw strings -> TF-IDF -> L2 norm -> Dense(kernel, bias) -> probabilities; with several
    vectorizers (a list), each L2-normalised, joined and normalised again (`tfidf_features`).
    The model is named for its member (`tfidf_keras`, `tfidf_chars`): two sit in one blend."""
    texts = keras.Input(shape=(1,), dtype="string", name="text")
    # float32 under a mixed policy too: the coefficients were fitted on float32 features.
    if isinstance(vectorizer, list | tuple) and len(vectorizer) > 1:
        parts = [
            keras.layers.UnitNormalization(dtype="float32", name=f"l2_{v.name}")(v(texts))
            for v in vectorizer
        ]
        joined = keras.layers.Concatenate(dtype="float32", name="joined")(parts)
        x = keras.layers.UnitNormalization(dtype="float32", name="l2")(joined)
    else:
        vectorizer = vectorizer[0] if isinstance(vectorizer, list | tuple) else vectorizer
        x = keras.layers.UnitNormalization(dtype="float32", name="l2")(vectorizer(texts))
    dense = keras.layers.Dense(
        kernel.shape[1],
        activation="sigmoid" if multi_label else "softmax",
        dtype="float32",
        name="logistic_regression",
    )
    model = keras.Model(texts, dense(x), name=name)
    dense.set_weights([kernel, bias])
    return model


def _compositions(k: int, n: int):
    if k == 1:
        yield (n,)
        return
    for first in range(n, -1, -1):
        for rest in _compositions(k - 1, n - first):
            yield (first, *rest)


def simplex(k: int, steps: int):
    """Every k-tuple of shares in multiples of 1/steps that sums to 1, the first model's share
    falling from 1."""
    for counts in _compositions(k, steps):
        yield tuple(c / steps for c in counts)


def fit_weights(y, probs: dict[str, np.ndarray], multi_label: bool):
    """The shares of `probs` (name -> validation probabilities) whose weighted mean has the
    lowest validation log loss on the simplex grid; ties go to the earlier models, networks
    first. (weights by name, that loss)."""
    names = list(probs)
    stacked = np.stack([probs[n] for n in names])
    best = None
    for shares in simplex(len(names), FINE if len(names) <= 4 else COARSE):
        mixed = np.tensordot(np.array(shares), stacked, axes=1)
        loss = round(log_loss(y, mixed, multi_label), 9)
        if best is None or loss < best[0]:
            best = (loss, shares)
    return {n: round(float(w), 4) for n, w in zip(names, best[1], strict=True)}, best[0]


def build_blend(models: dict[str, keras.Model], weights: dict[str, float]) -> keras.Model:
    """One model, raw strings in: the weighted sum of `models`' probabilities, built-in layers
    only (Rescaling, Add). Models with no share are left out of the graph."""
    texts = keras.Input(shape=(1,), dtype="string", name="text")
    parts = [
        keras.layers.Rescaling(weights[name], dtype="float32", name=f"{name}_share")(
            models[name](texts)
        )
        for name in models
        if weights[name] > 0
    ]
    out = parts[0] if len(parts) == 1 else keras.layers.Add(name="probs")(parts)
    return keras.Model(texts, out, name="blend")


def fit_blend(config: ModelConfig, network_val: dict[str, np.ndarray], data) -> Blend:
    """Fit the TF-IDF models (words; characters unless model.blend_char_ngrams is 0) on the
    training texts, then the blend weights on validation against them and the networks'
    validation probabilities `network_val` (name -> probabilities)."""
    start = time.perf_counter()
    train, val = data.splits["train"], data.splits["val"]
    n_classes, multi = len(data.class_names), data.multi_label
    tfidf, C = fit_tfidf(config, train, val, n_classes, multi)
    probs = network_val | {TFIDF_NAME: _predict(tfidf, val.texts)}
    chars, chars_C = None, None
    if config.blend_char_ngrams:
        chars, chars_C = fit_tfidf(config, train, val, n_classes, multi, chars=True)
        probs[CHARS_NAME] = _predict(chars, val.texts)
    weights, loss = fit_weights(val.labels, probs, multi)
    return Blend(tfidf, C, chars, chars_C, weights, loss, round(time.perf_counter() - start, 2))


def members(blended: Blend) -> dict[str, keras.Model]:
    """The blend's TF-IDF members by name (the networks are the caller's)."""
    out = {TFIDF_NAME: blended.tfidf}
    if blended.chars is not None:
        out[CHARS_NAME] = blended.chars
    return out


def _predict(model: keras.Model, texts: list[str], batch: int = 256) -> np.ndarray:
    if not texts:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts)[:, None]).batch(batch)
    return np.asarray(model.predict(dataset, verbose=0), dtype=np.float32)
