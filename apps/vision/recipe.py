"""The recipe baseline: a re-implementation of the keras-io "Simple MNIST convnet" example,
trained on the run's own split and input pipeline so the leaderboard puts the app's network
beside it (accuracy and training time from the same run).

As the example has it: 3x3 conv 32 (ReLU, valid padding), 2x2 max-pool, 3x3 conv 64, 2x2
max-pool, flatten, dropout 0.5, a softmax; Adam at Keras's default rate, batch 128, 15 epochs,
no augmentation, no early stopping. The example holds out 10% of train for validation; here
the run's validation split plays that part. Images are rescaled to [0, 1] and resized to
`data.image_size` inside the model, as the app's own network does.
"""

import time

import keras
import numpy as np

from apps.vision import data as vdata
from shared import evaluation as ev
from shared.io import read_json, write_json
from shared.run import RunDir

NAME = "recipe_mnist_convnet"  # its leaderboard row and file names in the run's baselines/
BATCH_SIZE = 128  # the example's


def build_recipe(n_classes: int, image_size, channels: int) -> keras.Model:
    """The keras-io Simple MNIST convnet on raw uint8 images (rescaled and resized inside)."""
    inputs = keras.Input(shape=(None, None, channels), dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Resizing(*image_size, antialias=True)(x)
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(0.5)(keras.layers.Flatten()(x))
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=NAME)


def _split_dataset(config, data: vdata.ImageData, split: str, shuffle: bool, labels=True):
    """The split through the app's own reader (in-memory arrays or decoded files)."""
    return vdata.make_dataset(
        data.splits[split],
        config.data.image_size,
        data.channels,
        BATCH_SIZE,
        shuffle,
        config.train.seed,
        config.data.cache,
        labels=labels,
    )


def fit_recipe(config, data: vdata.ImageData, run: RunDir) -> None:
    """Train the recipe on the run's train split (validation scored each epoch, as the
    example's `validation_split` is) and save it with its measured fit time in baselines/."""
    keras.utils.set_random_seed(config.train.seed)
    start = time.perf_counter()
    model = build_recipe(len(data.class_names), config.data.image_size, data.channels)
    model.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        _split_dataset(config, data, "train", True),
        epochs=config.baseline.recipe_epochs,
        validation_data=_split_dataset(config, data, "val", False),
        verbose=0,
    )
    seconds = time.perf_counter() - start
    folder = run.subdir("baselines")
    model.save(folder / f"{NAME}.keras")
    write_json(folder / f"{NAME}.json", {"name": NAME, "fit_seconds": round(seconds, 2)})
    print(
        f"train: baseline {NAME} (keras-io Simple MNIST convnet, "
        f"{config.baseline.recipe_epochs} epochs) fitted in {seconds:.1f}s",
        flush=True,
    )


def evaluate_recipe(run: RunDir, config, data: vdata.ImageData, top_k: int) -> dict | None:
    """The recipe's test and validation scores with its fit time; None when not fitted."""
    path = run.path / "baselines" / f"{NAME}.keras"
    if not path.exists():
        return None
    model = keras.saving.load_model(path, safe_mode=True)
    out = read_json(path.with_suffix(".json"))
    for split, key in (("test", "test"), ("val", "validation")):
        images = _split_dataset(config, data, split, False, labels=False)
        prob = np.asarray(model.predict(images, verbose=0))
        full = ev.classification_report(data.splits[split].labels, prob, data.class_names, top_k)
        out[key] = {k: v for k, v in full.items() if k not in ("per_class", "confusion_matrix")}
    return out
