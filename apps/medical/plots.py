"""The evaluation plots of a medical run: ROC curves, the reliability diagram, the confusion
matrix, Grad-CAM grids of true positives, false positives and false negatives, and the
training history, in the run's plots/ folder."""

from pathlib import Path

import numpy as np

from apps.medical.data import Split
from apps.medical.metrics import AUC, calibration_pairs
from apps.medical.model import FEATURES, Meta, logits_model
from apps.medical.scorer import decide
from shared import evaluation as ev
from shared.gradcam import gradcam_heatmaps, plot_gradcam_grid
from shared.io import DataError
from shared.run import RunDir


def plot_evaluation(run: RunDir, test: Split, outputs, meta: Meta, report: dict, model, cfg):
    """Every plot of the test split from its (uncalibrated, calibrated) probabilities."""
    plots = run.subdir("plots")
    uncalibrated, prob = outputs
    names, task, positive = meta.class_names, meta.task, meta.positive_index
    onehot = test.labels if task == "multilabel" else np.eye(len(names))[test.labels]
    auc = report["test"]["roc_auc"]
    curves, points = {}, {}
    rates = report["test"]["operating_point"]
    for k in [positive] if task == "binary" else range(len(names)):
        interval = f"95% CI {auc[names[k]]['low']:.3f}-{auc[names[k]]['high']:.3f}"
        label = f"{names[k]} ({interval})"
        curves[label] = (onehot[:, k], prob[:, k])
        threshold = meta.operating_point.thresholds.get(names[k])
        if threshold is not None and names[k] in rates:  # thresholded classes: the shipped cut
            at = rates[names[k]]
            text = f"operating point p >= {threshold:.3f}\n(chosen on validation)"
            points[label] = (1 - at["specificity"], at["sensitivity"], text)
    ev.plot_roc(curves, plots / "roc.png", "ROC curve (test)", points)
    reliability = {
        "before temperature scaling": calibration_pairs(task, test.labels, uncalibrated, positive),
        f"after (T = {meta.temperature:.2f})": calibration_pairs(task, test.labels, prob, positive),
    }
    ev.plot_reliability(
        reliability, plots / "reliability.png", cfg.calibration_bins, "Reliability diagram (test)"
    )
    if "confusion_matrix" in report["test"]:
        ev.plot_confusion_matrix(
            report["test"]["confusion_matrix"],
            names,
            plots / "confusion_matrix.png",
            "Confusion matrix (test, at the operating point)",
        )
    plot_gradcam_groups(plots, test, prob, onehot, meta, model, cfg)
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy", AUC))


def plot_gradcam_groups(plots: Path, test: Split, prob, onehot, meta: Meta, model, cfg) -> None:
    """Grad-CAM of the focus class on a seeded draw of its true positives, false positives and
    false negatives at the operating point (`evaluate.gradcam_per_group` of each)."""
    names = meta.class_names
    focus = focus_class(meta, cfg.focus_class, onehot)
    decided = decide(prob, meta)[:, focus].astype(bool)
    threshold = meta.operating_point.thresholds.get(names[focus])
    cut = f", flagged at p >= {threshold:.4f}" if threshold is not None else ""
    truth = onehot[:, focus].astype(bool)
    groups = {
        "true positives": decided & truth,
        "false positives": decided & ~truth,
        "false negatives": ~decided & truth,
    }
    rng = np.random.default_rng(0)
    scores = logits_model(model)  # Grad-CAM of the logit: a saturated probability has no gradient
    for group, mask in groups.items():
        index = np.flatnonzero(mask)
        if not len(index) or not cfg.gradcam_per_group:
            continue
        chosen = np.sort(rng.choice(index, min(cfg.gradcam_per_group, len(index)), replace=False))
        images = test.images[chosen]
        heatmaps = gradcam_heatmaps(scores, images, np.full(len(chosen), focus), FEATURES)
        titles = [f"p({names[focus]}) {prob[i, focus]:.2f}" for i in chosen]
        plot_gradcam_grid(
            images,
            heatmaps,
            titles,
            plots / f"gradcam_{group.replace(' ', '_')}.png",
            f"Grad-CAM for '{names[focus]}': {group} (test{cut})",
        )


def focus_class(meta: Meta, name: str, onehot: np.ndarray) -> int:
    """The class Grad-CAM explains: `name`, else the positive class (binary), else the most
    common one."""
    names = meta.class_names
    if name:
        if name not in names:
            raise DataError(f"evaluate.focus_class {name!r} is not one of {names}")
        return names.index(name)
    if meta.task == "binary":
        return meta.positive_index
    return int(onehot.sum(axis=0).argmax())
