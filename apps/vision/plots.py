"""Vision plots: the confusion matrix, the most-confidently-wrong test images, Grad-CAM on test
images and on chosen files, and the training curves."""

from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from apps.vision import data as vdata  # noqa: E402
from apps.vision.config import EvaluateConfig  # noqa: E402
from apps.vision.model import FEATURES, Meta  # noqa: E402
from shared import evaluation as ev  # noqa: E402
from shared.gradcam import gradcam_heatmaps, plot_gradcam_grid  # noqa: E402
from shared.images import ImageError, read_image  # noqa: E402
from shared.io import DataError  # noqa: E402
from shared.run import RunDir  # noqa: E402


def write_plots(
    run: RunDir,
    model: keras.Model,
    meta: Meta,
    test: vdata.Split,
    prob: np.ndarray,
    report: dict,
    cfg: EvaluateConfig,
) -> Path:
    """Every evaluation plot of the test split (`prob`: the model's probabilities on it) into
    the run's plots/ folder, which is returned."""
    plots = run.subdir("plots")
    names = meta.class_names
    ev.plot_confusion_matrix(
        np.array(report["test"]["confusion_matrix"]),
        names,
        plots / "confusion_matrix.png",
        f"Confusion matrix (test, accuracy {report['test']['accuracy']:.3f})",
    )
    plot_most_confidently_wrong(test, prob, meta, cfg.wrong_images, plots)
    plot_gradcam_test(model, test, prob.argmax(axis=1), meta, cfg.gradcam_images, plots)
    if cfg.gradcam_paths:
        plot_gradcam_files(model, cfg.gradcam_paths, meta, plots / "gradcam_files.png")
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    return plots


def plot_most_confidently_wrong(
    test: vdata.Split, prob: np.ndarray, meta: Meta, count: int, plots: Path
) -> None:
    """The `count` wrong test images the model was surest of (no plot when none is wrong)."""
    names = meta.class_names
    predicted, confidence = prob.argmax(axis=1), prob.max(axis=1)
    errors = np.flatnonzero(predicted != test.labels)
    wrong = errors[np.argsort(-confidence[errors])][:count]
    if not len(wrong):
        return
    plot_image_grid(
        vdata.split_images(test, wrong, meta.image_size, meta.channels),
        [
            f"true {names[test.labels[i]]}\npred {names[predicted[i]]} ({confidence[i]:.2f})"
            for i in wrong
        ],
        plots / "most_confidently_wrong.png",
        f"Most confidently wrong test images ({len(wrong)} of {len(errors)} errors)",
    )


def plot_gradcam_test(
    model: keras.Model,
    test: vdata.Split,
    predicted: np.ndarray,
    meta: Meta,
    count: int,
    plots: Path,
) -> None:
    """Grad-CAM of the predicted class on `count` test images spread over the split."""
    count = min(count, len(test))
    if not count:
        return
    names = meta.class_names
    chosen = np.linspace(0, len(test) - 1, count).astype(int)
    images = vdata.split_images(test, chosen, meta.image_size, meta.channels)
    heatmaps = gradcam_heatmaps(model, images, predicted[chosen], FEATURES)
    titles = [f"true {names[test.labels[i]]}\npred {names[predicted[i]]}" for i in chosen]
    plot_gradcam_grid(images, heatmaps, titles, plots / "gradcam.png", "Grad-CAM (test images)")


def plot_gradcam_files(model: keras.Model, paths: list[str], meta: Meta, target: Path) -> None:
    """Grad-CAM of the predicted class on image files named by `evaluate.gradcam_paths`."""
    images = []
    for path in paths:
        try:
            raw = read_image(path, meta.channels)
        except ImageError as exc:
            raise DataError(f"evaluate.gradcam_paths: {exc}") from exc
        images.append(
            keras.ops.convert_to_numpy(
                keras.layers.Resizing(*meta.image_size)(raw.astype("float32"))
            )
        )
    batch = np.clip(np.round(np.stack(images)), 0, 255).astype(np.uint8)
    prob = model.predict(batch, verbose=0)
    heatmaps = gradcam_heatmaps(model, batch, prob.argmax(axis=1), FEATURES)
    titles = [
        f"{Path(p).name}\npred {meta.class_names[k]}"
        for p, k in zip(paths, prob.argmax(axis=1), strict=True)
    ]
    plot_gradcam_grid(batch, heatmaps, titles, target, "Grad-CAM (chosen images)")


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
    return ev.save_figure(fig, path)
