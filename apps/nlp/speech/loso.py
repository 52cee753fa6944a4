"""Leave-one-speaker-out evaluation (`evaluate.loso=true`): every clip of the run, pooled over
its splits, is tested once by a network and baselines trained without its speaker.

With more speakers than `evaluate.loso_folds`, speakers are dealt into that many folds (each
fold's speakers are left out together), so the cost is bounded by the fold count, not by the
number of speakers. Each fold trains afresh with the run's config, stopping early on the loss
of its validation speakers (whole speakers of the training side, `data.val_fraction` of them,
never the fold's test speakers; `train.patience`, best epoch's weights kept), and reports
accuracy per left-out speaker; the summary is the unweighted mean over speakers.
"""

import time

import keras
import numpy as np
from threadpoolctl import threadpool_limits

from apps.nlp.speech.config import Config
from apps.nlp.speech.model import (
    BASELINE_NAMES,
    baseline_scores,
    build_baseline,
    build_model,
    compile_network,
    predict_features,
)
from shared import leaderboard
from shared.input_pipeline import in_memory_dataset


def folds(speakers: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """The distinct speakers, shuffled with `seed` and dealt into at most `count` folds."""
    distinct = np.array(sorted(set(speakers)))
    np.random.default_rng(seed).shuffle(distinct)
    return [f for f in np.array_split(distinct, min(count, len(distinct))) if len(f)]


def run_loso(config: Config, pooled: dict, baseline_x: np.ndarray | None, params: dict) -> dict:
    """`pooled` holds x, y, speakers and n_classes of every clip; `baseline_x` the MFCC
    statistics of the same clips (None: no baselines). Returns the per-speaker report."""
    y, speakers = pooled["y"], pooled["speakers"]
    if (speakers == "").any() or len(set(speakers)) < 3:
        return {"skipped": "leave-one-speaker-out needs 3 or more speakers, each clip's known"}
    seed = config.train.seed
    groups = folds(speakers, config.evaluate.loso_folds, seed)
    names = [config.model.architecture] + [BASELINE_NAMES[k] for k in config.baseline.models]
    correct = {n: np.zeros(len(y), bool) for n in names}
    val_scores, seconds, start = {n: [] for n in names}, dict.fromkeys(names, 0.0), time.time()
    epochs = []  # the network's epochs per fold (early stopping on the validation speakers)
    for i, held in enumerate(groups):
        test = np.isin(speakers, held)
        val = _val_mask(speakers, test, config.data.val_fraction, seed + i)
        train = ~test & ~val
        found = _fit_fold(config, pooled, baseline_x, params, (train, val, test), seed + i)
        for name, (test_pred, val_pred, spent, fold_epochs) in found.items():
            correct[name][test] = test_pred == y[test]
            val_scores[name].append(float(np.mean(val_pred == y[val])) if val.any() else np.nan)
            seconds[name] += spent
            if fold_epochs:
                epochs.append(fold_epochs)
        elapsed = time.time() - start
        eta = elapsed / (i + 1) * (len(groups) - i - 1)
        print(
            f"evaluate: leave-one-speaker-out fold {i + 1}/{len(groups)} ({len(held)} "
            f"speaker(s)) done; {elapsed:.0f}s elapsed, ETA {eta:.0f}s",
            flush=True,
        )
    result = _summarise(names, correct, speakers, val_scores, seconds, len(groups))
    return result | {"network_epochs_per_fold": epochs}


def _val_mask(speakers: np.ndarray, test: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whole speakers of the training side (`fraction` of them, at least one) for validation."""
    rest = np.array(sorted(set(speakers[~test])))
    np.random.default_rng(seed).shuffle(rest)
    chosen = rest[: max(1, int(round(fraction * len(rest))))] if len(rest) > 2 else rest[:0]
    return np.isin(speakers, chosen) & ~test


def _fit_fold(config: Config, pooled: dict, baseline_x, params: dict, masks, seed: int) -> dict:
    """{model: (test predictions, validation predictions, train seconds)} for one fold."""
    from apps.nlp.speech.pipeline import _onehot, repeat_small

    train, val, test = masks
    x, y, n_classes = pooled["x"], pooled["y"], pooled["n_classes"]
    cfg = config.train
    keras.utils.set_random_seed(seed)
    mean, variance = x[train].mean(axis=(0, 1)), x[train].var(axis=(0, 1))
    model = build_model(
        config.model, config.augment, n_classes, x.shape[1:], mean, variance, params["kind"]
    )
    tx, ty = repeat_small(x[train], y[train], cfg.min_epoch_clips)
    compile_network(model, config, len(ty), n_classes)
    start = time.perf_counter()
    stopper = _early_stopping(cfg.patience) if val.any() else None
    history = model.fit(
        in_memory_dataset(tx, _onehot(ty, n_classes), cfg.batch_size, True, seed),
        validation_data=_validation(x[val], y[val], n_classes, config) if stopper else None,
        epochs=cfg.epochs,
        callbacks=[stopper] if stopper else [],
        verbose=0,
    )
    spent = time.perf_counter() - start
    epochs = len(history.history["loss"])

    def predict(mask):
        return predict_features(model, x[mask], config.score.batch_size).argmax(axis=1)

    out = {config.model.architecture: (predict(test), predict(val), spent, epochs)}
    if baseline_x is None:
        return out
    with threadpool_limits(limits=1):  # small matrices: one BLAS thread is fastest
        for kind in config.baseline.models:
            base = build_baseline(kind, config.baseline, config.train.seed)
            start = time.perf_counter()
            base.fit(baseline_x[train], y[train])
            spent = time.perf_counter() - start

            def guess(mask, base=base):
                return baseline_scores(base, baseline_x[mask], n_classes).argmax(axis=1)

            out[BASELINE_NAMES[kind]] = (guess(test), guess(val) if val.any() else y[:0], spent, 0)
    return out


def _early_stopping(patience: int) -> keras.callbacks.EarlyStopping | None:
    """Stops a fold on its validation speakers' loss (whole speakers of the training side, never
    the fold's test speakers) and keeps its best epoch's weights; patience 0: every epoch."""
    if not patience:
        return None
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=patience, restore_best_weights=True
    )


def _validation(x: np.ndarray, y: np.ndarray, n_classes: int, config: Config):
    from apps.nlp.speech.pipeline import _onehot

    return in_memory_dataset(x, _onehot(y, n_classes), config.score.batch_size, False)


def _summarise(names, correct, speakers, val_scores, seconds, n_folds) -> dict:
    per_speaker = {}
    for speaker in sorted(set(speakers)):
        mask = speakers == speaker
        per_speaker[speaker] = {"clips": int(mask.sum())} | {
            n: round(float(correct[n][mask].mean()), 4) for n in names
        }
    mean = {n: round(float(np.mean([s[n] for s in per_speaker.values()])), 4) for n in names}
    return {
        "folds": n_folds,
        "speakers": len(per_speaker),
        "clips": int(len(speakers)),
        "mean_per_speaker": mean,
        "pooled_accuracy": {n: round(float(correct[n].mean()), 4) for n in names},
        "validation_accuracy": {n: round(float(np.nanmean(val_scores[n])), 4) for n in names},
        "train_seconds": {n: round(seconds[n], 1) for n in names},
        "per_speaker": per_speaker,
    }


def loso_leaderboard(result: dict, network: str) -> dict:
    """The leave-one-speaker-out leaderboard: mean per-speaker accuracy as `test`, the folds'
    validation speakers as `validation`."""
    models = {}
    for name, mean in result["mean_per_speaker"].items():
        kind = "network" if name == network else "baseline"
        models[name] = leaderboard.model_entry(
            kind,
            {"accuracy": mean},
            {"accuracy": result["validation_accuracy"][name]},
            result["train_seconds"][name],
        )
    return leaderboard.build("accuracy", True, models, network)
