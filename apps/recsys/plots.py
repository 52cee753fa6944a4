"""The recsys run's plots: rating errors per model and Recall@K curves (test split)."""

from pathlib import Path

import numpy as np

from shared import evaluation as ev


def plot_errors(y: np.ndarray, predictions: dict, path: Path) -> None:
    """Histogram of predicted minus true test ratings, one line per model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-4, 4, 81)
    for name, p in predictions.items():
        ax.hist(p - y, bins=bins, histtype="step", linewidth=1.5, label=name)
    ax.set(xlabel="predicted - true rating", ylabel="test ratings", title="Rating error (test)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ev.save_figure(fig, path)


def plot_recall(curves: dict, path: Path) -> None:
    """Mean Recall@K for K = 1..max, one line per retrieval model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set(xlabel="K", ylabel="Recall@K", title="Recall@K (test, known items excluded)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ev.save_figure(fig, path)
