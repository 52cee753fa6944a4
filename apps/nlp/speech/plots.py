"""Speech plots: feature inputs with their predictions, and accuracy per test speaker."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from shared.evaluation import save_figure  # noqa: E402


def plot_feature_grid(features: np.ndarray, titles: list[str], path, title: str):
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
    return save_figure(fig, path)


def plot_speaker_accuracy(per_speaker: dict, path):
    """One bar per test speaker (voices unseen in training when the split is by speaker)."""
    names = list(per_speaker)
    values = [per_speaker[s]["accuracy"] for s in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 3))
    ax.bar(names, values, color="tab:blue")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("Test accuracy per speaker")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    return save_figure(fig, path)
