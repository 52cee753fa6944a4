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

from apps.fraud import data as fraud_data
from apps.fraud.config import Config
from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.model import build_autoencoder, build_classifier, build_preprocessor, build_scorer
from apps.fraud.simulate import simulate_transactions
from shared import evaluation as ev
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
MODELS = ("network", "autoencoder", "logistic_regression", "hist_gradient_boosting")


@dataclasses.dataclass
class Prepared:
    frame: pd.DataFrame  # typed rows + features + a `split` column, in time order
    columns: fraud_data.Columns
    folder: Path


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options=None) -> Prepared:
    """Generate the sample if configured, read and check the rows, add features, split by time."""
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
    frame["split"] = fraud_data.split(
        frame, columns, data.val_fraction, data.test_fraction, config.train.seed
    )
    counts = frame.groupby("split")[columns.label].agg(["size", "sum"])
    info = {
        "source": str(source),
        "columns": dataclasses.asdict(columns),
        "rows": int(len(frame)),
        "rejected_rows": int(len(rejects)),
        "splits": {
            s: {"rows": int(counts.loc[s, "size"]), "fraud": int(counts.loc[s, "sum"])}
            for s in counts.index
        },
        "split_by": "time" if columns.timestamp else "stratified",
    }
    if columns.timestamp:
        info["time_ranges"] = {
            s: [
                str(frame.loc[frame.split == s, columns.timestamp].min()),
                str(frame.loc[frame.split == s, columns.timestamp].max()),
            ]
            for s in fraud_data.SPLITS
        }
    if training.is_chief():  # other workers of a cluster compute the same frame in memory
        write_table(frame_path, frame)
        write_table(folder / "rejects.csv", rejects)
        write_json(info_path, info)
        fraud_data.report_rejects(rejects, folder / "rejects.csv")
    split_text = ", ".join(
        f"{s} {v['rows']:,} ({v['fraud']:,} fraud)" for s, v in info["splits"].items()
    )
    print(
        f"prepare: {len(frame):,} rows from {source} in {time.perf_counter() - start:.1f}s; {split_text}",
        flush=True,
    )
    return Prepared(frame, columns, folder)


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
        f"prepare: simulated {len(frame):,} transactions ({frame['is_fraud'].mean():.2%} fraud) -> {path} in {time.perf_counter() - start:.1f}s",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options=None) -> RunDir:
    """Fit the supervised network, the autoencoder and both baselines; save and export the scorer."""
    training.seed_everything(config.train.seed)
    strategy = training.select_strategy()
    policy = training.set_precision(config.train.mixed_precision)
    prepared = prepare(config)  # bad data fails here, before a run folder exists
    run = RunDir.create(
        APP, to_dict(config), config.run.root, config.run.run_id, is_chief=training.is_chief()
    )
    print(
        f"train: run folder {run.path}{' (resuming)' if run.resumed else ''}; {strategy.num_replicas_in_sync} replica(s), policy {policy}",
        flush=True,
    )
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

    classifier = _fit_classifier(
        config, strategy, run, features, labels, len(numeric), vocabularies
    )
    autoencoder = _fit_autoencoder(
        config, strategy, run, features, labels, len(numeric), vocabularies
    )
    # Only the chief reports the baselines; other workers of a cluster skip them.
    baselines = _fit_baselines(config, features, labels, vocabularies) if run.is_chief else {}
    scorer = build_scorer(preprocessor, classifier, autoencoder)

    # Thresholds come from validation scores of the already preprocessed features.
    batch = config.score.batch_size
    val_scores = {
        "network": classifier.predict(features["val"], batch_size=batch, verbose=0).reshape(-1),
        "autoencoder": autoencoder.predict(features["val"], batch_size=batch, verbose=0),
    }
    val_scores.update({name: model_scores["val"] for name, model_scores in baselines.items()})
    fn_cost = _fn_costs(config, columns, parts["val"])
    thresholds = {
        name: ev.cost_threshold(labels["val"], s, fn_cost, config.evaluate.fp_cost)[0]
        for name, s in val_scores.items()
    }
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
                "threshold": thresholds["network"],
                "thresholds": thresholds,
                "threshold_rule": "cost-minimising on validation: flag when fraud_probability >= threshold",
                "costs": to_dict(config.evaluate),
                "prepared": str(prepared.folder),
                "precision_policy": policy,
                "xla_compiled": bool(classifier.jit_compile and autoencoder.jit_compile),
            },
        )
    run.finish()
    print(
        f"train: finished; weights sha256 network {training.weights_digest(classifier)} "
        f"autoencoder {training.weights_digest(autoencoder)}",
        flush=True,
    )
    print(
        f"train: network threshold {thresholds['network']:.4f} (cost-minimising on validation); model -> {run.model_path}",
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
            model,
            cfg,
            len(labels["train"]),
            loss,
            metrics=[
                keras.metrics.AUC(curve="PR", name="auprc"),
                keras.metrics.AUC(name="roc_auc"),
            ],
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
    )


def _fit_autoencoder(
    config, strategy, run, features, labels, n_numeric, vocabularies
) -> keras.Model:
    """Trained on legitimate rows only: fraud should reconstruct badly."""
    cfg = dataclasses.replace(config.train, epochs=config.model.autoencoder_epochs)
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


def _fit_baselines(config, features, labels, vocabularies) -> dict[str, dict[str, np.ndarray]]:
    """scikit-learn baselines on the same features and splits: their val and test scores."""
    start = time.perf_counter()
    logistic = LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced")
    matrices = {s: _baseline_matrix(features[s], vocabularies) for s in fraud_data.SPLITS}
    logistic.fit(matrices["train"], labels["train"])
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
    boosting.fit(dense["train"], labels["train"])
    print(
        f"train: baselines (logistic regression, histogram gradient boosting) in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    return {
        "logistic_regression": {
            s: logistic.predict_proba(matrices[s])[:, 1] for s in ("val", "test")
        },
        "hist_gradient_boosting": {
            s: boosting.predict_proba(dense[s])[:, 1] for s in ("val", "test")
        },
    }


def _network_scores(
    scorer: keras.Model, rows: pd.DataFrame, numeric, categorical, batch_size: int
) -> dict[str, np.ndarray]:
    out = predict_in_batches(
        scorer, fraud_data.model_inputs(rows, numeric, categorical), batch_size
    )
    return {"network": out["fraud_probability"], "autoencoder": out["anomaly_score"]}


def _fn_costs(config: Config, columns: fraud_data.Columns, rows: pd.DataFrame):
    """What a missed fraud costs, per row: its amount, or the configured constant."""
    if config.evaluate.fn_cost_from_amount and columns.amount:
        return rows[columns.amount].to_numpy(np.float64)
    return config.evaluate.fn_cost


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """Test metrics for the network, the autoencoder and both baselines; plots; model card."""
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
        for name in ("logistic_regression", "hist_gradient_boosting"):
            scores[split][name] = baseline_file[f"{name}__{split}"]
    costs = run_config.evaluate
    report = {"primary_metric": "auprc", "decision_model": "network", "test": {}, "validation": {}}
    for split, key in (("test", "test"), ("val", "validation")):
        for name in MODELS:
            report[key][name] = ev.binary_report(
                labels[split],
                scores[split][name],
                meta["thresholds"][name],
                fn_costs[split],
                costs.fp_cost,
                costs.alert_budgets,
            )
    report["costs"] = {
        "fn_cost": "transaction amount"
        if costs.fn_cost_from_amount and columns.amount
        else costs.fn_cost,
        "fp_cost": costs.fp_cost,
    }
    report["data"] = read_json(prepared.folder / "prepare.json")
    write_json(run.metrics_path, report)

    plots = run.subdir("plots")
    y, s = labels["test"], scores["test"]
    ev.plot_precision_recall(
        {n: (y, s[n]) for n in MODELS}, plots / "precision_recall.png", "Precision-recall (test)"
    )
    ev.plot_roc({n: (y, s[n]) for n in MODELS}, plots / "roc.png", "ROC (test)")
    ev.plot_calibration(
        {n: (y, s[n]) for n in MODELS if n != "autoencoder"},
        plots / "calibration.png",
        title="Calibration (test)",
    )
    c = report["test"]["network"]["confusion"]
    ev.plot_confusion_matrix(
        [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
        ["legit", "fraud"],
        plots / "confusion_matrix.png",
        f"Network at threshold {meta['threshold']:.3f} (test)",
    )
    ev.plot_cost_curve(
        labels["val"],
        scores["val"]["network"],
        fn_costs["val"],
        costs.fp_cost,
        meta["threshold"],
        plots / "cost_curve.png",
        "Network: total cost by threshold (validation)",
    )
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "auprc"))
    _write_card(run, meta, report)
    _print_summary(report)
    return report


def _print_summary(report: dict) -> None:
    print(
        f"{'model (test)':<24}{'AUPRC':>8}{'ROC-AUC':>9}{'recall@0.5%':>13}{'recall@1%':>11}{'precision':>11}{'recall':>8}{'cost':>12}"
    )
    for name, m in report["test"].items():
        print(
            f"{name:<24}{m['auprc']:>8.4f}{m['roc_auc']:>9.4f}{m.get('recall_at_top_0.5pct', float('nan')):>13.3f}{m.get('recall_at_top_1pct', float('nan')):>11.3f}{m['precision']:>11.3f}{m['recall']:>8.3f}{m['expected_cost']:>12,.0f}"
        )


def _write_card(run: RunDir, meta: dict, report: dict) -> None:
    data = report["data"]
    splits = ", ".join(
        f"{s}: {v['rows']:,} rows, {v['fraud']:,} fraud" for s, v in data["splits"].items()
    )
    columns = [
        "auprc",
        "roc_auc",
        "recall_at_top_0.5pct",
        "recall_at_top_1pct",
        "precision",
        "recall",
        "f1",
        "expected_cost",
    ]
    write_model_card(
        run.card_path,
        "Fraud detector: model card",
        {
            "Intended use": "Ranks card transactions by fraud risk for review queues and decides which to flag at a "
            "cost-minimising threshold. Decision support for fraud analysts, not an automatic block without review.",
            "Data": f"Source `{data['source']}`; {data['rows']:,} rows after checks ({data['rejected_rows']:,} rejected, "
            f"listed in the prepare folder's rejects.csv). Split by {data['split_by']}: {splits}.",
            "Model": "A supervised MLP with embeddings for categorical columns (`fraud_probability`) and an autoencoder "
            "trained on legitimate rows only (`anomaly_score`, reconstruction error). Normalisation and category lookups are "
            "inside the saved model; per-card history and calendar features are computed by the app's feature builder "
            f"with windows {', '.join(meta['feature_spec']['windows'])}.",
            "Metrics (test)": metrics_table(report["test"], columns)
            + "\n\nAUPRC is the primary metric (fraud is rare, so ROC-AUC flatters every model).",
            "Operating point": f"Flag when fraud_probability >= {meta['threshold']:.4f}, chosen on validation to minimise "
            f"expected cost (missed fraud: {report['costs']['fn_cost']}; false alarm: {report['costs']['fp_cost']}).",
            "Limits": "History features see only the transactions in the file being scored (plus earlier chunks of it); "
            "score files in time order for them to be right. Performance drifts as fraud patterns change: re-fit "
            "the threshold on recent labelled data. The sample data is simulated; figures on it say nothing about real portfolios.",
        },
    )


# ---------------------------------------------------------------------------------------------
# score and export


class TransactionScorer:
    """Turns validated raw rows into fraud probability, anomaly score and decision."""

    def __init__(self, run: RunDir, batch_size: int):
        self.meta = load_meta(run)
        self.model = keras.saving.load_model(run.model_path, safe_mode=True)
        self.features = FeatureBuilder(FeatureSpec(**self.meta["feature_spec"]))
        self.schema = InputSchema.from_dict(self.meta["schema"])
        self.batch_size = batch_size
        self.output_columns = (
            ["row"]
            + ([self.schema.id_column] if self.schema.id_column else [])
            + ["fraud_probability", "anomaly_score", "decision"]
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
        result["fraud_probability"] = np.round(out["fraud_probability"], 6)
        result["anomaly_score"] = np.round(out["anomaly_score"], 6)
        result["decision"] = np.where(
            out["fraud_probability"] >= self.meta["threshold"], "flag", "pass"
        )
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
