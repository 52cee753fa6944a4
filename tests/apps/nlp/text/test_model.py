"""Text models: raw strings in, probabilities out; save/load; SavedModel parity."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.nlp.text.config import ModelConfig
from apps.nlp.text.model import (
    build_bilstm,
    build_transformer,
    export_saved_model,
    make_vectorizer,
    predict_texts,
)
from apps.nlp.text.pipeline import load_model
from tests.apps.nlp.text.conftest import tiny_frame

TINY = ModelConfig(max_tokens=50, sequence_length=8, embedding_dim=8, lstm_units=4, num_heads=2,
                   feed_forward_dim=8)  # fmt: skip
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "great", "awful",
         "and", "cast", "superb", "boring", "lovely", "terrible", "brilliant", "broken"]  # fmt: skip


def make_tiny_bert_preset(folder):
    """A 1-layer BERT with an 18-word vocabulary, tokenizer and preprocessor, as a local preset."""
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32,
    )  # fmt: skip
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    classifier = keras_hub.models.BertTextClassifier(backbone, 2, preprocessor=preprocessor)
    classifier.save_to_preset(str(folder))
    return folder


@pytest.mark.parametrize("builder", [build_bilstm, build_transformer])
def test_raw_strings_in_probabilities_out_and_round_trip(tmp_path, builder):
    texts = tiny_frame(16).text.tolist()
    model = builder(TINY, make_vectorizer(TINY, texts), 2)
    prob = predict_texts(model, texts + ["never seen words entirely"], 8)
    assert prob.shape == (17, 2) and np.allclose(prob.sum(axis=1), 1, atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(predict_texts(loaded, texts, 8), prob[:16], atol=1e-6)


def test_multi_label_head_is_sigmoid():
    texts = tiny_frame(8).text.tolist()
    prob = predict_texts(build_bilstm(TINY, make_vectorizer(TINY, texts), 3, True), texts, 4)
    assert prob.shape == (8, 3) and not np.allclose(prob.sum(axis=1), 1)


def test_saved_model_serves_raw_strings_like_the_model(tmp_path):
    texts = tiny_frame(12).text.tolist()
    model = build_transformer(TINY, make_vectorizer(TINY, texts), 2)
    export_saved_model(model, str(tmp_path / "saved"))
    saved = tf.saved_model.load(str(tmp_path / "saved"))  # kept: its variables die with it
    served = saved.serve(tf.constant(texts))
    np.testing.assert_allclose(served.numpy(), predict_texts(model, texts, 4), atol=1e-5)


def test_transformer_gives_finite_probabilities_for_a_text_with_no_tokens():
    texts = tiny_frame(16).text.tolist()
    model = build_transformer(TINY, make_vectorizer(TINY, texts), 2)
    prob = predict_texts(model, [":)", ":-) :-)", "", "the film"], 4)  # SMS has ":)" alone
    assert np.isfinite(prob).all() and np.allclose(prob.sum(axis=1), 1, atol=1e-5)
    pooled = keras.Model(model.input, model.get_layer("pool").output)
    np.testing.assert_array_equal(pooled.predict(tf.constant([[":)"]]), verbose=0), 0.0)
