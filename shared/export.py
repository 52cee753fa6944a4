"""Load a run's Keras model safely, and export one as a TensorFlow SavedModel with one `serve`
signature."""

from pathlib import Path

import keras

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
