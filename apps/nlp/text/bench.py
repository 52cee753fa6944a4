"""Text benchmarks: training texts/s of the app's pipeline (raw strings -> tf.data -> the model
with its TextVectorization, fit with the run callbacks) against a bare `model.fit` of the same
network on pre-vectorized token-id tensors, and scoring texts/s from a CSV file (read, check,
predict, write) against a bare `model.predict` on pre-vectorized tensors. Driven by `shared.bench`.
"""

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.nlp.text import pipeline
from apps.nlp.text.config import Config
from apps.nlp.text.data import make_dataset
from apps.nlp.text.model import BUILDERS, VECTORIZE, load_model, make_vectorizer
from shared import training
from shared.bench import (
    bench_config,
    compare_fits,
    input_rate,
    local_workers,
    scoring_section,
    time_scoring,
    train_and_score,
    train_once,
    training_section,
    workers_report,
)
from shared.run import RunDir

WORK = Path("runs/bench/nlp")
TRAIN_EPOCHS = 4  # the first epoch (tracing) is left out of every throughput
TRIALS = 2  # interleaved trials of the pipeline and the bare fit
NETWORK = "cnn"  # the default network; the blend is off so both sides run the same model
LOSS = "sparse_categorical_crossentropy"


def run(measure, rows: int | None = None) -> dict:
    texts = rows or 20000
    found = train_and_score(measure, __name__, {"rows": texts})
    train, ours, bare, workers = found["train"], found["ours"], found["bare"], found["workers"]
    return {
        "training": training_section(
            train, "texts", network=NETWORK, bare_fit_input="pre-vectorized token ids"
        ),
        "local_workers": workers_report(workers),
        "scoring": scoring_section(
            ours, bare, "texts", "csv_to_csv", "bare_predict_pre_vectorized"
        ),
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
    """Training with `n` local workers (the launcher), on the smoke config made larger."""
    sets = [
        "train.epochs=3",
        f"model.networks=[{NETWORK}]",
        "model.blend=false",
        "data.generated_rows=3000",
        "train.batch_size=64",
    ]
    smoke = str(pipeline.DEFAULT_CONFIG.with_name("smoke.yaml"))
    return local_workers("nlp", n, WORK / f"workers_{n}", sets, NETWORK, config=smoke)


def _config() -> Config:
    return bench_config(
        Config, pipeline.DEFAULT_CONFIG, WORK, f"model.networks=[{NETWORK}]", "model.blend=false"
    )


def _setup(rows: int) -> dict:
    """Train a scoring model (2 epochs) and write a CSV of `rows` texts to score."""
    config = _config()
    train_once(pipeline, config, "nlp", WORK)
    path = WORK / f"score_{rows}.csv"
    if not path.exists():
        texts = pd.read_csv(config.data.path)
        frame = texts.sample(rows, replace=True, random_state=0)[["text"]]
        frame.insert(0, "id", [f"b{i}" for i in range(rows)])
        frame.to_csv(path, index=False)
    return {"path": str(path)}


def _train() -> dict:
    """Texts/s of the app's training loop and of a bare fit on token ids, same network and batch."""
    config = _config()
    data = pipeline.prepare(config)
    part = data.splits["train"]
    cfg = config.train
    vectorizer = make_vectorizer(config.model, part.texts)
    ids = keras.ops.convert_to_numpy(vectorizer(np.array(part.texts)[:, None]))

    def model():
        keras.utils.set_random_seed(0)
        built = BUILDERS[NETWORK](config.model, vectorizer, len(data.class_names))
        training.compile_model(built, cfg, len(part), LOSS)
        return built

    def fit_ours(run: RunDir, timer) -> None:
        dataset = make_dataset(part, cfg.batch_size, True, cfg.seed, hub=False)
        callbacks = [*training.make_callbacks(run, cfg, "bench", "loss", "min"), timer]
        model().fit(dataset, epochs=TRAIN_EPOCHS, callbacks=callbacks, shuffle=False, verbose=0)

    def fit_bare(timer) -> None:
        full = model()
        # The embedding's input, not the vectorizer's output: the vectorizer is shared by every
        # model built here, so its output names the first model's graph.
        core = keras.Model(full.get_layer("embedding").input, full.output)
        training.compile_model(core, cfg, len(part), LOSS)
        core.fit(
            ids,
            part.labels,
            batch_size=cfg.batch_size,
            epochs=TRAIN_EPOCHS,
            callbacks=[timer],
            verbose=0,
        )

    rates = compare_fits(fit_ours, fit_bare, len(part), TRIALS, WORK)
    dataset = make_dataset(part, cfg.batch_size, True, 0, hub=False)
    return {"texts": len(part), **rates, "input": input_rate(dataset, len(part))}


def _score(path: str) -> dict:
    return time_scoring(pipeline, _config(), [path], WORK / "scores.csv", "texts", "rows")


def _predict(path: str) -> dict:
    """model.predict of the network on the same texts already vectorized (the scoring ceiling)."""
    config = _config()
    model = load_model(RunDir(WORK / "runs" / "nlp" / "bench"))
    texts = pd.read_csv(path).text.tolist()
    ids = keras.ops.convert_to_numpy(model.get_layer(VECTORIZE)(np.array(texts)[:, None]))
    core = keras.Model(model.get_layer("embedding").input, model.output)
    core.predict(ids[: config.score.batch_size], verbose=0)  # trace once
    start = time.perf_counter()
    core.predict(ids, batch_size=config.score.batch_size, verbose=0)
    return {
        "texts": len(texts),
        "texts_per_s": round(len(texts) / (time.perf_counter() - start), 1),
    }
