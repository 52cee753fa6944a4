"""Recsys benchmarks, driven by `shared.bench`: MF training examples/s against a bare Keras
`model.fit`, and top-10 recommendations for every user per second against a bare NumPy matrix
product + argpartition over the same embeddings."""

import dataclasses
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.recsys import pipeline
from apps.recsys.config import Config
from apps.recsys.model import build_mf
from shared import training
from shared.bench import input_rate, local_workers, workers_report
from shared.config import load_config
from shared.input_pipeline import in_memory_dataset
from shared.run import RunDir

WORK = Path("runs/bench/recsys")
TRAIN_EPOCHS = 5  # the first epoch (tracing) is left out of every throughput
TRIALS = 3  # interleaved trials of the pipeline and the bare fit; the best of each is kept


def run(measure, rows: int | None = None) -> dict:
    train = measure(__name__, "train", {})
    recommend = measure(__name__, "recommend", {})
    workers = {n: measure(__name__, "workers", {"n": n}) for n in (1, 2)}
    return {
        "training": {
            "examples": train["examples"],
            "pipeline_examples_per_s": train["ours"],
            "bare_fit_examples_per_s": train["bare"],
            "ratio": round(train["ours"] / train["bare"], 3),
            "input_pipeline_examples_per_s": train["input"],
            "input_bound": train["input"] < 1.5 * train["ours"],
            "peak_rss_mb": train["peak_rss_mb"],
        },
        "local_workers": workers_report(workers),
        "recommend_top10_all_users": {
            "users": recommend["users"],
            "items": recommend["items"],
            "pipeline_users_per_s": recommend["ours"],
            "bare_numpy_users_per_s": recommend["bare"],
            "ratio": round(recommend["ours"] / recommend["bare"], 3),
            "note": "the pipeline also drops each user's known items and looks up titles",
            "peak_rss_mb": recommend["peak_rss_mb"],
        },
    }


def measure(name: str, args: dict) -> dict:
    return {"train": _train, "recommend": _recommend, "workers": _workers}[name](**args)


def _workers(n: int) -> dict:
    """MF training with `n` local workers (the launcher); every network's weights compared."""
    sets = ["train.epochs=3", "model.retrieval_epochs=1"]
    return local_workers("recsys", n, WORK / f"workers_{n}", sets, "mf")


def _config(**sets) -> Config:
    overrides = [f"run.root={WORK / 'runs'}", "run.run_id=bench", "train.verbose=0"]
    return load_config(
        Config, pipeline.DEFAULT_CONFIG, overrides + [f"{k}={v}" for k, v in sets.items()]
    )


def _train() -> dict:
    """Examples/s of the app's MF training loop (tf.data + callbacks) and of a bare fit."""
    config = _config()
    prepared = pipeline.prepare(config)
    rows = prepared.frame[prepared.frame.rating_split == "train"]
    users, items = sorted(rows["user"].unique()), sorted(rows["item"].unique())
    x = pipeline._id_arrays(rows)
    y = rows["rating"].to_numpy(np.float32)
    cfg = dataclasses.replace(config.train, epochs=TRAIN_EPOCHS, patience=0)

    def compiled(steps_per_execution):
        keras.utils.set_random_seed(0)
        model = build_mf(users, items, config.model, float(y.mean()))
        model.compile(
            optimizer=training.make_optimizer(
                cfg, training.steps_per_epoch(len(y), cfg.batch_size)
            ),
            loss="mean_squared_error",
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
            steps_per_execution=steps_per_execution,
        )
        return model

    def bare(timer, trial):
        # Keras's own adapter for the arrays (strings as tensors: NumPy str arrays are refused).
        tensors = {k: tf.constant(v) for k, v in x.items()}
        compiled(1).fit(
            tensors, y, batch_size=cfg.batch_size, epochs=TRAIN_EPOCHS, callbacks=[timer], verbose=0
        )

    def ours(timer, trial):
        run = RunDir(WORK / f"train_run_{trial}")
        shutil.rmtree(run.path, ignore_errors=True)
        run.path.mkdir(parents=True)
        callbacks = training.make_callbacks(run, cfg, "mf", "loss", "min") + [timer]
        compiled(cfg.steps_per_execution).fit(
            in_memory_dataset(x, y, cfg.batch_size, True, 0),
            epochs=TRAIN_EPOCHS,
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        )

    rates = {"bare": [], "ours": []}
    for trial in range(TRIALS):
        for name, fit in (("bare", bare), ("ours", ours)):
            timer = training.EpochTimer()
            fit(timer, trial)
            rates[name].append(len(y) / timer.steady_epoch_s())
    return {
        "examples": len(y),
        **{name: round(max(v)) for name, v in rates.items()},
        "input": input_rate(in_memory_dataset(x, y, cfg.batch_size, True, 0), len(y)),
    }


def _recommend() -> dict:
    """Users/s for top-10 of every user: the Recommender (saved retrieval model, known-item
    exclusion) against NumPy on the same user and item embeddings."""
    config = _config(**{"train.epochs": 2, "model.retrieval_epochs": 2})
    run_path = WORK / "runs" / "recsys" / "bench"
    if not (run_path / "FINISHED").exists():
        pipeline.train(config)
    run = RunDir(run_path)
    recommender = pipeline.Recommender(run)
    users = sorted(recommender.users_)
    model = recommender.model
    queries = np.asarray(model.get_layer("user_tower").predict(tf.constant(users), verbose=0))
    candidates = np.asarray(model.get_layer("index").candidate_embeddings)

    def bare():
        scores = queries @ candidates.T
        part = np.argpartition(-scores, 9, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1)

    def ours():
        return recommender.recommend(users, 10)

    best = {"bare": float("inf"), "ours": float("inf")}
    for _ in range(TRIALS):
        for name, fn in (("bare", bare), ("ours", ours)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {
        "users": len(users),
        "items": int(candidates.shape[0]),
        **{name: round(len(users) / seconds) for name, seconds in best.items()},
    }
