"""Vision plots: a labelled grid of images (for the most-confidently-wrong test images)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from shared.evaluation import save_figure  # noqa: E402


def plot_image_grid(images, titles: list[str], path: str | Path, title: str, columns: int = 8):
    """uint8 images (n, h, w, c) in a grid, each with its caption."""
    n = len(images)
    columns = min(columns, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, titles, strict=False):
        image = np.asarray(image)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9, y=1.0 + 0.12 / rows)
    return save_figure(fig, path)
