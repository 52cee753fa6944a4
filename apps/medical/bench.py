"""Medical benchmarks, each against a bare Keras baseline measured in the same run: training
images/s of the app's loop (tf.data from memory, run callbacks) against `model.fit` on tensors,
the input pipeline alone, scoring images/s from PNG and DICOM files (read, window, check,
predict, CSV) against `model.predict` on arrays in memory, and training at 1 and 2 local
workers. Driven by `shared.bench`."""

import itertools
import shutil
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from apps.medical import pipeline
from apps.medical.config import Config
from apps.medical.dicom import write_dicom
from apps.medical.model import Meta, build_model, load_model
from apps.medical.scorer import MedicalScorer
from shared import training
from shared.bench import (
    bench_config,
    compare_fits,
    input_rate,
    local_workers,
    scoring_section,
    train_and_score,
    training_section,
    workers_report,
)
from shared.input_pipeline import in_memory_dataset
from shared.run import RunDir
from shared.steps import StepOptions

WORK = Path("runs/bench/medical")
TRAIN_EPOCHS = 4  # the first epoch (tracing) is left out of every throughput
TRIALS = 2  # interleaved trials of the pipeline and the bare fit


def run(measure, rows: int | None = None) -> dict:
    images = rows or 1000
    found = train_and_score(measure, __name__, {"images": images})
    train, ours, bare, workers = found["train"], found["ours"], found["bare"], found["workers"]
    return {
        "training": training_section(train, "images"),
        "scoring": scoring_section(ours, bare, "images", "files_to_csv", "bare_predict_in_memory"),
        "local_workers": workers_report(workers),
    }


def measure(name: str, args: dict) -> dict:
    handlers = {
        "setup": _setup,
        "train": _train,
        "score": _score,
        "predict": _predict,
        "workers": _workers,
    }
    return handlers[name](**args)


def _config() -> Config:
    return bench_config(Config, pipeline.DEFAULT_CONFIG, WORK)


def _setup(images: int) -> dict:
    """Train a scoring model (2 epochs); write `images` test images as PNG and DICOM files."""
    config = _config()
    if not (WORK / "runs" / "medical" / "bench" / "model.keras").exists():
        pipeline.train(config)
    folder = WORK / f"score_{images}"
    if not folder.exists():
        test = pipeline.prepare(config).splits["test"]
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(images):
            image = test.images[i % len(test)][..., 0]
            if i % 2:
                write_dicom(
                    tmp / f"{i:05d}.dcm",
                    np.round(image / 255 * 4000),
                    f"B{i}",
                    window=(2000.0, 4000.0),
                )
            else:
                Image.fromarray(image, mode="L").save(tmp / f"{i:05d}.png")
        tmp.replace(folder)
    return {"folder": str(folder)}


def _train() -> dict:
    """Images/s of the app's training loop and of a bare fit on tensors, same model and batch."""
    config = _config()
    data = pipeline.prepare(config)
    train = data.splits["train"]
    cfg, n = config.train, len(train)
    weights = training.class_weights(train.labels, config.model.class_weight)

    def model():
        keras.utils.set_random_seed(0)
        built = build_model(
            config.model,
            config.augment,
            len(data.class_names),
            config.data.image_size,
            data.channels,
        )
        training.compile_model(built, cfg, n, "sparse_categorical_crossentropy")
        return built

    seeds = itertools.count()  # each trial shuffles with its own seed: 0, 1, ...

    def fit_ours(run, timer):
        dataset = in_memory_dataset(train.images, train.labels, cfg.batch_size, True, next(seeds))
        callbacks = training.make_callbacks(run, cfg, "bench", "loss", "min")
        model().fit(
            dataset,
            epochs=TRAIN_EPOCHS,
            callbacks=[*callbacks, timer],
            shuffle=False,
            class_weight=weights,
            verbose=0,
        )

    def fit_bare(timer):
        model().fit(
            train.images,
            train.labels,
            batch_size=cfg.batch_size,
            epochs=TRAIN_EPOCHS,
            callbacks=[timer],
            class_weight=weights,
            verbose=0,
        )

    rates = compare_fits(fit_ours, fit_bare, n, TRIALS, WORK)
    dataset = in_memory_dataset(train.images, train.labels, cfg.batch_size, True, 0)
    return {"images": n, **rates, "input": round(input_rate(dataset, n), 1)}


def _score(folder: str) -> dict:
    config = _config()
    start = time.perf_counter()
    counts = pipeline.score(config, StepOptions(inputs=[folder], output=str(WORK / "scores.csv")))
    seconds = time.perf_counter() - start
    return {"images": counts["images"], "images_per_s": round(counts["images"] / seconds, 1)}


def _predict(folder: str) -> dict:
    """model.predict on the same images already decoded in memory (the ceiling for scoring)."""
    config = _config()
    run = RunDir(WORK / "runs" / "medical" / "bench")
    scorer = MedicalScorer(
        Meta.read(run), load_model(run), config.score.batch_size, config.score.max_image_pixels
    )
    files = sorted(Path(folder).iterdir())
    images = np.stack([scorer.read(str(f)) for f in files])
    scorer.model.predict(images[: config.score.batch_size], verbose=0)  # trace once
    start = time.perf_counter()
    scorer.model.predict(images, batch_size=config.score.batch_size, verbose=0)
    return {
        "images": len(files),
        "images_per_s": round(len(files) / (time.perf_counter() - start), 1),
    }


def _workers(n: int) -> dict:
    """Smoke-config training images/s with `n` local workers, and whether weights agree."""
    root = WORK / f"workers_{n}"
    sets = [f"data.path={root}/chest.npz", "train.epochs=3", "data.generated_images=600"]
    smoke = str(Path(pipeline.DEFAULT_CONFIG).with_name("smoke.yaml"))
    return local_workers("medical", n, root, sets, "cnn", config=smoke)
