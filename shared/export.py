"""Export a trained model as a TensorFlow SavedModel with one `serve` signature."""

import keras


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
