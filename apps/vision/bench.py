"""Vision benchmarks: training images/s of the app's pipeline (PNG files -> tf.data -> fit with the
run callbacks) against a bare `model.fit` on in-memory tensors of the same model, and scoring
images/s from files (decode, check, predict, CSV). Driven by `shared.bench`."""

import shutil
import time
from pathlib import Path

import keras
import numpy as np

from apps.vision import data as vdata
from apps.vision import pipeline
from apps.vision.config import Config
from apps.vision.model import build_model
from shared import training
from shared.bench import input_rate, local_workers, workers_report
from shared.cli import StepOptions
from shared.config import load_config
from shared.run import RunDir

WORK = Path("runs/bench/vision")
TRAIN_EPOCHS = 5  # the first epoch (tracing, filling the cache) is left out of every throughput
TRIALS = 3  # interleaved trials of the pipeline and the bare fit
REPEAT = 8  # the digits' train split, 8 times over: ~10k images, epochs long enough to time


def run(measure, rows: int | None = None) -> dict:
    images = rows or 4000
    setup = measure(__name__, "setup", {"images": images})
    train = measure(__name__, "train", {})
    ours = measure(__name__, "score", {"folder": setup["folder"]})
    bare = measure(__name__, "predict", {"folder": setup["folder"]})
    workers = {n: measure(__name__, "workers", {"n": n}) for n in (1, 2)}
    return {
        "training": {
            "images": train["images"],
            "pipeline_images_per_s": train["ours"],
            "bare_fit_images_per_s": train["bare"],
            "ratio": round(train["ours"] / train["bare"], 3),
            "target_ratio": 0.9,
            "input_pipeline_images_per_s": train["input"],
            "input_bound": train["input"] < 1.5 * train["ours"],
            "peak_rss_mb": train["peak_rss_mb"],
        },
        "local_workers": workers_report(workers),
        "scoring": {
            "images": ours["images"],
            "files_to_csv_images_per_s": ours["images_per_s"],
            "bare_predict_in_memory_images_per_s": bare["images_per_s"],
            "ratio": round(ours["images_per_s"] / bare["images_per_s"], 3),
            "peak_rss_mb": ours["peak_rss_mb"],
        },
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


def _config(**sets) -> Config:
    overrides = [
        f"run.root={WORK / 'runs'}",
        "run.run_id=bench",
        "train.epochs=2",
        "train.verbose=0",
    ]
    return load_config(
        Config, pipeline.DEFAULT_CONFIG, overrides + [f"{k}={v}" for k, v in sets.items()]
    )


def _setup(images: int) -> dict:
    """Train a scoring model (2 epochs) and copy the digit PNGs into a folder of `images` files."""
    config = _config()
    if not (WORK / "runs" / "vision" / "bench" / "model.keras").exists():
        pipeline.train(config)
    folder = WORK / f"score_{images}"
    if not folder.exists():
        sources = sorted(Path(config.data.path).rglob("*.png"))
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(images):
            shutil.copyfile(sources[i % len(sources)], tmp / f"{i:06d}.png")
        tmp.replace(folder)
    return {"folder": str(folder)}


def _train() -> dict:
    """Images/s of the app's training loop and of a bare fit on tensors, same model and batch."""
    config = _config()
    data = pipeline.prepare(config)
    train = data.splits["train"]
    part = vdata.Split(np.tile(train.labels, REPEAT), paths=train.paths * REPEAT)
    cfg = config.train
    n_classes = len(data.class_names)

    def model():
        keras.utils.set_random_seed(0)
        built = build_model(config.model, config.augment, n_classes, config.data.image_size, 1)
        training.compile_model(built, cfg, len(part), "sparse_categorical_crossentropy")
        return built

    images = np.tile(
        vdata.split_images(train, range(len(train)), config.data.image_size, 1), (REPEAT, 1, 1, 1)
    )
    seconds = {"ours": [], "bare": []}
    for trial in range(TRIALS):  # interleaved, so a busy moment on a shared machine hits both
        run = RunDir(WORK / f"train-{trial}")
        shutil.rmtree(run.path, ignore_errors=True)
        ours, bare = training.EpochTimer(), training.EpochTimer()
        dataset = vdata.make_dataset(part, config.data.image_size, 1, cfg.batch_size, True, trial)
        callbacks = training.make_callbacks(run, cfg, "bench", "loss", "min")
        model().fit(dataset, epochs=TRAIN_EPOCHS, callbacks=[*callbacks, ours], shuffle=False,
                    verbose=0)  # fmt: skip
        model().fit(images, part.labels, batch_size=cfg.batch_size, epochs=TRAIN_EPOCHS,
                    callbacks=[bare], verbose=0)  # fmt: skip
        seconds["ours"].append(ours.steady_epoch_s())  # epoch 1 (tracing) left out
        seconds["bare"].append(bare.steady_epoch_s())
    per_s = {name: len(part) / float(np.median(times)) for name, times in seconds.items()}
    dataset = vdata.make_dataset(part, config.data.image_size, 1, cfg.batch_size, True, 0)
    return {
        "images": len(part),
        "ours": round(per_s["ours"], 1),
        "bare": round(per_s["bare"], 1),
        "input": input_rate(dataset, len(part)),
    }


def _score(folder: str) -> dict:
    config = _config()
    output = WORK / "scores.csv"
    start = time.perf_counter()
    counts = pipeline.score(config, StepOptions(inputs=[folder], output=str(output)))
    seconds = time.perf_counter() - start
    return {"images": counts["files"], "images_per_s": round(counts["files"] / seconds, 1)}


def _predict(folder: str) -> dict:
    """model.predict on the same images already decoded in memory (the ceiling for scoring)."""
    config = _config()
    model = pipeline.load_model(RunDir(WORK / "runs" / "vision" / "bench"))
    files = sorted(Path(folder).glob("*.png"))
    images = vdata.split_images(vdata.Split(np.zeros(len(files), np.int32), paths=[str(f) for f in files]),
                                range(len(files)), [8, 8], 1)  # fmt: skip
    model.predict(images[: config.score.batch_size], verbose=0)  # trace once
    start = time.perf_counter()
    model.predict(images, batch_size=config.score.batch_size, verbose=0)
    return {
        "images": len(files),
        "images_per_s": round(len(files) / (time.perf_counter() - start), 1),
    }
