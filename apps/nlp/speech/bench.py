"""Speech benchmarks, driven by `shared.bench`: feature extraction files/s (cold at 1 and 2
worker processes, and from the cache), training clips/s of the app's loop against a bare
`model.fit` on the same feature tensors, the input pipeline's own rate, scoring clips/s from
files (decode, check, features, predict, CSV) against a bare `model.predict` on pre-computed
features, and training at 1 and 2 local workers."""

import dataclasses
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from apps.nlp.speech import pipeline
from apps.nlp.speech.config import Config
from apps.nlp.speech.features import extract_files, feature_shape
from apps.nlp.speech.model import build_model
from shared import training
from shared.bench import input_rate, local_workers, workers_report
from shared.cli import StepOptions
from shared.config import load_config
from shared.input_pipeline import in_memory_dataset
from shared.run import RunDir

WORK = Path("runs/bench/speech")
TRAIN_EPOCHS = 4  # the first epoch (tracing) is left out of every throughput
TRIALS = 2  # interleaved trials of the pipeline and the bare fit


def run(measure, rows: int | None = None) -> dict:
    clips = rows or 1000
    setup = measure(__name__, "setup", {"clips": clips})
    cold = {n: measure(__name__, "features", {"workers": n, "cold": True}) for n in (1, 2)}
    warm = measure(__name__, "features", {"workers": 1, "cold": False})
    train = measure(__name__, "train", {})
    ours = measure(__name__, "score", {"folder": setup["folder"]})
    bare = measure(__name__, "predict", {"folder": setup["folder"]})
    workers = {n: measure(__name__, "workers", {"n": n}) for n in (1, 2)}
    return {
        "features": {
            "files": cold[1]["files"],
            "cold_1_worker_files_per_s": cold[1]["files_per_s"],
            "cold_2_workers_files_per_s": cold[2]["files_per_s"],
            "cached_files_per_s": warm["files_per_s"],
        },
        "training": {
            "clips": train["clips"],
            "pipeline_clips_per_s": train["ours"],
            "bare_fit_clips_per_s": train["bare"],
            "ratio": round(train["ours"] / train["bare"], 3),
            "target_ratio": 0.9,
            "input_pipeline_clips_per_s": train["input"],
            "input_bound": train["input"] < 1.5 * train["ours"],
            "peak_rss_mb": train["peak_rss_mb"],
        },
        "local_workers": workers_report(workers),
        "scoring": {
            "clips": ours["clips"],
            "files_to_csv_clips_per_s": ours["clips_per_s"],
            "bare_predict_on_features_clips_per_s": bare["clips_per_s"],
            "ratio": round(ours["clips_per_s"] / bare["clips_per_s"], 3),
            "note": "scoring decodes audio and computes librosa features; the bare predict "
            "starts from features already in memory",
            "peak_rss_mb": ours["peak_rss_mb"],
        },
    }


def measure(name: str, args: dict) -> dict:
    steps = {
        "setup": _setup,
        "features": _features,
        "train": _train,
        "score": _score,
        "predict": _predict,
        "workers": _workers,
    }
    return steps[name](**args)


def _config(**sets) -> Config:
    overrides = [f"run.root={WORK / 'runs'}", "run.run_id=bench", "train.epochs=2",
                 "train.verbose=0"]  # fmt: skip
    return load_config(
        Config, pipeline.DEFAULT_CONFIG, overrides + [f"{k}={v}" for k, v in sets.items()]
    )


def _setup(clips: int) -> dict:
    """Train a scoring model (2 epochs) and copy `clips` sample clips into a folder to score."""
    config = _config()
    if not (WORK / "runs" / "speech" / "bench" / "model.keras").exists():
        pipeline.train(config)
    folder = WORK / f"score_{clips}"
    if not folder.exists():
        sources = sorted(Path(config.data.path).glob("*.wav"))[:clips]
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for source in sources:
            shutil.copyfile(source, tmp / source.name)
        tmp.replace(folder)
    return {"folder": str(folder)}


def _features(workers: int, cold: bool) -> dict:
    """Files/s of feature extraction over the whole sample, into a fresh cache or a filled one."""
    config = _config()
    paths = sorted(str(p) for p in Path(config.data.path).glob("*.wav"))
    cache, checks = WORK / ("cache-cold" if cold else "cache-warm"), pipeline._checks(config)
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    else:
        extract_files(paths, pipeline.feature_params(config), checks, cache)
    start = time.perf_counter()
    params = pipeline.feature_params(config)
    _, _, stats = extract_files(paths, params, checks, cache, workers, min_parallel=0)
    seconds = time.perf_counter() - start
    return {"files": len(paths), "files_per_s": round(len(paths) / seconds, 1), **stats}


def _train() -> dict:
    """Clips/s of the app's training loop and of a bare fit on the same tensors, same model."""
    config = _config()
    data = pipeline.prepare(config)
    part, n_classes = data.splits["train"], len(data.class_names)
    y = np.eye(n_classes, dtype=np.float32)[part.y]
    cfg = dataclasses.replace(config.train, epochs=TRAIN_EPOCHS, patience=0)
    shape = feature_shape(pipeline.feature_params(config))
    mean, variance = part.x.mean(axis=(0, 1)), part.x.var(axis=(0, 1))

    def model():
        keras.utils.set_random_seed(0)
        built = build_model(config.model, config.augment, n_classes, shape, mean, variance)
        training.compile_model(built, cfg, len(part), "categorical_crossentropy")
        return built

    seconds = {"ours": [], "bare": []}
    for trial in range(TRIALS):  # interleaved, so a busy moment on a shared machine hits both
        run = RunDir(WORK / f"train-{trial}")
        shutil.rmtree(run.path, ignore_errors=True)
        run.path.mkdir(parents=True)
        ours, bare = training.EpochTimer(), training.EpochTimer()
        dataset = in_memory_dataset(part.x, y, cfg.batch_size, True, trial)
        callbacks = training.make_callbacks(run, cfg, "bench", "loss", "min")
        model().fit(dataset, epochs=TRAIN_EPOCHS, callbacks=[*callbacks, ours], shuffle=False,
                    verbose=0)  # fmt: skip
        model().fit(part.x, y, batch_size=cfg.batch_size, epochs=TRAIN_EPOCHS, callbacks=[bare],
                    verbose=0)  # fmt: skip
        seconds["ours"].append(ours.steady_epoch_s())
        seconds["bare"].append(bare.steady_epoch_s())
    per_s = {name: len(part) / float(np.min(times)) for name, times in seconds.items()}
    dataset = in_memory_dataset(part.x, y, cfg.batch_size, True, 0)
    return {"clips": len(part), "ours": round(per_s["ours"], 1), "bare": round(per_s["bare"], 1),
            "input": input_rate(dataset, len(part))}  # fmt: skip


def _score(folder: str) -> dict:
    config = _config()
    start = time.perf_counter()
    counts = pipeline.score(config, StepOptions(inputs=[folder], output=str(WORK / "scores.csv")))
    seconds = time.perf_counter() - start
    return {"clips": counts["files"], "clips_per_s": round(counts["files"] / seconds, 1)}


def _predict(folder: str) -> dict:
    """model.predict on the same clips' features already in memory (the ceiling for scoring)."""
    config = _config()
    model = pipeline.load_model(RunDir(WORK / "runs" / "speech" / "bench"))
    paths = sorted(str(p) for p in Path(folder).glob("*.wav"))
    params, checks = pipeline.feature_params(config), pipeline._checks(config)
    features, _, _ = extract_files(paths, params, checks, WORK / "cache-warm")
    x = np.stack([features[p] for p in paths])
    model.predict(x[: config.score.batch_size], verbose=0)  # trace once
    start = time.perf_counter()
    model.predict(x, batch_size=config.score.batch_size, verbose=0)
    return {"clips": len(x), "clips_per_s": round(len(x) / (time.perf_counter() - start), 1)}


def _workers(n: int) -> dict:
    """CNN training on the smoke sample with `n` local workers (the launcher)."""
    smoke = str(Path(pipeline.DEFAULT_CONFIG).with_name("smoke.yaml"))
    sets = ["train.epochs=3", "data.synth.speakers=12", "data.synth.repetitions=5"]
    return local_workers("speech", n, WORK / f"workers_{n}", sets, "cnn", config=smoke)
