"""Recsys benchmarks, driven by `shared.bench`: MF training examples/s against a bare Keras
`model.fit`, and top-10 recommendations for every user per second against a bare NumPy matrix
product + argpartition over the same embeddings."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.recsys import pipeline
from apps.recsys.config import Config
from apps.recsys.data import id_arrays
from apps.recsys.model import build_mf
from apps.recsys.scorer import Recommender
from shared import training
from shared.bench import (
    bench_config,
    compare_fits,
    input_rate,
    local_workers,
    scoring_section,
    train_once,
    training_section,
    workers_report,
)
from shared.input_pipeline import in_memory_dataset
from shared.run import RunDir

WORK = Path("runs/bench/recsys")
TRAIN_EPOCHS = 5  # the first epoch (tracing) is left out of every throughput
TRIALS = 3  # interleaved trials of the pipeline and the bare baseline


def run(measure, rows: int | None = None) -> dict:
    train = measure(__name__, "train", {})
    recommend = measure(__name__, "recommend", {})
    workers = {n: measure(__name__, "workers", {"n": n}) for n in (1, 2)}
    return {
        "training": training_section(train, "examples"),
        "local_workers": workers_report(workers),
        "recommend_top10_all_users": scoring_section(
            recommend,
            {"users_per_s": recommend["bare_users_per_s"]},
            "users",
            "pipeline",
            "bare_numpy",
            items=recommend["items"],
            note="the pipeline also drops each user's known items and looks up titles",
        ),
    }


def measure(name: str, args: dict) -> dict:
    return {"train": _train, "recommend": _recommend, "workers": _workers}[name](**args)


def _workers(n: int) -> dict:
    """MF training with `n` local workers (the launcher); every network's weights compared."""
    sets = ["train.epochs=3", "model.retrieval_epochs=1"]
    return local_workers("recsys", n, WORK / f"workers_{n}", sets, "mf")


def _train() -> dict:
    """Examples/s of the app's MF training loop (tf.data + callbacks) and of a bare fit."""
    config = bench_config(Config, pipeline.DEFAULT_CONFIG, WORK)
    prepared = pipeline.prepare(config)
    rows = prepared.frame[prepared.frame.rating_split == "train"]
    users, items = sorted(rows["user"].unique()), sorted(rows["item"].unique())
    x, y = id_arrays(rows), rows["rating"].to_numpy(np.float32)
    cfg = dataclasses.replace(config.train, epochs=TRAIN_EPOCHS, patience=0)

    def compiled(steps_per_execution):
        keras.utils.set_random_seed(0)
        model = build_mf(users, items, config.model, float(y.mean()))
        steps = training.steps_per_epoch(len(y), cfg.batch_size)
        model.compile(
            optimizer=training.make_optimizer(cfg, steps),
            loss="mean_squared_error",
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
            steps_per_execution=steps_per_execution,
        )
        return model

    def fit_bare(timer):
        # Keras's own adapter for the arrays (strings as tensors: NumPy str arrays are refused).
        tensors = {k: tf.constant(v) for k, v in x.items()}
        compiled(1).fit(
            tensors, y, batch_size=cfg.batch_size, epochs=TRAIN_EPOCHS, callbacks=[timer], verbose=0
        )

    def fit_ours(run, timer):
        callbacks = training.make_callbacks(run, cfg, "mf", "loss", "min") + [timer]
        compiled(cfg.steps_per_execution).fit(
            in_memory_dataset(x, y, cfg.batch_size, True, 0),
            epochs=TRAIN_EPOCHS,
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        )

    rates = compare_fits(fit_ours, fit_bare, len(y), TRIALS, WORK)
    dataset = in_memory_dataset(x, y, cfg.batch_size, True, 0)
    return {"examples": len(y), **rates, "input": input_rate(dataset, len(y))}


def _recommend() -> dict:
    """Users/s for top-10 of every user: the Recommender (saved retrieval model, known-item
    exclusion) against NumPy on the same user and item embeddings."""
    config = bench_config(Config, pipeline.DEFAULT_CONFIG, WORK, "model.retrieval_epochs=2")
    train_once(pipeline, config, "recsys", WORK)
    recommender = Recommender(RunDir(WORK / "runs" / "recsys" / "bench"))
    users = sorted(recommender.users_)
    model = recommender.model
    queries = np.asarray(model.get_layer("user_tower").predict(tf.constant(users), verbose=0))
    candidates = np.asarray(model.get_layer("index").candidate_embeddings)

    def bare():
        scores = queries @ candidates.T
        part = np.argpartition(-scores, 9, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1)

    best = {"bare": float("inf"), "ours": float("inf")}
    for _ in range(TRIALS):
        for name, fn in (("bare", bare), ("ours", lambda: recommender.recommend(users, 10))):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {
        "users": len(users),
        "items": int(candidates.shape[0]),
        "users_per_s": round(len(users) / best["ours"]),
        "bare_users_per_s": round(len(users) / best["bare"]),
    }
