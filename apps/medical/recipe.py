"""The recipe baseline: a plain 3-block CNN with class weights, as a practitioner would first
try on a small medical set, trained on the run's own split so the leaderboard puts the app's
network beside it (score and training time from the same run).

Three blocks of 3x3 conv (32, 64, 128 filters, ReLU) and a 2x2 max-pool, flatten, dropout 0.5,
a softmax (sigmoid for multi-label) classifier; Adam 1e-3, batch 64, early stopping on
validation loss (patience 5, best weights kept). No augmentation, no calibration.
"""

import time

import keras
import numpy as np

from apps.medical.metrics import AUC, auc_of, medmnist_accuracy
from shared import training
from shared.io import read_json, write_json
from shared.run import RunDir

NAME = "recipe_cnn3"  # its leaderboard row and file names in the run's baselines/
FILTERS = (32, 64, 128)


def build_recipe(n_outputs: int, image_size, channels: int, multilabel: bool) -> keras.Model:
    """The plain 3-block CNN on raw uint8 images (rescaled and resized inside)."""
    inputs = keras.Input(shape=(None, None, channels), dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Resizing(*image_size, antialias=True)(x)
    for filters in FILTERS:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dropout(0.5)(keras.layers.Flatten()(x))
    activation = "sigmoid" if multilabel else "softmax"
    outputs = keras.layers.Dense(n_outputs, activation=activation)(x)
    return keras.Model(inputs, outputs, name=NAME)


def fit_recipe(config, data, run: RunDir) -> None:
    """Train the recipe on the run's train split (validation for early stopping) and save it
    with its measured fit time in baselines/."""
    multilabel = data.task == "multilabel"
    train, val = data.splits["train"], data.splits["val"]
    keras.utils.set_random_seed(config.train.seed)
    start = time.perf_counter()
    model = build_recipe(len(data.class_names), config.data.image_size, data.channels, multilabel)
    loss = "binary_crossentropy" if multilabel else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(1e-3), loss)
    weights = None if multilabel else training.class_weights(train.labels, "balanced")
    model.fit(
        train.images,
        train.labels,
        batch_size=64,
        epochs=config.baseline.recipe_epochs,
        validation_data=(val.images, val.labels),
        class_weight=weights,
        callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    folder = run.subdir("baselines")
    model.save(folder / f"{NAME}.keras")
    write_json(folder / f"{NAME}.json", {"name": NAME, "fit_seconds": round(seconds, 2)})
    print(f"train: baseline {NAME} (plain 3-block CNN) fitted in {seconds:.1f}s", flush=True)


def evaluate_recipe(run: RunDir, data, task: str, positive: int | None) -> dict | None:
    """The recipe's test and validation scores with its fit time, None when not fitted."""
    path = run.path / "baselines" / f"{NAME}.keras"
    if not path.exists():
        return None
    model = keras.saving.load_model(path, safe_mode=True)
    out = read_json(path.with_suffix(".json"))
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        prob = np.asarray(model.predict(part.images, batch_size=256, verbose=0))
        out[key] = {
            AUC: auc_of(prob, part.labels, task, positive or 0),
            "accuracy": medmnist_accuracy(prob, part.labels, task),
        }
    return out
