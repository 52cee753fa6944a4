"""Vision benchmarks: training images/s of the app's pipeline (PNG files -> tf.data -> fit with the
run callbacks) against a bare `model.fit` on in-memory tensors of the same model, and scoring
images/s from files (decode, check, predict, CSV). Driven by `shared.bench`."""

import itertools
import time
from pathlib import Path

import keras
import numpy as np

from apps.vision import data as vdata
from apps.vision import pipeline
from apps.vision.config import Config
from apps.vision.model import build_model, load_model
from shared import training
from shared.bench import (
    bench_config,
    compare_fits,
    input_rate,
    local_workers,
    sample_folder,
    scoring_section,
    time_scoring,
    train_and_score,
    train_once,
    training_section,
    workers_report,
)
from shared.run import RunDir

WORK = Path("runs/bench/vision")
TRAIN_EPOCHS = 5  # the first epoch (tracing, filling the cache) is left out of every throughput
TRIALS = 3  # interleaved trials of the pipeline and the bare fit
REPEAT = 8  # the digits' train split, 8 times over: ~10k images, epochs long enough to time


def run(measure, rows: int | None = None) -> dict:
    images = rows or 4000
    found = train_and_score(measure, __name__, {"images": images})
    train, ours, bare, workers = found["train"], found["ours"], found["bare"], found["workers"]
    return {
        "training": training_section(train, "images"),
        "local_workers": workers_report(workers),
        "scoring": scoring_section(ours, bare, "images", "files_to_csv", "bare_predict_in_memory"),
    }


def measure(name: str, args: dict) -> dict:
    steps = {
        "setup": _setup,
        "train": _train,
        "score": _score,
        "predict": _predict,
        "workers": _workers,
    }
    return steps[name](**args)


def _workers(n: int) -> dict:
    """CNN training with `n` local workers (the launcher)."""
    return local_workers("vision", n, WORK / f"workers_{n}", ["train.epochs=3"], "cnn")


def _config() -> Config:
    return bench_config(Config, pipeline.DEFAULT_CONFIG, WORK)


def _setup(images: int) -> dict:
    """Train a scoring model (2 epochs) and copy the digit PNGs into a folder of `images` files."""
    config = _config()
    train_once(pipeline, config, "vision", WORK)
    sources = sorted(Path(config.data.path).rglob("*.png"))
    folder = sample_folder(sources, WORK / f"score_{images}", images, ".png")
    return {"folder": str(folder)}


def _train() -> dict:
    """Images/s of the app's training loop and of a bare fit on tensors, same model and batch."""
    config = _config()
    data = pipeline.prepare(config)
    train = data.splits["train"]
    part = vdata.Split(np.tile(train.labels, REPEAT), paths=train.paths * REPEAT)
    cfg, size = config.train, config.data.image_size
    n_classes = len(data.class_names)

    def model():
        keras.utils.set_random_seed(0)
        built = build_model(config.model, config.augment, n_classes, size, 1)
        training.compile_model(built, cfg, len(part), "sparse_categorical_crossentropy")
        return built

    images = np.tile(vdata.split_images(train, range(len(train)), size, 1), (REPEAT, 1, 1, 1))
    seeds = itertools.count()  # each trial shuffles with its own seed

    def fit_ours(run: RunDir, timer) -> None:
        dataset = vdata.make_dataset(part, size, 1, cfg.batch_size, True, next(seeds))
        callbacks = training.make_callbacks(run, cfg, "bench", "loss", "min")
        model().fit(
            dataset, epochs=TRAIN_EPOCHS, callbacks=[*callbacks, timer], shuffle=False, verbose=0
        )

    def fit_bare(timer) -> None:
        model().fit(
            images,
            part.labels,
            batch_size=cfg.batch_size,
            epochs=TRAIN_EPOCHS,
            callbacks=[timer],
            verbose=0,
        )

    rates = compare_fits(fit_ours, fit_bare, len(part), TRIALS, WORK)
    dataset = vdata.make_dataset(part, size, 1, cfg.batch_size, True, 0)
    return {"images": len(part), **rates, "input": input_rate(dataset, len(part))}


def _score(folder: str) -> dict:
    return time_scoring(pipeline, _config(), [folder], WORK / "scores.csv", "images")


def _predict(folder: str) -> dict:
    """model.predict on the same images already decoded in memory (the ceiling for scoring)."""
    config = _config()
    model = load_model(RunDir(WORK / "runs" / "vision" / "bench"))
    files = sorted(Path(folder).glob("*.png"))
    split = vdata.Split(np.zeros(len(files), np.int32), paths=[str(f) for f in files])
    images = vdata.split_images(split, range(len(files)), [8, 8], 1)
    model.predict(images[: config.score.batch_size], verbose=0)  # trace once
    start = time.perf_counter()
    model.predict(images, batch_size=config.score.batch_size, verbose=0)
    return {
        "images": len(files),
        "images_per_s": round(len(files) / (time.perf_counter() - start), 1),
    }
