"""The blend: its TF-IDF half as Keras layers reproduces scikit-learn's fit exactly, the weight
is fitted on validation, and the blended model is one model with the weighted mean."""

import dataclasses
import types

import numpy as np
import pytest

from apps.nlp.text import blend
from apps.nlp.text.config import ModelConfig
from apps.nlp.text.data import Split
from apps.nlp.text.model import predict_texts
from tests.apps.nlp.text.conftest import tiny_frame
from tests.apps.nlp.text.test_model import build_tiny

CONFIG = ModelConfig(tfidf_max_tokens=200)


def split_of(frame) -> Split:
    return Split(frame.text.tolist(), (frame.label == "pos").to_numpy().astype(int))


@pytest.mark.parametrize(
    ("multi_label", "chars", "words"),
    [(False, False, False), (True, False, False), (False, True, False), (False, True, True)],
)
def test_tfidf_layers_give_the_fitted_logistic_regression_probabilities(multi_label, chars, words):
    train, val = split_of(tiny_frame(48, seed=1)), split_of(tiny_frame(16, seed=2))
    n_classes = 2
    if multi_label:  # two labels: positive, and "mentions the cast" (always on)
        train.labels = np.stack([train.labels, np.ones_like(train.labels)], axis=1)
        val.labels = np.stack([val.labels, np.ones_like(val.labels)], axis=1)
    config = dataclasses.replace(CONFIG, blend_char_words=words)
    model, C = blend.fit_tfidf(config, train, val, n_classes, multi_label, chars)
    assert C in blend.C_GRID and model.name == ("tfidf_chars" if chars else "tfidf_keras")
    vectorizer = blend.member_vectorizers(model)
    assert [v.name for v in vectorizer] == ["tfidf", "tfidf_words"][: 1 + words]
    x_val = blend.tfidf_features(vectorizer, val.texts)
    classifier = blend._fit_classifier(
        blend.tfidf_features(vectorizer, train.texts), train.labels, C, multi_label
    )
    expected = classifier.predict_proba(x_val)
    if not multi_label:
        assert expected.shape == (16, 2)
    prob = predict_texts(model, val.texts, 8)
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    positive = prob[:, 0] >= 0.5 if multi_label else prob.argmax(axis=1) == 1
    assert positive.astype(int).tolist() == val.labels.reshape(16, -1)[:, 0].tolist()


def test_weights_follow_the_better_models_on_validation():
    y = np.array([0, 1] * 10)
    right = np.eye(2)[y] * 0.9 + 0.05
    coin = np.full((20, 2), 0.5)
    assert blend.fit_weights(y, {"a": right, "b": coin}, False)[0] == {"a": 1.0, "b": 0.0}
    assert blend.fit_weights(y, {"a": coin, "b": right}, False)[0] == {"a": 0.0, "b": 1.0}
    # Two half-right models, wrong on different texts: only their mean is right everywhere.
    half = right.copy()
    half[:10] = half[:10, ::-1]
    other = right.copy()
    other[10:] = other[10:, ::-1]
    weights, loss = blend.fit_weights(y, {"a": half, "b": other, "c": coin}, False)
    assert weights == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert loss == pytest.approx(blend.log_loss(y, (half + other) / 2, False), abs=1e-8)
    shares = list(blend.simplex(3, 4))
    assert len(shares) == 15 and all(sum(s) == pytest.approx(1) for s in shares)


def test_blend_is_one_model_with_the_weighted_mean():
    texts = tiny_frame(24).text.tolist()
    networks = {"cnn": build_tiny("cnn", texts), "bigru": build_tiny("bigru", texts)}
    train = split_of(tiny_frame(24))
    tfidf, _ = blend.fit_tfidf(CONFIG, train, train, 2, False)
    models = networks | {"tfidf_keras": tfidf}
    weights = {"cnn": 0.3, "bigru": 0.0, "tfidf_keras": 0.7}
    mixed = blend.build_blend(models, weights)
    assert "bigru_share" not in [layer.name for layer in mixed.layers]  # no share, no branch
    expected = 0.3 * predict_texts(networks["cnn"], texts, 8)
    expected += 0.7 * predict_texts(tfidf, texts, 8)
    np.testing.assert_allclose(predict_texts(mixed, texts, 8), expected, atol=1e-6)


def test_character_member_reads_character_ngrams_across_words():
    train = split_of(tiny_frame(48, seed=1))
    vectorizer = blend._vectorizer(CONFIG, train.texts, chars=True)
    # Keras joins an n-gram's characters with a space: "t h e" is "the", "e   f" is "e f".
    grams = {tuple(str(g)[::2]) for g in vectorizer.get_vocabulary()[1:]}
    assert ("t",) in grams and tuple("e f") in grams  # 1-grams, and n-grams across a space
    assert max(len(g) for g in grams) == CONFIG.blend_char_ngrams


def test_character_member_joins_normalised_word_and_character_features():
    train = split_of(tiny_frame(48, seed=1))
    joined_config = dataclasses.replace(CONFIG, blend_char_words=True)
    chars, words = blend.vectorizers(joined_config, train.texts, chars=True)
    alone = blend.tfidf_features(chars, train.texts[:5]).toarray()
    joined = blend.tfidf_features([chars, words], train.texts[:5]).toarray()
    assert joined.shape[1] == chars.vocabulary_size() + words.vocabulary_size()
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1.0, atol=1e-5)
    # each half weighs the same: the character part is the characters' unit row over sqrt(2)
    np.testing.assert_allclose(joined[:, : alone.shape[1]], alone / np.sqrt(2), atol=1e-5)
    assert (
        len(
            blend.vectorizers(
                dataclasses.replace(CONFIG, blend_char_words=False), train.texts, True
            )
        )
        == 1
    )


def test_blend_fits_word_and_character_members_unless_turned_off():
    train, val = split_of(tiny_frame(48, seed=1)), split_of(tiny_frame(16, seed=2))
    data = types.SimpleNamespace(
        splits={"train": train, "val": val}, class_names=["neg", "pos"], multi_label=False
    )
    network = {"cnn": np.full((16, 2), 0.5, dtype=np.float32)}
    both = blend.fit_blend(CONFIG, network, data)
    assert set(both.weights) == {"cnn", "tfidf_keras", "tfidf_chars"}
    assert set(blend.members(both)) == {"tfidf_keras", "tfidf_chars"}
    assert both.chars_C in blend.C_GRID and both.weights["cnn"] == 0.0  # a coin never helps
    words = blend.fit_blend(dataclasses.replace(CONFIG, blend_char_ngrams=0), network, data)
    assert set(words.weights) == {"cnn", "tfidf_keras"} and words.chars is None
