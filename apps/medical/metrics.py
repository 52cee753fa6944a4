"""The medical metrics: ROC-AUC (the primary metric, MedMNIST's), accuracy as MedMNIST counts
it, the calibration pairs of the ECE, and the report of one split with bootstrap intervals
and the rates at the operating point."""

import numpy as np

from apps.medical.bootstrap import auc_intervals, ece_interval
from apps.medical.model import Meta
from apps.medical.scorer import decide
from shared import evaluation as ev

AUC = "macro_roc_auc"  # the primary metric (MedMNIST): selects the checkpoint, ranks the board


def onehot_of(labels: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    return labels if task == "multilabel" else np.eye(n_classes)[labels]


def auc_of(prob: np.ndarray, labels: np.ndarray, task: str, positive: int) -> float:
    """The primary metric: the positive class's ROC-AUC (binary), else the mean one-vs-rest
    ROC-AUC over classes or findings (scikit-learn); NaN where undefined or not finite."""
    if not np.isfinite(prob).all():  # a diverging network: the divergence guard stops it
        return float("nan")
    onehot = onehot_of(labels, task, prob.shape[1])
    if task == "binary":
        return ev.roc_auc(onehot[:, positive], prob[:, positive])
    return ev.macro_roc_auc(onehot, prob)


def medmnist_accuracy(prob: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Accuracy as MedMNIST reports it: the most probable class, or every finding at 0.5."""
    if task == "multilabel":
        return float(np.mean((prob >= 0.5) == (labels >= 0.5)))
    return float(np.mean(prob.argmax(axis=1) == labels))


def decision_classes(task: str, n_classes: int, positive: int) -> list[int]:
    """Classes that get a threshold: the positive class (binary), every finding (multi-label),
    none for multi-class (the decision there is the most probable class)."""
    if task == "binary":
        return [positive]
    return list(range(n_classes)) if task == "multilabel" else []


def calibration_pairs(task: str, labels, prob: np.ndarray, positive: int):
    """(outcome 0/1, predicted probability) for the ECE: the positive class's probability for
    binary, the top-label confidence for multi-class, every (image, finding) for multi-label."""
    if task == "binary":
        return (labels == positive).astype(float), prob[:, positive]
    if task == "multilabel":
        return np.asarray(labels, float).ravel(), prob.ravel()
    return (prob.argmax(axis=1) == labels).astype(float), prob.max(axis=1)


def split_report(labels, outputs, meta: Meta, cfg, seed: int = 0, patients=None) -> dict:
    """The metrics of one split from its (uncalibrated, calibrated) probabilities; bootstrap
    intervals resample patients when `patients` names them, else images."""
    uncalibrated, prob = outputs
    names, task = meta.class_names, meta.task
    onehot = labels if task == "multilabel" else np.eye(len(names))[labels]
    decisions = decide(prob, meta)
    groups = patients if ev.patients_known(patients) else None
    per_class, macro = _roc_aucs(onehot, prob, meta, cfg.bootstrap, seed, groups)
    report = {
        "examples": int(len(labels)),
        "roc_auc": per_class,
        "macro_roc_auc": macro,
        "accuracy": float(np.mean(decisions == onehot))
        if task == "multilabel"
        else float(np.mean(decisions.argmax(axis=1) == labels)),
        "operating_point": _operating_rates(onehot, prob, decisions, meta),
        "bootstrap_unit": "patient" if groups is not None else "image",
    }
    for name, p in (("ece_before", uncalibrated), ("ece_after", prob)):
        report[name], report[f"{name}_ci"] = _ece_interval(labels, p, meta, cfg, seed, groups)
    if task != "multilabel":
        report["confusion_matrix"] = (onehot.T.astype(int) @ decisions).tolist()
    return report


def _ece_interval(labels, prob, meta: Meta, cfg, seed: int, groups) -> tuple[float, list]:
    """The split's ECE and its bootstrap 95% interval [low, high]."""
    y, p = calibration_pairs(meta.task, labels, prob, meta.positive_index)
    per_row = prob.shape[1] if meta.task == "multilabel" else 1
    value, low, high = ece_interval(
        y, p, cfg.calibration_bins, cfg.bootstrap, seed, groups, per_row
    )
    return value, [low, high]


def _roc_aucs(onehot, prob, meta: Meta, bootstrap: int, seed: int, groups=None):
    """Per class (binary: the positive one) and macro ROC-AUC with bootstrap 95% intervals."""
    names, positive = meta.class_names, meta.positive_index
    columns = [positive] if meta.task == "binary" else list(range(len(names)))
    # Binary: the macro figure is the positive class's AUC, over that column alone.
    shown = prob[:, columns] if meta.task == "binary" else prob
    truth = onehot[:, columns] if meta.task == "binary" else onehot
    found = auc_intervals(truth, shown, range(len(columns)), bootstrap, seed, groups)
    per_class = {
        names[k]: {
            "value": found[i][0],
            "low": found[i][1],
            "high": found[i][2],
            "positives": int(onehot[:, k].sum()),
        }
        for i, k in enumerate(columns)
    }
    value, low, high = found["macro"]
    return per_class, {"value": value, "low": low, "high": high}


def _operating_rates(onehot, prob, decisions, meta: Meta) -> dict:
    """Sensitivity, specificity, PPV and NPV per thresholded class; for multi-class, the argmax
    decision of each class against the rest."""
    names = meta.class_names
    if meta.task == "multiclass":
        return {
            name: ev.sensitivity_specificity(onehot[:, k], decisions[:, k], 0.5)
            for k, name in enumerate(names)
        }
    return {
        name: ev.sensitivity_specificity(
            onehot[:, names.index(name)], prob[:, names.index(name)], t
        )
        for name, t in meta.operating_point.thresholds.items()
    }
