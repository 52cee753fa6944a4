"""The `cv` step: the rating models trained and measured on each fold of a cross-validation,
and the mean and spread of their test RMSE.

The folds are the published ones when `data.path` is a folder holding `u1.base`/`u1.test`
... pairs (ml-100k's u1..u5, ua, ub), else `data.cv_folds` seeded random folds of the one
ratings file (or MovieLens folder): each rating in exactly one fold's test set. Validation
(early stopping) is drawn from each fold's training rows, never from its test rows.
"""

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from apps.recsys import data as rs_data
from apps.recsys.config import Config
from apps.recsys.metrics import rating_metrics
from apps.recsys.model import RATING_MODELS
from apps.recsys.scorer import predict_ratings
from shared import training
from shared.config import to_dict
from shared.io import DataError, write_json, write_text
from shared.model_card import metrics_table
from shared.run import RunDir


def fold_files(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, base, test) of each `<name>.base` in `folder` with its `<name>.test`, by name."""
    pairs = [(b.stem, b, b.with_suffix(".test")) for b in sorted(folder.glob("*.base"))]
    return [p for p in pairs if p[2].is_file()]


def read_folds(data, seed: int) -> list[tuple[str, pd.DataFrame]]:
    """Each fold's interactions with `given` (train or test) from the fold files or, without
    them, from `data.cv_folds` seeded random folds of the ratings."""
    path = Path(data.path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    pairs = fold_files(path) if path.is_dir() else []
    if pairs:
        folds = []
        for name, base, test in pairs:
            fold = dataclasses.replace(
                data, layout="movielens", path=str(base), test_path=str(test), rating_split="given"
            )
            folds.append((name, rs_data.read_configured(fold, base)[0]))
        return folds
    if data.layout == "movielens" and path.is_dir():
        path, _ = rs_data.find_movielens(path)
    frame, _ = rs_data.read_configured(dataclasses.replace(data, test_path=None), path)
    if frame["rating"].isna().any():
        raise DataError(f"{path}: cv measures rating prediction; the data has no ratings")
    fold_of = np.random.default_rng(seed).permutation(len(frame)) % data.cv_folds
    return [
        (f"fold{n + 1}", frame.assign(given=np.where(fold_of == n, "test", "train")))
        for n in range(data.cv_folds)
    ]


def fold_metrics(config: Config, strategy, frame: pd.DataFrame, run: RunDir) -> dict:
    """Train the rating models and baselines on one fold; their test RMSE and MAE."""
    from apps.recsys.pipeline import RATING_BASELINES, Fitted, _fit_rating_models

    rating, _, _ = rs_data.assign_splits(frame, config.data, config.train.seed)
    frame = frame.drop(columns="given").assign(rating_split=rating)
    parts = rs_data.rating_parts(frame)
    if not len(parts["test"]) or not len(parts["val"]):
        raise DataError(f"{run.path.name}: no test or validation rating of a known user and item")
    fitted = Fitted()
    _fit_rating_models(config, strategy, frame, run, fitted)
    y = parts["test"]["rating"].to_numpy(np.float64)
    out = {
        name: rating_metrics(y, fitted.baseline[f"{name}_test"])
        for name in RATING_BASELINES
        if f"{name}_test" in fitted.baseline
    }
    for name in RATING_MODELS:
        if name in fitted.models:
            predicted = predict_ratings(fitted.models[name], parts["test"], 8192)
            out[name] = rating_metrics(y, np.clip(predicted, *fitted.rating_range))
    return out | {
        "_test_ratings": int(len(y)),
        "_failed": fitted.failures | fitted.baseline_failures,
    }


def summarise(folds: dict) -> dict:
    """Per model: mean and standard deviation (ddof=1) of RMSE and MAE over the folds that
    measured it, and their count."""
    models = sorted({m for f in folds.values() for m in f if not m.startswith("_")})
    out = {}
    for name in models:
        values = {k: [f[name][k] for f in folds.values() if name in f] for k in ("rmse", "mae")}
        out[name] = {"folds": len(values["rmse"])}
        for key, v in values.items():
            out[name][f"{key}_mean"] = float(np.mean(v))
            out[name][f"{key}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return out


def to_markdown(report: dict) -> str:
    """The per-model mean and spread table, then each fold's RMSE."""
    rows = {name: dict(s) for name, s in report["summary"].items()}
    text = (
        metrics_table(rows, ["rmse_mean", "rmse_std", "mae_mean", "mae_std", "folds"])
        + "\n\nRMSE per fold:\n\n"
    )
    per_fold = {
        fold: {m: v["rmse"] for m, v in f.items() if not m.startswith("_")}
        for fold, f in report["folds"].items()
    }
    return text + metrics_table(per_fold, list(report["summary"]))


def run_cv(config: Config) -> dict:
    """Every fold trained and measured; the report written to the cv run folder and printed."""
    training.seed_everything(config.train.seed)
    strategy = training.select_strategy()
    training.set_precision(config.train.mixed_precision)
    folds = read_folds(config.data, config.train.seed)
    run = RunDir.create("recsys", {"step": "cv", **to_dict(config)}, config.run.root)
    print(f"cv: {len(folds)} folds -> {run.path}", flush=True)
    results, start = {}, time.perf_counter()
    for n, (name, frame) in enumerate(folds, 1):
        fold_run = RunDir(run.path / name)
        fold_run.path.mkdir(parents=True, exist_ok=True)
        results[name] = fold_metrics(config, strategy, frame, fold_run)
        elapsed = time.perf_counter() - start
        shown = ", ".join(
            f"{m} {v['rmse']:.4f}" for m, v in results[name].items() if not m.startswith("_")
        )
        eta = elapsed / n * (len(folds) - n)
        print(f"cv: fold {n}/{len(folds)} {name}: RMSE {shown} (ETA {eta:.0f}s)", flush=True)
    report = {"source": config.data.path, "folds": results, "summary": summarise(results)}
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_json(run.path / "cv.json", report)
    text = to_markdown(report)
    write_text(run.path / "cv.md", f"# Rating cross-validation: {config.data.path}\n\n{text}\n")
    print(text, flush=True)
    return report
