"""Grad-CAM (Selvaraju et al., 2017): where in an image a classifier looked for its answer.

The heatmap is the ReLU of the feature maps of one convolutional layer, weighted by the mean
gradient of the class score over each map, normalised to [0, 1].
"""

from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from shared.evaluation import save_figure  # noqa: E402


def last_conv_layer_name(model: keras.Model) -> str:
    """The last top-level layer whose output is a 4-D feature map (batch, height, width,
    channels)."""
    for layer in reversed(model.layers):
        output = getattr(layer, "output", None)
        if output is not None and len(output.shape) == 4:
            return layer.name
    raise ValueError(f"model {model.name!r} has no layer with a 4-D (image-like) output")


def gradcam_heatmaps(
    model: keras.Model, images, class_indices=None, layer_name: str | None = None
) -> np.ndarray:
    """Heatmaps (n, h, w) in [0, 1] at the feature-map resolution of `layer_name`.

    `images` are what the model takes (a batch of raw images of one size); `class_indices` are
    the classes to explain, one per image (default: the predicted class). The model's last output
    is taken as the class probabilities or logits.
    """
    layer_name = layer_name or last_conv_layer_name(model)
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.outputs[-1]])
    images = tf.convert_to_tensor(images)
    # Gradients need the backend's autodiff; Keras has no backend-neutral gradient op.
    with tf.GradientTape() as tape:
        features, scores = probe(images, training=False)
        if class_indices is None:
            class_indices = tf.argmax(scores, axis=-1)
        chosen = tf.gather(scores, tf.cast(class_indices, tf.int32), axis=1, batch_dims=1)
    grads = tape.gradient(chosen, features)
    weights = keras.ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = keras.ops.relu(keras.ops.sum(weights * features, axis=-1))
    top = keras.ops.max(cam, axis=(1, 2), keepdims=True)
    cam = keras.ops.where(top > 0, cam / keras.ops.maximum(top, 1e-12), 0.0)
    return keras.ops.convert_to_numpy(cam).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap, resized to the image and coloured (jet), blended over it: float RGB in
    [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.max() > 1.0:
        image = image / 255.0
    resized = tf.image.resize(heatmap[..., None], image.shape[:2], method="bilinear").numpy()
    colours = matplotlib.colormaps["jet"](np.clip(resized[..., 0], 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * colours, 0.0, 1.0)


def plot_gradcam_grid(
    images, heatmaps, titles: list[str], path: str | Path, title: str = "Grad-CAM"
) -> Path:
    """Each image above its Grad-CAM overlay, in columns, saved as one PNG."""
    n = len(images)
    if n == 0:
        raise ValueError("plot_gradcam_grid needs at least one image")
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.2), squeeze=False)
    for column, (image, heatmap, label) in enumerate(zip(images, heatmaps, titles, strict=True)):
        shown = np.asarray(image)
        axes[0, column].imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray")
        axes[0, column].set_title(label, fontsize=8)
        axes[1, column].imshow(overlay(shown, heatmap))
        for row in (0, 1):
            axes[row, column].axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
