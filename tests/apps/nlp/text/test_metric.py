"""The run's metric (evaluate.metric) and class weights: macro F1 where classes are imbalanced."""

import numpy as np
import pytest

from apps.nlp.text import pipeline
from apps.nlp.text.config import Config
from apps.nlp.text.data import Split
from apps.nlp.text.metrics import primary_metric


def test_auto_metric_is_macro_f1_only_for_imbalanced_single_label_data():
    spam = np.array([0] * 87 + [1] * 13)  # SMS spam's share
    assert primary_metric("auto", spam, multi_label=False) == "macro_f1"
    assert primary_metric("auto", np.array([0, 1] * 50), multi_label=False) == "accuracy"
    assert primary_metric("auto", np.array([0] * 60 + [1] * 40), multi_label=False) == "accuracy"
    assert primary_metric("auto", np.array([0] * 60 + [1] * 30), multi_label=False) == "accuracy"
    multi = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    assert primary_metric("auto", multi, multi_label=True) == "accuracy"
    assert primary_metric("macro_f1", np.array([0, 1] * 50), multi_label=False) == "macro_f1"


class _Data:
    class_names, multi_label = ["ham", "spam"], False


def test_balanced_class_weights_make_each_class_weigh_the_same_in_all():
    config = Config()
    split = Split(["t"] * 10, np.array([0] * 8 + [1] * 2))
    assert pipeline.class_weights(config, split, _Data()) is None  # the default: none
    config.train.class_weight = "balanced"
    weights = pipeline.class_weights(config, split, _Data())
    assert weights == {0: 10 / 16, 1: 10 / 4}
    assert 8 * weights[0] == 2 * weights[1]


def test_imbalanced_runs_log_validation_macro_f1_each_epoch():
    from sklearn.metrics import f1_score

    from apps.nlp.text.model import predict_texts
    from tests.apps.nlp.text.conftest import tiny_frame
    from tests.apps.nlp.text.test_model import build_tiny

    texts = tiny_frame(16).text.tolist()
    model = build_tiny("cnn", texts)
    val = Split(texts, np.array([0, 1] * 8))
    balanced = _Data()
    balanced.splits = {"train": Split(texts, np.array([0, 1] * 8))}
    assert pipeline._epoch_scores(model, Config(), balanced, val) == []  # accuracy: Keras logs it
    imbalanced = _Data()
    imbalanced.splits = {"train": Split(texts, np.array([0] * 14 + [1] * 2))}
    (score,) = pipeline._epoch_scores(model, Config(), imbalanced, val)
    score.set_model(model)
    model.stop_training = False  # what fit sets; the score reads it
    logs = {}
    score.on_epoch_end(0, logs)
    predicted = predict_texts(model, texts, 8).argmax(axis=1)
    assert logs["val_macro_f1"] == pytest.approx(f1_score(val.labels, predicted, average="macro"))
