"""The fraud app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve

from apps.fraud import data as fraud_data
from apps.fraud.config import Config, EvaluateConfig
from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.model import build_autoencoder, build_classifier, build_preprocessor, build_scorer
from apps.fraud.simulate import simulate_transactions
from shared import evaluation as ev
from shared import leaderboard as lb
from shared import training
from shared.config import ConfigError, load_config, to_dict
from shared.input_pipeline import in_memory_dataset
from shared.io import (
    DataError,
    atomic_dir,
    atomic_path,
    generated_is_current,
    read_json,
    record_generated,
    write_json,
    write_table,
)
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir, config_digest, load_meta
from shared.scoring import (
    InputSchema,
    default_output_paths,
    predict_in_batches,
    print_counts,
    score_file,
)

APP = "fraud"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
NETWORKS = {"network": "fraud_probability", "autoencoder": "anomaly_score"}  # name: its output
BASELINES = ("logistic_regression", "hist_gradient_boosting")
TEST_INPUT = "test_split.csv"  # the test rows in the scoring layout, written by evaluate
CARD_TITLE = "Fraud detector: model card"


@dataclasses.dataclass
class Prepared:
    frame: pd.DataFrame  # typed rows + features + a `split` column, in time order
    columns: fraud_data.Columns
    folder: Path


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options=None) -> Prepared:
    """Generate the sample if configured, read and check the rows, add features, split."""
    data = config.data
    if data.source == "simulator":
        _ensure_sample(config)
    source = Path(data.path)
    if not source.exists():
        raise DataError(f"{source}: no such file (data.path)")
    stat = source.stat()
    digest = config_digest(
        {
            "data": to_dict(data),
            "seed": config.train.seed,
            "file": [str(source.resolve()), stat.st_size, stat.st_mtime_ns],
        }
    )
    folder = Path(config.run.root) / APP / "prepared" / digest[:12]
    frame_path, info_path = folder / "frame.parquet", folder / "prepare.json"
    if frame_path.exists() and info_path.exists():
        info = read_json(info_path)
        print(f"prepare: using cached features in {folder}", flush=True)
        return Prepared(pd.read_parquet(frame_path), fraud_data.Columns(**info["columns"]), folder)
    start = time.perf_counter()
    typed, columns, rejects = fraud_data.load_transactions(data)
    frame = fraud_data.add_features(typed, columns, data.windows)
    frame["split"] = fraud_data.split(frame, columns, data, config.train.seed)
    counts = frame.groupby("split")[columns.label].agg(["size", "sum"])
    info = {
        "source": str(source),
        "columns": dataclasses.asdict(columns),
        "rows": int(len(frame)),
        "rejected_rows": int(len(rejects)),
        "splits": {
            s: {"rows": int(counts.loc[s, "size"]), "fraud": int(counts.loc[s, "sum"])}
            for s in fraud_data.SPLITS
        },
        "split_by": _split_kind(columns),
        "split": fraud_data.split_description(columns, data, config.train.seed),
    }
    if columns.split_by:
        info["time_ranges"] = {
            s: [
                str(frame.loc[frame.split == s, columns.split_by].min()),
                str(frame.loc[frame.split == s, columns.split_by].max()),
            ]
            for s in fraud_data.SPLITS
        }
    if training.is_chief():  # other workers of a cluster compute the same frame in memory
        write_table(frame_path, frame)
        write_table(folder / "rejects.csv", rejects)
        write_json(info_path, info)
        fraud_data.report_rejects(rejects, folder / "rejects.csv")
    split_text = ", ".join(
        f"{s} {v['rows']:,} ({v['fraud']:,} positive)" for s, v in info["splits"].items()
    )
    print(
        f"prepare: {len(frame):,} rows from {source} in {time.perf_counter() - start:.1f}s; "
        f"split {info['split']}: {split_text}",
        flush=True,
    )
    return Prepared(frame, columns, folder)


def _split_kind(columns: fraud_data.Columns) -> str:
    if columns.split_column:
        return "column"
    return "time" if columns.split_by else "stratified"


def _ensure_sample(config: Config) -> None:
    """Write the simulator's sample to data.path unless the same sample is already there."""
    path = Path(config.data.path)
    wanted = to_dict(config.data.simulator)
    if generated_is_current(path, wanted):
        return
    start = time.perf_counter()
    try:
        frame = simulate_transactions(config.data.simulator)
    except ValueError as exc:
        raise ConfigError(f"data.simulator: {exc}") from exc
    write_table(path, frame)
    record_generated(path, wanted)
    print(
        f"prepare: simulated {len(frame):,} transactions ({frame['is_fraud'].mean():.2%} "
        f"fraud) -> {path} in {time.perf_counter() - start:.1f}s",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options=None) -> RunDir:
    """Fit the supervised network, the autoencoder and both baselines; save and export the scorer.

    A network that diverges is marked failed and left out of the scorer; the decision model is
    the trained network with the best validation AUPRC. If both fail, the run fails.
    """

    def checked_prepare(cfg: Config) -> Prepared:
        prepared = prepare(cfg)
        threshold_rule(cfg.evaluate, prepared.columns)  # a config that cannot pick one stops here
        return prepared

    run, strategy, policy, prepared = training.start_run(APP, config, checked_prepare)
    frame, columns = prepared.frame, prepared.columns
    numeric, categorical = fraud_data.feature_columns(columns, config.data.windows)
    parts = {s: frame[frame.split == s] for s in fraud_data.SPLITS}
    train_rows = parts["train"]
    vocabularies = {c: _vocabulary(train_rows[c], config.data.max_categories) for c in categorical}
    numeric_train = train_rows[numeric].to_numpy(np.float64)
    preprocessor = build_preprocessor(
        numeric, vocabularies, numeric_train.mean(axis=0), numeric_train.var(axis=0)
    )
    features = {
        s: _preprocess(preprocessor, parts[s], numeric, categorical) for s in fraud_data.SPLITS
    }
    labels = {s: parts[s][columns.label].to_numpy(np.float32) for s in fraud_data.SPLITS}

    trained, failures = {}, {}
    for name, fit in (("network", _fit_classifier), ("autoencoder", _fit_autoencoder)):
        try:
            trained[name] = fit(config, strategy, run, features, labels, len(numeric), vocabularies)
        except training.Diverged as exc:
            failures[name] = str(exc)
    if not trained:
        training.fail_run(run, CARD_TITLE, failures)
    # Only the chief reports the baselines; other workers of a cluster skip them.
    baselines, baseline_seconds = (
        _fit_baselines(config, features, labels, vocabularies) if run.is_chief else ({}, {})
    )
    scorer = build_scorer(preprocessor, {NETWORKS[n]: m for n, m in trained.items()})

    # Thresholds come from validation scores of the already preprocessed features.
    batch = config.score.batch_size
    val_scores = {n: _predict(m, features["val"], batch) for n, m in trained.items()}
    val_scores.update({name: model_scores["val"] for name, model_scores in baselines.items()})
    rule = threshold_rule(config.evaluate, columns)
    fn_cost = _fn_costs(config, columns, parts["val"])
    thresholds = {
        name: choose_threshold(rule, labels["val"], s, fn_cost, config.evaluate.fp_cost)
        for name, s in val_scores.items()
    }
    decision = training.best_network(
        {n: _auprc(labels["val"], val_scores[n]) for n in trained}, "max"
    ) or next(iter(trained))
    optimises = threshold_text(rule, config.evaluate, columns)
    flagged = float(np.mean(val_scores[decision] >= thresholds[decision]))
    if run.is_chief:
        with atomic_path(run.model_path, suffix=".keras") as tmp:
            scorer.save(tmp)
        with atomic_dir(run.saved_model_path) as tmp:
            scorer.export(str(tmp), format="tf_saved_model", verbose=False)
        with atomic_path(run.path / "baseline_scores.npz", suffix=".npz") as tmp:
            np.savez(
                tmp,
                **{
                    f"{name}__{split}": s
                    for name, model_scores in baselines.items()
                    for split, s in model_scores.items()
                },
            )
        write_json(
            run.meta_path,
            {
                "app": APP,
                "label": columns.label,
                "schema": columns.schema().to_dict(),
                "feature_spec": dataclasses.asdict(columns.feature_spec(config.data.windows)),
                "numeric_inputs": numeric,
                "categorical_inputs": categorical,
                "vocabulary_sizes": {c: len(v) for c, v in vocabularies.items()},
                "networks": list(trained),
                "failed_networks": failures,
                "decision_model": decision,
                "decision_output": NETWORKS[decision],
                "threshold": thresholds[decision],
                "thresholds": thresholds,
                "threshold_rule": rule,
                "threshold_optimises": optimises,
                "validation_flagged_fraction": flagged,
                "costs": to_dict(config.evaluate),
                "baseline_seconds": baseline_seconds,
                "prepared": str(prepared.folder),
                "precision_policy": policy,
                "xla_compiled": all(m.jit_compile for m in trained.values()),
            },
        )
    run.finish()
    digests = " ".join(f"{n} {training.weights_digest(m)}" for n, m in trained.items())
    print(f"train: finished; weights sha256 {digests}", flush=True)
    if failures:
        print(
            f"train: {', '.join(failures)} failed and is not used; the decision model is "
            f"{decision}",
            flush=True,
        )
    print(
        f"train: {decision} flags when {NETWORKS[decision]} >= {thresholds[decision]:.4g}, "
        f"which {optimises}; it flags {flagged:.1%} of validation rows; model -> "
        f"{run.model_path}",
        flush=True,
    )
    return run


def _vocabulary(values: pd.Series, limit: int) -> list[str]:
    counts = values.astype(str).value_counts()
    return sorted(counts.index[:limit].tolist())


def _preprocess(
    preprocessor: keras.Model, rows: pd.DataFrame, numeric, categorical
) -> dict[str, np.ndarray]:
    """Run the preprocessor once over a split (parallel map in tf.data) and keep the tensors."""
    arrays = fraud_data.model_inputs(rows, numeric, categorical)
    dataset = (
        tf.data.Dataset.from_tensor_slices(arrays)
        .batch(16384)
        .map(lambda x: preprocessor(x, training=False), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    batches = list(dataset.as_numpy_iterator())
    if not batches:
        return {
            name: np.zeros((0,) + tuple(t.shape[1:]), dtype=t.dtype)
            for name, t in preprocessor.output.items()
        }
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def _predict(model: keras.Model, features: dict, batch_size: int) -> np.ndarray:
    """One score per row, by calling the network directly: the per-epoch score of a
    multi-worker fit runs it too, where `predict` would share the rows out across workers."""
    rows = len(next(iter(features.values())))
    parts = [
        keras.ops.convert_to_numpy(
            model({k: v[i : i + batch_size] for k, v in features.items()}, training=False)
        ).reshape(-1)
        for i in range(0, rows, batch_size)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _auprc(y, scores) -> float:
    """Average precision (the AUPRC evaluate reports); NaN for one class or non-finite scores."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if not 0 < y.sum() < len(y) or not np.isfinite(scores).all():
        return float("nan")
    return float(average_precision_score(y, scores))


def _validation_auprc(features: dict, y: np.ndarray, batch_size: int) -> training.EpochScore:
    """`val_auprc` each epoch in the baselines' units (scikit-learn's average precision), so
    time to baseline is read off the history exactly."""
    return training.EpochScore(
        "auprc", lambda model: _auprc(y, _predict(model, features, batch_size))
    )


def _fit_classifier(
    config, strategy, run, features, labels, n_numeric, vocabularies
) -> keras.Model:
    cfg = config.train
    with strategy.scope():
        model = build_classifier(n_numeric, vocabularies, config.model)
        if config.model.loss == "focal":
            loss = keras.losses.BinaryFocalCrossentropy(
                gamma=config.model.focal_gamma, apply_class_balancing=True
            )
        else:
            loss = keras.losses.BinaryCrossentropy()
        training.compile_model(
            model, cfg, len(labels["train"]), loss, metrics=[keras.metrics.AUC(name="roc_auc")]
        )
    weights = (
        training.class_weights(labels["train"], config.model.class_weight)
        if config.model.loss == "bce"
        else None
    )
    print(
        f"train: supervised network on {len(labels['train']):,} rows, class weights {weights}",
        flush=True,
    )
    return training.fit(
        model,
        in_memory_dataset(features["train"], labels["train"], cfg.batch_size, True, cfg.seed),
        in_memory_dataset(features["val"], labels["val"], cfg.batch_size, False),
        run,
        cfg,
        name="network",
        monitor="val_auprc",
        mode="max",
        class_weight=weights,
        examples=len(labels["train"]),
        scores=[_validation_auprc(features["val"], labels["val"], config.score.batch_size)],
    )


def _fit_autoencoder(
    config, strategy, run, features, labels, n_numeric, vocabularies
) -> keras.Model:
    """Trained on legitimate rows only: fraud should reconstruct badly."""
    cfg = dataclasses.replace(
        config.train,
        epochs=config.model.autoencoder_epochs,
        learning_rate=config.model.autoencoder_learning_rate or config.train.learning_rate,
    )
    legit = {s: {k: v[labels[s] == 0] for k, v in features[s].items()} for s in ("train", "val")}
    n_train = int((labels["train"] == 0).sum())
    with strategy.scope():
        model = build_autoencoder(n_numeric, vocabularies, config.model)
        # The model outputs its own reconstruction error; fitting it to zeros minimises that error.
        training.compile_model(model, cfg, n_train, loss="mean_absolute_error")
    print(f"train: autoencoder on {n_train:,} legitimate rows", flush=True)
    zeros = {s: np.zeros(len(next(iter(legit[s].values()))), np.float32) for s in legit}
    return training.fit(
        model,
        in_memory_dataset(legit["train"], zeros["train"], cfg.batch_size, True, cfg.seed),
        in_memory_dataset(legit["val"], zeros["val"], cfg.batch_size, False),
        run,
        cfg,
        name="autoencoder",
        examples=n_train,
        # Scored on every validation row, frauds included: how well the error ranks them.
        scores=[_validation_auprc(features["val"], labels["val"], config.score.batch_size)],
    )


def _baseline_matrix(features: dict, vocabularies: dict) -> sparse.csr_matrix:
    """Standardised numerics plus one-hot categories, for logistic regression."""
    blocks = [sparse.csr_matrix(features["numeric"])]
    for column, vocabulary in vocabularies.items():
        ids = features[f"cat_{fraud_data.input_name(column)}"].reshape(-1)
        blocks.append(
            sparse.csr_matrix(
                (np.ones(len(ids)), (np.arange(len(ids)), ids)),
                shape=(len(ids), len(vocabulary) + 1),
            )
        )
    return sparse.hstack(blocks).tocsr()


def _fit_baselines(config, features, labels, vocabularies) -> tuple[dict, dict[str, float]]:
    """scikit-learn baselines on the same features and splits: their val and test scores, and
    each one's fit time in seconds."""
    logistic = LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced")
    matrices = {s: _baseline_matrix(features[s], vocabularies) for s in fraud_data.SPLITS}
    cat_names = [f"cat_{fraud_data.input_name(c)}" for c in vocabularies]
    dense = {
        s: np.hstack(
            [features[s]["numeric"]] + [features[s][n].astype(np.float64) for n in cat_names]
        )
        for s in fraud_data.SPLITS
    }
    n_numeric = features["train"]["numeric"].shape[1]
    # Native categorical splits for columns that fit HGB's 255 bins; wider ones stay ordinal.
    categorical_mask = [False] * n_numeric + [len(vocabularies[c]) + 1 < 255 for c in vocabularies]
    boosting = HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        categorical_features=np.array(categorical_mask) if any(categorical_mask) else None,
        random_state=config.train.seed,
    )
    seconds = {}
    for name, model, inputs in (
        ("logistic_regression", logistic, matrices),
        ("hist_gradient_boosting", boosting, dense),
    ):
        start = time.perf_counter()
        model.fit(inputs["train"], labels["train"])
        seconds[name] = round(time.perf_counter() - start, 3)
    print(
        "train: baselines fitted (logistic regression "
        f"{seconds['logistic_regression']:.1f}s, histogram gradient boosting "
        f"{seconds['hist_gradient_boosting']:.1f}s)",
        flush=True,
    )
    scores = {
        "logistic_regression": {
            s: logistic.predict_proba(matrices[s])[:, 1] for s in ("val", "test")
        },
        "hist_gradient_boosting": {
            s: boosting.predict_proba(dense[s])[:, 1] for s in ("val", "test")
        },
    }
    return scores, seconds


def _network_scores(
    scorer: keras.Model, rows: pd.DataFrame, numeric, categorical, batch_size: int
) -> dict[str, np.ndarray]:
    out = predict_in_batches(
        scorer, fraud_data.model_inputs(rows, numeric, categorical), batch_size
    )
    return {name: out[output] for name, output in NETWORKS.items() if output in out}


def _fn_costs(config: Config, columns: fraud_data.Columns, rows: pd.DataFrame):
    """What a missed positive costs, per row: its amount, or the configured constant (None:
    no cost given)."""
    if config.evaluate.fn_cost_from_amount and columns.amount:
        return rows[columns.amount].to_numpy(np.float64)
    return config.evaluate.fn_cost


def threshold_rule(evaluate: EvaluateConfig, columns: fraud_data.Columns) -> str:
    """`cost` or `f1`: what the decision threshold optimises on validation."""
    known = evaluate.costs_known(columns.amount)
    if evaluate.threshold_rule == "cost" and not known:
        raise ConfigError(
            "evaluate.threshold_rule=cost needs the cost of a missed positive: set "
            "evaluate.fn_cost, or an amount column with evaluate.fn_cost_from_amount=true"
        )
    if evaluate.threshold_rule == "auto":
        return "cost" if known else "f1"
    return evaluate.threshold_rule


def threshold_text(rule: str, evaluate: EvaluateConfig, columns: fraud_data.Columns) -> str:
    """What the threshold optimises, in words."""
    if rule == "cost":
        missed = (
            "its amount"
            if evaluate.fn_cost_from_amount and columns.amount
            else f"{evaluate.fn_cost:g}"
        )
        return (
            f"minimises expected cost on validation (missed positive: {missed}; "
            f"false alarm: {evaluate.fp_cost:g})"
        )
    if evaluate.costs_known(columns.amount):
        return "maximises F1 on validation"
    return (
        "maximises F1 on validation (no costs given; set evaluate.fn_cost and "
        "evaluate.fp_cost to minimise expected cost)"
    )


def choose_threshold(rule: str, y, scores, fn_cost, fp_cost: float) -> float:
    """Flag when score >= the threshold that minimises cost or maximises F1 on (y, scores)."""
    if rule == "cost":
        return ev.cost_threshold(y, scores, fn_cost, fp_cost)[0]
    return f1_threshold(y, scores)


def f1_threshold(y, scores) -> float:
    """The threshold with the highest F1 (flag when score >= it); above every score if no
    row is positive."""
    y, scores = np.asarray(y).astype(int), np.asarray(scores, dtype=np.float64)
    if y.sum() == 0 or not np.isfinite(scores).all():
        return float(np.nextafter(scores.max(), np.inf)) if len(scores) else 1.0
    precision, recall, cuts = precision_recall_curve(y, scores)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=precision + recall > 0,
    )[:-1]  # the last point (recall 0) has no threshold
    return float(cuts[int(np.argmax(f1))])


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """Test metrics for the networks and both baselines, the leaderboard, the operating point,
    the test split in the scoring layout, plots and the model card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    run_config = load_config(Config, run.path / "config.yaml")
    prepared = prepare(run_config)
    columns = prepared.columns
    scorer = keras.saving.load_model(run.model_path, safe_mode=True)
    baseline_file = np.load(run.path / "baseline_scores.npz", allow_pickle=False)
    scores, labels, fn_costs = {}, {}, {}
    for split in ("val", "test"):
        rows = prepared.frame[prepared.frame.split == split]
        labels[split] = rows[columns.label].to_numpy()
        fn_costs[split] = _fn_costs(run_config, columns, rows)
        scores[split] = _network_scores(
            scorer,
            rows,
            meta["numeric_inputs"],
            meta["categorical_inputs"],
            config.score.batch_size,
        )
        for name in BASELINES:
            scores[split][name] = baseline_file[f"{name}__{split}"]
    models = list(scores["test"])
    costs = run_config.evaluate
    decision = meta["decision_model"]
    report = {
        "primary_metric": "auprc",
        "decision_model": decision,
        "failed_networks": meta["failed_networks"],
        "test": {},
        "validation": {},
    }
    for split, key in (("test", "test"), ("val", "validation")):
        for name in models:
            report[key][name] = _binary_report(
                labels[split], scores[split][name], meta["thresholds"][name], fn_costs[split], costs
            )
    report["costs"] = {
        "fn_cost": "transaction amount"
        if costs.fn_cost_from_amount and columns.amount
        else costs.fn_cost,
        "fp_cost": costs.fp_cost if fn_costs["val"] is not None else None,
    }
    report["operating_point"] = {
        "model": decision,
        "output": meta["decision_output"],
        "threshold": meta["threshold"],
        "rule": meta["threshold_rule"],
        "optimises": meta["threshold_optimises"],
        "flagged_fraction": {
            "validation": report["validation"][decision]["flagged_fraction"],
            "test": report["test"][decision]["flagged_fraction"],
        },
    }
    report["leaderboard"] = {"detection": _leaderboard(run, meta, report)}
    report["data"] = read_json(prepared.folder / "prepare.json")
    test_rows = prepared.frame[prepared.frame.split == "test"]
    write_table(run.path / TEST_INPUT, test_rows[columns.schema().names])
    report["test_input"] = TEST_INPUT
    write_json(run.metrics_path, report)
    _plot(run, meta, report, labels, scores, fn_costs, costs)
    _write_card(run, meta, report)
    _print_summary(report)
    point = report["operating_point"]
    print(
        f"evaluate: threshold {point['threshold']:.4g} on {decision}'s {point['output']} "
        f"{point['optimises']}; it flags {point['flagged_fraction']['validation']:.1%} of "
        f"validation and {point['flagged_fraction']['test']:.1%} of test rows",
        flush=True,
    )
    return report


def _binary_report(y, scores, threshold: float, fn_cost, costs: EvaluateConfig) -> dict:
    """ev.binary_report plus the flagged fraction; without costs, no expected cost."""
    known = fn_cost is not None
    report = ev.binary_report(
        y,
        scores,
        threshold,
        fn_cost if known else 0.0,
        costs.fp_cost if known else 0.0,
        costs.alert_budgets,
    )
    if not known:
        del report["expected_cost"], report["cost_per_1000_rows"]
    c = report["confusion"]
    report["flagged_fraction"] = (c["tp"] + c["fp"]) / max(1, report["rows"])
    return report


def _leaderboard(run: RunDir, meta: dict, report: dict) -> dict:
    """Both networks (failed ones with the reason) beside both baselines, on AUPRC."""
    entries = {}

    def metrics(split: str, name: str) -> dict:
        return {m: report[split][name][m] for m in ("auprc", "roc_auc")}

    for name in NETWORKS:
        summary = training.fit_summary(run, name) or {}
        if name in meta["failed_networks"]:
            entries[name] = lb.model_entry(
                lb.NETWORK,
                train_seconds=summary.get("seconds"),
                status="failed",
                reason=meta["failed_networks"][name],
            )
        else:
            entries[name] = lb.model_entry(
                lb.NETWORK,
                metrics("test", name),
                metrics("validation", name),
                summary.get("seconds"),
                history=run.path / f"history-{name}.csv",
            )
    for name in BASELINES:
        entries[name] = lb.model_entry(
            lb.BASELINE,
            metrics("test", name),
            metrics("validation", name),
            meta["baseline_seconds"].get(name),
        )
    return lb.build("auprc", True, entries, meta["decision_model"], history_column="val_auprc")


def _plot(run, meta, report, labels, scores, fn_costs, costs) -> None:
    plots = run.subdir("plots")
    y, s = labels["test"], scores["test"]
    ev.plot_precision_recall(
        {n: (y, s[n]) for n in s}, plots / "precision_recall.png", "Precision-recall (test)"
    )
    ev.plot_roc({n: (y, s[n]) for n in s}, plots / "roc.png", "ROC (test)")
    ev.plot_calibration(
        {n: (y, s[n]) for n in s if n != "autoencoder"},
        plots / "calibration.png",
        title="Calibration (test)",
    )
    decision = meta["decision_model"]
    c = report["test"][decision]["confusion"]
    ev.plot_confusion_matrix(
        [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
        ["negative", "positive"],
        plots / "confusion_matrix.png",
        f"{decision} at threshold {meta['threshold']:.3g} (test)",
    )
    if fn_costs["val"] is not None:
        ev.plot_cost_curve(
            labels["val"],
            scores["val"][decision],
            fn_costs["val"],
            costs.fp_cost,
            meta["threshold"],
            plots / "cost_curve.png",
            f"{decision}: total cost by threshold (validation)",
        )
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "auprc"))


def _budget_keys(metrics: dict) -> list[str]:
    """The recall-at-alert-budget keys of a binary report, in the configured order."""
    return [k for k in metrics if k.startswith("recall_at_top_")]


def _print_summary(report: dict) -> None:
    first = next(iter(report["test"].values()))
    budgets = _budget_keys(first)
    names = [f"recall@{k.removeprefix('recall_at_top_').removesuffix('pct')}%" for k in budgets]
    print(
        f"{'model (test)':<24}{'AUPRC':>8}{'ROC-AUC':>9}"
        + "".join(f"{n:>13}" for n in names)
        + f"{'precision':>11}{'recall':>8}{'flagged':>9}{'cost':>12}"
    )
    for name, m in report["test"].items():
        cost = f"{m['expected_cost']:>12,.0f}" if "expected_cost" in m else f"{'-':>12}"
        print(
            f"{name:<24}{m['auprc']:>8.4f}{m['roc_auc']:>9.4f}"
            + "".join(f"{m[k]:>13.3f}" for k in budgets)
            + f"{m['precision']:>11.3f}{m['recall']:>8.3f}{m['flagged_fraction']:>9.1%}{cost}"
        )
    for name, reason in report["failed_networks"].items():
        print(f"{name:<24}failed: {reason}")


def _write_card(run: RunDir, meta: dict, report: dict) -> None:
    data, point = report["data"], report["operating_point"]
    splits = ", ".join(
        f"{s}: {v['rows']:,} rows, {v['fraud']:,} positive" for s, v in data["splits"].items()
    )
    columns = ["auprc", "roc_auc", *_budget_keys(report["test"][point["model"]])]
    columns += ["precision", "recall", "f1", "flagged_fraction"]
    if "expected_cost" in report["test"][point["model"]]:
        columns.append("expected_cost")
    failed = "".join(
        f"\n- `{name}` **failed** and is not used: {reason}"
        for name, reason in report["failed_networks"].items()
    )
    flagged = point["flagged_fraction"]
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Intended use": "Ranks rows (card transactions, credit applications) by the risk of "
            "the positive class (fraud, default) for review queues, and flags those at or above "
            "a threshold chosen on validation. Decision support for analysts, not an automatic "
            "block or refusal without review.",
            "Data": f"Source `{data['source']}`; {data['rows']:,} rows after checks "
            f"({data['rejected_rows']:,} rejected, listed in the prepare folder's rejects.csv). "
            f"Split {data['split']}: {splits}.",
            "Model": "A supervised MLP with embeddings for categorical columns "
            "(`fraud_probability`) and an autoencoder trained on negative rows only "
            "(`anomaly_score`, reconstruction error). Normalisation and category lookups are "
            "inside the saved model; per-entity history and calendar features are computed by "
            "the app's feature builder with windows "
            f"{', '.join(meta['feature_spec']['windows'])}. The decision model is "
            f"`{point['model']}`, the trained network with the best validation AUPRC.{failed}",
            "Leaderboard (AUPRC)": lb.to_markdown(report["leaderboard"]["detection"])
            + "\n\nTraining seconds of the baselines are their fit times; time to baseline is "
            "the training time until a network's validation AUPRC first matched the best "
            "baseline's.",
            "Metrics (test)": metrics_table(report["test"], columns)
            + "\n\nAUPRC is the primary metric (positives are rare, so ROC-AUC flatters every "
            "model).",
            "Operating point": f"Flag when `{point['output']}` >= {point['threshold']:.4g}: "
            f"the threshold {point['optimises']}. It flags {flagged['validation']:.1%} of "
            f"validation rows and {flagged['test']:.1%} of test rows.",
            "Limits": "History features see only the rows in the file being scored (plus "
            "earlier chunks of it); score files in time order for them to be right. "
            "Performance drifts as fraud and default patterns change: re-fit the threshold on "
            "recent labelled data. The sample data is simulated; figures on it say nothing "
            "about real portfolios.",
        },
    )


# ---------------------------------------------------------------------------------------------
# score and export


class TransactionScorer:
    """Turns validated raw rows into the trained networks' scores and the decision."""

    def __init__(self, run: RunDir, batch_size: int):
        self.meta = load_meta(run)
        self.model = keras.saving.load_model(run.model_path, safe_mode=True)
        self.features = FeatureBuilder(FeatureSpec(**self.meta["feature_spec"]))
        self.schema = InputSchema.from_dict(self.meta["schema"])
        self.batch_size = batch_size
        self.outputs = [NETWORKS[n] for n in self.meta["networks"]]
        self.output_columns = (
            ["row"]
            + ([self.schema.id_column] if self.schema.id_column else [])
            + self.outputs
            + ["decision"]
        )

    def __call__(self, typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        frame = pd.concat([typed, self.features.transform(typed)], axis=1)
        arrays = fraud_data.model_inputs(
            frame, self.meta["numeric_inputs"], self.meta["categorical_inputs"]
        )
        out = predict_in_batches(self.model, arrays, self.batch_size)
        result = pd.DataFrame({"row": typed.index})
        if self.schema.id_column:
            result[self.schema.id_column] = typed[self.schema.id_column].to_numpy()
        for output in self.outputs:
            result[output] = np.round(out[output], 6)
        flagged = out[self.meta["decision_output"]] >= self.meta["threshold"]
        result["decision"] = np.where(flagged, "flag", "pass")
        return result


def score(config: Config, options) -> dict:
    """Raw transactions in (the layout the model was trained on) -> scores CSV and rejects CSV."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    output, rejects = default_output_paths(options.input, options.output, options.rejects)
    scorer = TransactionScorer(run, config.score.batch_size)
    counts = score_file(
        options.input,
        output,
        rejects,
        scorer.schema,
        scorer,
        scorer.output_columns,
        config.score.chunk_rows,
    )
    print_counts(counts, output, rejects)
    return {
        "rows": counts.rows,
        "scored": counts.scored,
        "rejected": counts.rejected,
        "output": str(output),
        "rejects": str(rejects),
    }


def export(config: Config, options) -> Path:
    """Write the run's scorer as a TensorFlow SavedModel (serving signature: raw columns in)."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    model = keras.saving.load_model(run.model_path, safe_mode=True)
    with atomic_dir(target) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
    print(
        f"export: SavedModel -> {target} (inputs: {', '.join(json.dumps(n) for n in model.input)})",
        flush=True,
    )
    return target
