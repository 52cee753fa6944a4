"""Text models: raw strings in, probabilities out; save/load round trips; the tiny BERT preset."""

import dataclasses

import numpy as np
import pytest

from apps.nlp.text.config import ModelConfig
from apps.nlp.text.model import (
    BUILDERS,
    VECTORIZER_MAKERS,
    build_bilstm,
    build_fasttext,
    load_model,
    load_network,
    make_bag_vectorizer,
    make_char_id_vectorizer,
    make_char_vectorizer,
    make_vectorizer,
    predict_texts,
    vectorizer_kind,
    vectorizer_names,
)
from shared.run import RunDir
from tests.apps.nlp.text.conftest import tiny_frame

TINY = ModelConfig(
    max_tokens=50,
    sequence_length=8,
    embedding_dim=8,
    lstm_units=4,
    gru_units=4,
    cnn_filters=4,
    cnn_widths=[2, 3],
    bag_max_tokens=80,
    bag_char_max_tokens=120,
    num_heads=2,
    feed_forward_dim=8,
)
VOCAB = [
    *["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "great", "awful"],
    *["and", "cast", "superb", "boring", "lovely", "terrible", "brilliant", "broken"],
]


def make_tiny_bert_preset(folder):
    """A 1-layer BERT with an 18-word vocabulary, tokenizer and preprocessor, as a local preset."""
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB),
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=32,
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    classifier = keras_hub.models.BertTextClassifier(backbone, 2, preprocessor=preprocessor)
    classifier.save_to_preset(str(folder))
    return folder


def build_tiny(name: str, texts: list[str], n_classes: int = 2, multi_label: bool = False):
    """Network `name` at TINY size, its vectorizer adapted on `texts` (fasttext: with its
    character n-gram bag; char_cnn: with character ids)."""
    if name == "fasttext":
        bags = make_bag_vectorizer(TINY, texts), make_char_vectorizer(TINY, texts)
        return build_fasttext(TINY, *bags[:1], n_classes, multi_label, chars=bags[1])
    make, _ = VECTORIZER_MAKERS[vectorizer_kind(name)]
    return BUILDERS[name](TINY, make(TINY, texts), n_classes, multi_label)


# Every network's saved model is loaded again, in a fresh process, by test_portable.py.
@pytest.mark.parametrize("name", ["cnn", "char_cnn", "fasttext"])
def test_raw_strings_in_probabilities_out_and_round_trip(tmp_path, name):
    texts = tiny_frame(16).text.tolist()
    model = build_tiny(name, texts)
    prob = predict_texts(model, texts + ["never seen words entirely"], 8)
    assert prob.shape == (17, 2) and np.allclose(prob.sum(axis=1), 1, atol=1e-5)
    run = RunDir(tmp_path)
    model.save(run.model_path)
    (tmp_path / "models").mkdir()
    model.save(tmp_path / "models" / "net.keras")
    for loaded in (load_model(run), load_network(run, "net")):
        np.testing.assert_allclose(predict_texts(loaded, texts, 8), prob[:16], atol=1e-6)


def test_fasttext_reads_character_ngrams_only_when_asked():
    texts = tiny_frame(16).text.tolist()
    model = build_tiny("fasttext", texts)
    assert vectorizer_names(model) == ["vectorize", "vectorize_chars"]
    # punctuation, digits and spaces are kept: spam's tells (Keras joins an n-gram's
    # characters with spaces, so "£1000" is "£ 1 0 0 0" and "0 n" across words "0   n")
    vocabulary = make_char_vectorizer(TINY, ["win £1000 now!!"]).get_vocabulary()
    assert {"£", "!", "£ 1 0 0 0", "0   n"} <= set(vocabulary)
    words_only = dataclasses.replace(TINY, bag_char_ngrams=0)
    assert make_char_vectorizer(words_only, texts) is None


def test_char_cnn_reads_the_characters_the_word_vectorizer_strips():
    texts = ["win £1000 now!!", "see you at 5"]
    words, chars = make_vectorizer(TINY, texts), make_char_id_vectorizer(TINY, texts)
    assert "£" not in words.get_vocabulary() and "£" in chars.get_vocabulary()
    ids = np.asarray(chars(["£1!"]))[0]
    assert ids.shape == (TINY.char_sequence_length,)
    assert [chars.get_vocabulary()[i] for i in ids[:3]] == ["£", "1", "!"] and not ids[3:].any()
    model = build_tiny("char_cnn", texts)
    assert model.name == "char_cnn" and vectorizer_names(model) == ["vectorize"]
    widths = {layer.kernel_size[0] for layer in model.layers if layer.name.startswith("conv_")}
    assert widths == set(TINY.char_cnn_widths)


def test_multi_label_head_is_sigmoid():
    texts = tiny_frame(8).text.tolist()
    prob = predict_texts(build_bilstm(TINY, make_vectorizer(TINY, texts), 3, True), texts, 4)
    assert prob.shape == (8, 3) and not np.allclose(prob.sum(axis=1), 1)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_network_gives_finite_probabilities_for_a_text_with_no_tokens(name):
    model = build_tiny(name, tiny_frame(16).text.tolist())
    prob = predict_texts(model, [":)", ":-) :-)", "", "the film"], 4)  # SMS has ":)" alone
    assert np.isfinite(prob).all() and np.allclose(prob.sum(axis=1), 1, atol=1e-5)
