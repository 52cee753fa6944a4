"""The text app's plots: a confusion matrix per network (single-label data) and the training
history of every network."""

from pathlib import Path

import numpy as np

from apps.nlp.text.model import Meta
from shared import evaluation as ev
from shared.run import RunDir


def write_plots(run: RunDir, meta: Meta, report: dict) -> Path:
    """plots/confusion_matrix.png (the run's model; multi-label data has none),
    confusion_matrix_<model>.png (the other networks and the blend) and history.png; the
    plots folder."""
    plots = run.subdir("plots")
    if not meta.multi_label:
        shown = report["networks"] | ({"blend": report["blend"]} if "blend" in report else {})
        for name, entry in shown.items():
            test = entry["test"]
            file = "confusion_matrix.png" if name == meta.best else f"confusion_matrix_{name}.png"
            ev.plot_confusion_matrix(
                np.array(test["confusion_matrix"]),
                meta.class_names,
                plots / file,
                f"{name}: confusion matrix (test, accuracy {test['accuracy']:.3f})",
            )
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    return plots
