"""Load a run's Keras model safely, and export one as a TensorFlow SavedModel with one `serve`
signature."""

from pathlib import Path

import keras
import numpy as np

from shared.io import DataError


def load_saved_model(path: str | Path) -> keras.Model:
    """A saved `.keras` model, loaded with safe mode on; a missing file is one clear error.

    The shared layers are registered here; an app imports its own custom layers (and KerasHub,
    for transfer models) before calling this.
    """
    import shared.layers  # noqa: F401  registers ResidualBlock and the Transformer layers

    if not Path(path).exists():
        raise DataError(f"{path}: no saved model; is this a finished training run?")
    return keras.saving.load_model(path, safe_mode=True)


def export_saved_model(model: keras.Model, path: str, input_spec, serve=None, track=()) -> None:
    """Write `model` to `path` as a SavedModel whose `serve` endpoint takes `input_spec`.

    By default the endpoint calls the model with training=False explicitly: Keras 3.15's
    `model.export` traced BatchNormalization in training mode in a model that also holds a
    Resizing layer, so the served predictions used batch statistics and differed from
    `model.predict`. `serve` replaces the endpoint function (for example to run a tokenizer
    first), and `track` lists further objects whose variables it uses.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    for item in track:
        archive.track(item)
    archive.add_endpoint(
        "serve", serve or (lambda inputs: model(inputs, training=False)), [input_spec]
    )
    archive.write_out(path, verbose=False)


def image_spec(channels: int) -> keras.InputSpec:
    """Raw uint8 images of any height and width: (batch, height, width, channels)."""
    return keras.InputSpec(shape=(None, None, None, channels), dtype="uint8")


def model_input_spec(model: keras.Model) -> keras.InputSpec:
    """The model's own input shape and dtype, any batch size (for fixed-size tensors)."""
    return keras.InputSpec(shape=(None, *model.input.shape[1:]), dtype=model.input.dtype)


def named_input_spec(model: keras.Model):
    """Each of the model's inputs (one, or a dict of them) by its own name, any batch size, so
    the `serve` signature's arguments are the input names (`user`, `item`, a column name)."""
    return keras.tree.map_structure(
        lambda x: keras.InputSpec(shape=(None, *x.shape[1:]), dtype=x.dtype, name=x.name),
        model.input,
    )


ENCODED_INPUT = "image_bytes"  # the argument of the `serve_bytes` signature


def export_image_model(
    model: keras.Model, path: str, image_size, metadata: dict | None = None
) -> None:
    """Write an image model as a SavedModel a scoring host can call without this project:

    - `serve`: uint8 images (batch, height, width, channels) of any size, as before;
    - `serve_bytes`: `image_bytes`, a (batch,) tf.string of encoded PNG, JPEG, BMP or GIF
      files, decoded to the model's channels and resized to `image_size` inside the graph
      (the model resizes to that size itself, so both signatures agree up to uint8 rounding);
    - `metadata`: no arguments; constants such as the class names and operating thresholds
      (`metadata` maps names to strings, numbers or lists of them).

    One undecodable element fails the whole `serve_bytes` call (TensorFlow decodes in-graph);
    a host that needs per-file rejects decodes itself and calls `serve`.
    """
    import tensorflow as tf

    channels = int(model.input.shape[-1])
    height, width = (int(v) for v in image_size)

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        image = tf.image.resize(image, (height, width), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    def serve_bytes(encoded):
        spec = tf.TensorSpec((height, width, channels), tf.uint8)
        images = tf.map_fn(decode, encoded, fn_output_signature=spec)
        return model(images, training=False)

    constants = {k: tf.constant(v) for k, v in (metadata or {}).items()}
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda inputs: model(inputs, training=False), [image_spec(channels)]
    )
    archive.add_endpoint(
        "serve_bytes", serve_bytes, [tf.TensorSpec((None,), tf.string, name=ENCODED_INPUT)]
    )
    archive.add_endpoint("metadata", lambda: constants, [])
    archive.write_out(path, verbose=False)


TFLITE_MODES = ("float16", "int8")  # post-training quantisation of `export_tflite`
SKIPPED_ON_EDGE = ("resize", "augment")  # layers that are identities on a fixed-size input


def edge_call(model: keras.Model, skip=SKIPPED_ON_EDGE):
    """The inference call of a functional model on a fixed-size input, with the named layers
    (the resize to the size the input already has, training-only augmentation) passed over and
    every other layer shared (same weights): TFLite has no antialiased resize kernel.

    Uses Keras's functional graph walk (`_run_through_graph`, the code `Functional.call`
    runs): `clone_model` cannot swap those layers for identities, it calls them with a mask.
    """

    def operation(op):
        if op.name in skip:
            return lambda x, *args, **kwargs: x
        return lambda *args, **kwargs: op(*args, **{**kwargs, "training": False})

    return lambda x: model._run_through_graph(x, operation_fn=operation)


def export_tflite(model: keras.Model, path, image_size, mode: str, representative=None) -> bytes:
    """`model` as a LiteRT (TFLite) flatbuffer at `path` taking uint8 (1, h, w, c) images of
    `image_size`: `float16` weights, or `int8` post-training quantisation calibrated on
    `representative` (uint8 images of `image_size`, from the training split) with float
    outputs. Returns the flatbuffer."""
    import tensorflow as tf

    from shared.io import atomic_path

    if mode not in TFLITE_MODES:
        raise ValueError(f"expected mode one of {TFLITE_MODES}. Received: mode={mode!r}")
    if mode == "int8" and (representative is None or not len(representative)):
        raise ValueError("int8 quantisation needs representative images from the train split")
    spec = tf.TensorSpec((1, *image_size, int(model.input.shape[-1])), tf.uint8)
    function = tf.function(edge_call(model)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    else:
        converter.representative_dataset = lambda: ([image[None]] for image in representative)
    flatbuffer = converter.convert()
    with atomic_path(Path(path), suffix=".tflite") as tmp:
        Path(tmp).write_bytes(flatbuffer)
    return flatbuffer


def tflite_predict(flatbuffer: bytes, images) -> np.ndarray:
    """Outputs of a `export_tflite` flatbuffer for uint8 images (n, h, w, c), one at a time."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    out = []
    for image in images:
        interpreter.set_tensor(source["index"], np.asarray(image[None], source["dtype"]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(out) if out else np.zeros((0, target["shape"][-1]), np.float32)


def resized_uint8(images, image_size) -> np.ndarray:
    """uint8 images at `image_size` (antialiased, as the models resize), for fixed-size inputs."""
    import tensorflow as tf

    images = np.asarray(images)
    if images.shape[1:3] == tuple(image_size):
        return images
    resized = tf.image.resize(images, tuple(image_size), antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def export_tflite_modes(
    model: keras.Model, folder, image_size, representative, test_images
) -> dict[str, dict]:
    """Both LiteRT files (`model-float16.tflite`, `model-int8.tflite`) in `folder`, and per mode
    its path, size in bytes and outputs on `test_images` (uint8 at `image_size`), beside the
    Keras model's own outputs on the same images (`keras`), for a parity check."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"keras": {"outputs": np.asarray(model.predict(test_images, verbose=0))}}
    for mode in TFLITE_MODES:
        path = folder / f"model-{mode}.tflite"
        flatbuffer = export_tflite(model, path, image_size, mode, representative)
        outputs = tflite_predict(flatbuffer, test_images)
        out[mode] = {"path": str(path), "bytes": len(flatbuffer), "outputs": outputs}
    return out
