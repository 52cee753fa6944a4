"""Speech plots: the confusion matrix, accuracy per test speaker, test inputs with their
predictions and the training history, all written by `evaluate` into the run's plots/."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from apps.nlp.speech.data import Split  # noqa: E402
from apps.nlp.speech.model import Meta  # noqa: E402
from shared import evaluation as ev  # noqa: E402
from shared.run import RunDir  # noqa: E402


def plot_run(run: RunDir, example_inputs: int, meta: Meta, report: dict, test: Split, prob):
    """Every plot of an evaluated run; returns the plots folder."""
    names, per_speaker = meta.class_names, report["test"]["per_speaker"]
    plots = run.subdir("plots")
    accuracy = report["test"]["accuracy"]
    ev.plot_confusion_matrix(
        np.array(report["test"]["confusion_matrix"]),
        names,
        plots / "confusion_matrix.png",
        f"Confusion matrix (test, accuracy {accuracy:.3f})",
    )
    if per_speaker:
        plot_speaker_accuracy(per_speaker, plots / "per_speaker_accuracy.png")
    count = min(example_inputs, len(test))
    if count:
        predicted = prob.argmax(axis=1)
        chosen = example_picks(predicted, test.y, count)
        titles = [
            f"true {names[test.y[i]]} / pred {names[predicted[i]]} ({prob[i].max():.2f})"
            for i in chosen
        ]
        title = f"Test inputs ({meta.features['kind']}) with their predictions"
        plot_feature_grid(test.x[chosen], titles, plots / "examples.png", title)
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    return plots


def example_picks(predicted: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """`count` distinct test clips to plot: up to half wrong predictions, correct ones for the
    rest (more wrong ones when too few are correct), each kind spread over the split."""
    wrong, right = np.flatnonzero(predicted != y), np.flatnonzero(predicted == y)
    n_right = min(len(right), count - min(len(wrong), count // 2))
    n_wrong = min(len(wrong), count - n_right)
    return np.concatenate([_spread(wrong, n_wrong), _spread(right, n_right)])


def _spread(index: np.ndarray, n: int) -> np.ndarray:
    """n of `index`, evenly spaced (distinct, as n <= len(index))."""
    return index[np.linspace(0, len(index) - 1, n).astype(int)] if n else index[:0]


def plot_feature_grid(features: np.ndarray, titles: list[str], path: Path, title: str):
    """Each clip's (frames, bins) features as an image: time across, frequency up."""
    n = len(features)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, features, titles, strict=False):
        ax.imshow(image.T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(text, fontsize=8)
    fig.suptitle(title)
    return ev.save_figure(fig, path)


def plot_speaker_accuracy(per_speaker: dict, path: Path):
    """One bar per test speaker (voices unseen in training when the split is by speaker), each
    labelled with its accuracy and clip count, so a speaker at 0 reads as 0, not as a gap."""
    names = list(per_speaker)
    values = [per_speaker[s]["accuracy"] for s in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 3))
    bars = ax.bar(names, values, color="tab:blue")
    labels = [f"{per_speaker[s]['accuracy']:.2f} ({per_speaker[s]['clips']})" for s in names]
    ax.bar_label(bars, labels=labels, rotation=90, padding=2, fontsize=6)
    ax.set_ylim(0, 1.25)  # room above a full bar for its label
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("accuracy")
    ax.set_title("Test accuracy per speaker")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    return ev.save_figure(fig, path)
