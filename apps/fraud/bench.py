"""Fraud benchmarks: training rows/s against a bare `model.fit`, and scoring rows/s (CSV in, CSV
out) against a bare `model.predict` on in-memory arrays. Driven by `shared.bench`."""

import dataclasses
import os
import shutil
import time
from pathlib import Path

import keras
import pandas as pd

from apps.fraud import pipeline
from apps.fraud.config import Config
from apps.fraud.data import model_inputs
from apps.fraud.model import Meta, build_classifier
from apps.fraud.sample import SimulatorConfig, simulate_transactions
from apps.fraud.scorer import TransactionScorer
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
from shared.config import load_config
from shared.input_pipeline import in_memory_dataset
from shared.run import RunDir
from shared.scoring import predict_in_batches
from shared.steps import StepOptions

WORK = Path("runs/bench/fraud")
RUN = WORK / "runs" / "fraud" / "bench"  # the run `_setup` trains and the scoring benchmarks use
TRAIN_EPOCHS = 5  # the first epoch (tracing) is left out of every throughput
TRIALS = 3  # interleaved trials of the pipeline and the bare fits
DEFAULT_ROWS = 30_000  # the size for "default training under 3 minutes on 2 cores"
DEFAULT_TARGET_S = 180.0


def run(measure, rows: int | None = None) -> dict:
    rows = rows or 1_000_000
    found = train_and_score(measure, __name__, {"rows": rows})
    train, ours, bare, workers = found["train"], found["ours"], found["bare"], found["workers"]
    default = measure(__name__, "default", {"rows": DEFAULT_ROWS})
    return {
        "default_training": default,
        "training": training_section(
            train,
            "rows",
            steps_per_execution=train["steps_per_execution"],
            bare_fit_same_compile_rows_per_s=train["bare_same_compile"],
            ratio_same_compile=train["ratio_same_compile"],
        ),
        "local_workers": workers_report(workers),
        "scoring": scoring_section(
            ours,
            bare,
            "rows",
            "csv_to_csv",
            "bare_predict",
            target_ratio=0.5,
            bare_peak_rss_mb=bare["peak_rss_mb"],
        ),
    }


def measure(name: str, args: dict) -> dict:
    steps = {
        "setup": _setup,
        "train": _train,
        "score": _score,
        "predict": _predict,
        "workers": _workers,
        "default": _default_training,
    }
    return steps[name](**args)


def _config():
    return bench_config(Config, pipeline.DEFAULT_CONFIG, WORK, "model.autoencoder_epochs=1")


def _workers(n: int) -> dict:
    """Network training with `n` local workers (the launcher)."""
    sets = ["train.epochs=3", "model.autoencoder_epochs=1"]
    return local_workers("fraud", n, WORK / f"workers_{n}", sets, "network")


def _default_training(rows: int) -> dict:
    """The whole default `train` step (network, autoencoder, every baseline, the blend, the
    export) on about `rows` simulated transactions, in seconds and as a ratio to the
    gradient-boosting fit inside it (the machine's speed cancels out of the ratio)."""
    per_customer = 60 * 1.7  # rows per customer over 60 days, roughly
    config = load_config(
        Config,
        pipeline.DEFAULT_CONFIG,
        [
            f"run.root={WORK / 'default' / 'runs'}",
            "run.run_id=default",
            "train.verbose=0",
            f"data.path={WORK / 'default' / 'transactions.parquet'}",
            f"data.simulator.n_customers={max(10, round(rows / per_customer))}",
        ],
    )
    shutil.rmtree(WORK / "default" / "runs", ignore_errors=True)
    start = time.perf_counter()
    run = pipeline.train(config)
    seconds = time.perf_counter() - start
    meta = Meta.read(run)
    boosting = meta.baseline_seconds["hist_gradient_boosting"]
    frame = pd.read_parquet(Path(meta.prepared) / "frame.parquet")
    return {
        "rows": len(frame),
        "train_step_seconds": round(seconds, 1),
        "hist_gradient_boosting_fit_seconds": boosting,
        "ratio_to_hist_gradient_boosting": round(seconds / max(boosting, 1e-9), 1),
        "target_seconds": DEFAULT_TARGET_S,
        "meets_target": seconds < DEFAULT_TARGET_S,
        "cpu_count": os.cpu_count(),
    }


def _setup(rows: int) -> dict:
    """Train a model on the default sample (2 epochs) and write a `rows`-row CSV to score."""
    if not (RUN / "model.keras").exists():
        pipeline.train(_config())
    csv = WORK / f"score_{rows}.csv"
    if not csv.exists():
        per_customer = 60 * 1.7  # rows per customer over 60 days, roughly
        frame = simulate_transactions(
            SimulatorConfig(n_customers=max(10, int(rows / per_customer)), days=60, seed=7)
        )
        frame = frame.iloc[:rows]
        csv.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(csv, index=False)
    return {"csv": str(csv)}


def _train() -> dict:
    """Rows/s of the app's training loop (tf.data + callbacks) beside a bare model.fit, with
    Keras's default steps_per_execution and with the app's."""
    config = _config()
    data = pipeline.training_data(config, pipeline.prepare(config))
    x, y = data.features["train"], data.labels["train"]
    cfg = dataclasses.replace(config.train, epochs=TRAIN_EPOCHS, patience=0, verbose=0)
    weights = training.class_weights(y, config.model.class_weight)

    def compiled(steps_per_execution):
        keras.utils.set_random_seed(0)
        model = build_classifier(len(data.numeric), data.vocabularies, config.model)
        model.compile(
            optimizer=training.make_optimizer(
                cfg, training.steps_per_epoch(len(y), cfg.batch_size)
            ),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(curve="PR", name="auprc")],
            steps_per_execution=steps_per_execution,
        )
        return model

    def bare(timer, steps_per_execution=1):
        model = compiled(steps_per_execution)
        fit = dict(batch_size=cfg.batch_size, epochs=TRAIN_EPOCHS, class_weight=weights)
        model.fit(x, y, **fit, callbacks=[timer], verbose=0)

    def ours(run, timer):
        run.path.mkdir(parents=True)
        callbacks = training.make_callbacks(run, cfg, "network", "loss", "min") + [timer]
        dataset = in_memory_dataset(x, y, cfg.batch_size, True, 0)
        model = compiled(cfg.steps_per_execution)
        fit = dict(epochs=TRAIN_EPOCHS, class_weight=weights, shuffle=False, verbose=0)
        model.fit(dataset, callbacks=callbacks, **fit)

    default = compare_fits(ours, bare, len(y), TRIALS, WORK / "train")
    same = compare_fits(
        ours, lambda timer: bare(timer, cfg.steps_per_execution), len(y), TRIALS, WORK / "same"
    )
    return {
        "rows": len(y),
        "steps_per_execution": cfg.steps_per_execution,
        "input": input_rate(in_memory_dataset(x, y, cfg.batch_size, True, 0), len(y)),
        "ours": default["ours"],
        "bare": default["bare"],
        "bare_same_compile": same["bare"],
        "ratio_same_compile": round(same["ours"] / same["bare"], 3),
    }


def _score(csv: str) -> dict:
    out = WORK / "scored.csv"
    start = time.perf_counter()
    result = pipeline.score(_config(), StepOptions(run=str(RUN), inputs=[csv], output=str(out)))
    elapsed = time.perf_counter() - start
    return {
        "rows": result["rows"],
        "rows_per_s": round(result["rows"] / elapsed),
        "seconds": round(elapsed, 2),
    }


def _predict(csv: str) -> dict:
    """The bare baseline: model.predict on feature arrays already in memory."""
    scorer = TransactionScorer.from_run(RunDir(RUN), 8192)
    typed, _ = scorer.schema.validate(pd.read_csv(csv, dtype=str, keep_default_na=False))
    frame = pd.concat([typed, scorer.features.transform(typed)], axis=1)
    arrays = model_inputs(frame, scorer.meta.numeric_inputs, scorer.meta.categorical_inputs)
    head = {k: v[:8192] for k, v in arrays.items()}
    predict_in_batches(scorer.model, head, 8192)  # trace once, untimed
    start = time.perf_counter()
    predict_in_batches(scorer.model, arrays, 8192)
    elapsed = time.perf_counter() - start
    return {
        "rows": len(frame),
        "rows_per_s": round(len(frame) / elapsed),
        "seconds": round(elapsed, 2),
    }
