"""What evaluate measures on a split: the classification report (single- or multi-label) and
the texts the model got wrong with the highest confidence."""

import numpy as np
import pandas as pd

from apps.nlp.text.data import Split
from shared import evaluation as ev


def split_report(y, prob: np.ndarray, names: list[str], multi_label: bool) -> dict:
    """Accuracy, macro F1/precision/recall and per-class metrics of `prob` against `y`; for
    multi-label data, accuracy is the exact match of the label set, and micro F1 is added."""
    if not multi_label:
        return ev.classification_report(y, prob, names, top_k=min(5, len(names)))
    from sklearn import metrics as skm

    predicted = (prob >= 0.5).astype(int)
    p, r, f, support = skm.precision_recall_fscore_support(y, predicted, zero_division=0)
    per_class = {
        n: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, n in enumerate(names)
    }
    return {
        "examples": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),  # exact match of the label set
        "macro_f1": float(f.mean()),
        "micro_f1": float(skm.f1_score(y, predicted, average="micro", zero_division=0)),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "per_class": per_class,
    }


IMBALANCED = 1 / 3  # rarest / commonest class below this: macro F1 is the metric (auto)


def primary_metric(choice: str, labels: np.ndarray, multi_label: bool) -> str:
    """The metric of `evaluate.metric` (`choice`) for training labels `labels`: auto is
    macro_f1 for single-label data whose rarest class has under IMBALANCED times the texts of
    its commonest, else accuracy (for multi-label data, the exact match of the label set)."""
    if choice != "auto":
        return choice
    if multi_label or not len(labels):
        return "accuracy"
    counts = np.bincount(np.asarray(labels, dtype=int))
    counts = counts[counts > 0]
    return "macro_f1" if counts.min() < IMBALANCED * counts.max() else "accuracy"


def _label_sets(names: list[str], rows: np.ndarray) -> list[str]:
    return [";".join(n for n, on in zip(names, row, strict=True) if on) for row in rows]


def most_confidently_wrong(
    split: Split, prob: np.ndarray, names: list[str], multi: bool, count: int
) -> pd.DataFrame:
    """The test texts the model got wrong with the highest confidence, most confident first."""
    if multi:
        predicted_sets = prob >= 0.5
        wrong = np.flatnonzero((predicted_sets != split.labels.astype(bool)).any(axis=1))
        confidence = np.abs(prob - 0.5).max(axis=1) + 0.5
        truth, guess = _label_sets(names, split.labels), _label_sets(names, predicted_sets)
    else:
        predicted = prob.argmax(axis=1)
        wrong = np.flatnonzero(predicted != split.labels)
        confidence = prob.max(axis=1)
        truth = [names[i] for i in split.labels]
        guess = [names[i] for i in predicted]
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    return pd.DataFrame(
        {
            "text": [split.texts[i] for i in wrong],
            "true_label": [truth[i] for i in wrong],
            "predicted_label": [guess[i] for i in wrong],
            "confidence": np.round(confidence[wrong], 4),
        }
    )
