"""The fraud app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.fraud import baselines as sk
from apps.fraud import card, metrics, plots, serving
from apps.fraud import data as fraud_data
from apps.fraud.config import Config
from apps.fraud.data import Prepared
from apps.fraud.layers import quantile_edges
from apps.fraud.model import (
    CANDIDATES,
    NETWORKS,
    RISK_SCORE,
    Meta,
    RowFeatureSpec,
    build_autoencoder,
    build_classifier,
    build_preprocessor,
    build_scorer,
    load_model,
    predict_rows,
)
from apps.fraud.sample import write_sample
from apps.fraud.scorer import TransactionScorer
from shared import steps, training
from shared.config import to_dict
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, atomic_path, read_json, write_json, write_table
from shared.run import RunDir
from shared.scoring import default_output_paths, print_counts, score_file
from shared.splits import SPLITS
from shared.steps import StepOptions

APP = "fraud"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
TEST_INPUT = "test_split.csv"  # the test rows in the scoring layout, written by evaluate


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options: StepOptions | None = None) -> Prepared:
    """Generate the sample if configured, read and check the rows, add features, split."""
    data = config.data
    if data.source == "simulator":
        write_sample(data.path, data.simulator)
    source = Path(data.path)
    if not source.exists():
        raise DataError(f"{source}: no such file (data.path)")
    folder = steps.prepared_folder(APP, config, [source])
    frame_path, info_path = folder / "frame.parquet", folder / "prepare.json"
    if frame_path.exists() and info_path.exists():
        columns = fraud_data.Columns(**read_json(info_path)["columns"])
        print(f"prepare: using cached features in {folder}", flush=True)
        return Prepared(pd.read_parquet(frame_path), columns, folder)
    start = time.perf_counter()
    typed, columns, rejects = fraud_data.load_transactions(data)
    frame = fraud_data.add_features(typed, columns, data.windows)
    frame["split"] = fraud_data.split(frame, columns, data, config.train.seed)
    info = fraud_data.prepare_summary(frame, columns, rejects, data, config.train.seed)
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


# ---------------------------------------------------------------------------------------------
# train


@dataclasses.dataclass
class TrainingData:
    """The prepared splits as the networks and the baselines take them."""

    numeric: list[str]  # the columns of the standardised numeric matrix, raw and engineered
    inputs: list[str]  # the preprocessor's numeric input columns (raw, and the engineered
    # ones it does not compute itself)
    categorical: list[str]  # the categorical input columns
    vocabularies: dict[str, list[str]]  # categorical column: the values kept, from training
    preprocessor: keras.Model  # raw columns -> standardised numerics and category ids
    rows: dict[str, pd.DataFrame]  # split: its prepared rows
    features: dict[str, dict[str, np.ndarray]]  # split: the preprocessor's outputs
    labels: dict[str, np.ndarray]  # split: 0/1 labels as float32


def training_data(config: Config, prepared: Prepared) -> TrainingData:
    """Fit the preprocessor on the training rows and run it once over every split."""
    numeric, categorical = fraud_data.feature_columns(prepared.columns, config.data.windows)
    rows = {s: prepared.frame[prepared.frame.split == s] for s in SPLITS}
    vocabularies = {
        c: fraud_data.vocabulary(rows["train"][c], config.data.max_categories) for c in categorical
    }
    numeric_train = rows["train"][numeric].to_numpy(np.float64)
    in_model = RowFeatureSpec.of(prepared.columns.feature_spec(config.data.windows))
    inputs = numeric
    if in_model:
        inputs = numeric[: len(numeric) - len(in_model.names)] + in_model.raw_columns
    preprocessor = build_preprocessor(
        numeric, vocabularies, numeric_train.mean(axis=0), numeric_train.var(axis=0), in_model
    )
    features = {
        s: fraud_data.preprocess(preprocessor, rows[s], inputs, categorical) for s in SPLITS
    }
    labels = {s: rows[s][prepared.columns.label].to_numpy(np.float32) for s in SPLITS}
    return TrainingData(
        numeric, inputs, categorical, vocabularies, preprocessor, rows, features, labels
    )


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit the supervised network, the autoencoder and both baselines; save and export the scorer.

    A network that diverges is marked failed and left out of the scorer; the decision model is
    the trained network with the best validation AUPRC. If both fail, the run fails.
    """
    run, strategy, policy, prepared = training.start_run(APP, config, _checked_prepare)
    start = time.perf_counter()
    data = training_data(config, prepared)
    trained, failures = _fit_networks(config, strategy, run, data)
    # Only the chief fits and saves the scikit-learn models; other workers of a cluster skip them.
    fitted, baseline_seconds = _fit_baselines(config, data) if run.is_chief else ({}, {})
    baseline_scores = _baseline_scores(data, fitted)
    train_seconds = round(time.perf_counter() - start, 3)
    scorer = build_scorer(
        data.preprocessor, {NETWORKS[n]: m for n, m in trained.items()}, data.categorical
    )
    meta = Meta(
        app=APP,
        prepared=str(prepared.folder),
        input="inputs: " + ", ".join(json.dumps(n) for n in scorer.input),
        train_seconds=train_seconds,
        precision_policy=policy,
        xla_compiled=all(m.jit_compile for m in trained.values()),
        label=prepared.columns.label,
        schema=prepared.columns.schema().to_dict(),
        feature_spec=dataclasses.asdict(prepared.columns.feature_spec(config.data.windows)),
        numeric_inputs=data.inputs,
        model_numeric=data.numeric,
        categorical_inputs=data.categorical,
        vocabulary_sizes={c: len(v) for c, v in data.vocabularies.items()},
        networks=list(trained),
        failed_networks=failures,
        costs=to_dict(config.evaluate),
        baseline_seconds=baseline_seconds,
        baselines=list(fitted),
        **_operating_point(config, prepared, data, trained, baseline_scores),
    )
    if run.is_chief:
        _save_baselines(run, fitted, baseline_scores)
    steps.save_model(run, scorer, meta, _export_writer(run, meta))
    _print_trained(run, meta, trained)
    return run


def _fit_baselines(config: Config, data: TrainingData) -> tuple[dict, dict]:
    matrix = sk.model_features(data.features["train"], data.categorical)
    sizes = [len(data.vocabularies[c]) for c in data.categorical]
    return sk.fit_all({"train": matrix}, data.labels, len(data.numeric), sizes, config.train.seed)


def _baseline_scores(data: TrainingData, fitted: dict) -> dict:
    """{baseline: {split: scores}} on validation and test."""
    sizes = [len(data.vocabularies[c]) for c in data.categorical]
    matrices = {s: sk.model_features(data.features[s], data.categorical) for s in ("val", "test")}
    return {
        name: {s: sk.predict(name, model, matrices[s], len(data.numeric), sizes) for s in matrices}
        for name, model in fitted.items()
    }


def _checked_prepare(config: Config) -> Prepared:
    prepared = prepare(config)
    metrics.threshold_rule(config.evaluate, prepared.columns)  # a config that cannot pick one stops
    return prepared


def _fit_networks(config: Config, strategy, run: RunDir, data: TrainingData) -> tuple:
    """The networks that trained ({name: model}) and those that diverged ({name: why}); the run
    fails when none trained."""
    trained, failures = {}, {}
    for name, fit in (("network", _fit_classifier), ("autoencoder", _fit_autoencoder)):
        try:
            trained[name] = fit(config, strategy, run, data)
        except training.Diverged as exc:
            failures[name] = str(exc)
    if not trained:
        training.fail_run(run, card.CARD_TITLE, failures)
    return trained, failures


def _validation_auprc(data: TrainingData, batch_size: int) -> training.EpochScore:
    """`val_auprc` each epoch in the baselines' units (scikit-learn's average precision), so
    time to baseline is read off the history exactly."""
    features, y = data.features["val"], data.labels["val"]
    return training.EpochScore(
        "auprc", lambda model: metrics.auprc(y, predict_rows(model, features, batch_size))
    )


def _fit_classifier(config: Config, strategy, run: RunDir, data: TrainingData) -> keras.Model:
    cfg, features, labels = config.train, data.features, data.labels
    with strategy.scope():
        edges = (
            quantile_edges(features["train"]["numeric"], config.model.piecewise_bins)
            if config.model.numeric_embedding == "piecewise"
            else None
        )
        model = build_classifier(len(data.numeric), data.vocabularies, config.model, edges)
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
        scores=[_validation_auprc(data, config.score.batch_size)],
    )


def _fit_autoencoder(config: Config, strategy, run: RunDir, data: TrainingData) -> keras.Model:
    """Trained on legitimate rows only: fraud should reconstruct badly."""
    cfg = dataclasses.replace(
        config.train,
        epochs=config.model.autoencoder_epochs,
        learning_rate=config.model.autoencoder_learning_rate or config.train.learning_rate,
    )
    features, labels = data.features, data.labels
    legit = {s: {k: v[labels[s] == 0] for k, v in features[s].items()} for s in ("train", "val")}
    n_train = int((labels["train"] == 0).sum())
    with strategy.scope():
        model = build_autoencoder(len(data.numeric), data.vocabularies, config.model)
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
        scores=[_validation_auprc(data, config.score.batch_size)],
    )


def _operating_point(
    config: Config, prepared: Prepared, data: TrainingData, trained: dict, baselines: dict
) -> dict:
    """Every model's validation scores and threshold, the blend weight, the model the run
    ships (the best validation AUPRC among the network, gradient boosting, their blend and
    logistic regression) and what it flags: the Meta fields of the decision."""
    y = data.labels["val"]
    val_scores = {
        n: predict_rows(m, data.features["val"], config.score.batch_size)
        for n, m in trained.items()
    }
    val_scores.update({name: model_scores["val"] for name, model_scores in baselines.items()})
    weight = None
    if config.model.blend and "network" in val_scores and "hist_gradient_boosting" in val_scores:
        net, hgb = val_scores["network"], val_scores["hist_gradient_boosting"]
        weight = sk.fit_blend(y, net, hgb, metrics.auprc)
        val_scores[sk.BLEND] = sk.blend(weight, net, hgb)
    rule = metrics.threshold_rule(config.evaluate, prepared.columns)
    fn_cost = metrics.fn_costs(config, prepared.columns, data.rows["val"])
    thresholds = {
        name: metrics.choose_threshold(rule, y, s, fn_cost, config.evaluate.fp_cost)
        for name, s in val_scores.items()
    }
    auprc = {n: metrics.auprc(y, s) for n, s in val_scores.items()}
    decision = select_model(auprc)
    return {
        "decision_model": decision,
        "decision_output": RISK_SCORE,
        "blend_weight": weight,
        "validation_auprc": {n: round(v, 6) for n, v in auprc.items()},
        "threshold": thresholds[decision],
        "thresholds": thresholds,
        "threshold_rule": rule,
        "threshold_optimises": metrics.threshold_text(rule, config.evaluate, prepared.columns),
        "validation_flagged_fraction": float(np.mean(val_scores[decision] >= thresholds[decision])),
    }


def select_model(validation_auprc: dict[str, float]) -> str:
    """The shipped model: the best validation AUPRC among the candidates that have a finite
    one (ties go to the earlier of CANDIDATES); the autoencoder only when none has."""
    ranked = [
        (validation_auprc[n], -i, n)
        for i, n in enumerate(CANDIDATES)
        if np.isfinite(validation_auprc.get(n, np.nan))
    ]
    if ranked:
        return max(ranked)[2]
    return "autoencoder" if "autoencoder" in validation_auprc else next(iter(validation_auprc))


def _save_baselines(run: RunDir, fitted: dict, baselines: dict) -> None:
    """Each scikit-learn model as baselines/<name>.skops (what score and export serve), and
    their validation and test scores for evaluate (`<name>__<split>` arrays)."""
    folder = run.subdir("baselines")
    for name, model in fitted.items():
        sk.save(model, folder / f"{name}.skops")
    with atomic_path(run.path / "baseline_scores.npz", suffix=".npz") as tmp:
        np.savez(
            tmp,
            **{
                f"{name}__{split}": s
                for name, model_scores in baselines.items()
                for split, s in model_scores.items()
            },
        )


def _print_trained(run: RunDir, meta: Meta, trained: dict) -> None:
    digests = " ".join(f"{n} {training.weights_digest(m)}" for n, m in trained.items())
    print(f"train: finished; weights sha256 {digests}", flush=True)
    decision = meta.decision_model
    if meta.failed_networks:
        print(
            f"train: {', '.join(meta.failed_networks)} failed and is not used; the run "
            f"ships {decision}",
            flush=True,
        )
    shown = ", ".join(f"{n} {v:.4f}" for n, v in meta.validation_auprc.items())
    blend = f" (blend weight on the network {meta.blend_weight:g})" if meta.blend_weight else ""
    print(f"train: validation AUPRC: {shown}{blend}; the run ships {decision}", flush=True)
    print(
        f"train: {decision} flags when {meta.decision_output} >= {meta.threshold:.4g}, "
        f"which {meta.threshold_optimises}; it flags {meta.validation_flagged_fraction:.1%} of "
        f"validation rows; model -> {run.model_path}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """Test metrics for the networks and both baselines, the leaderboard, the operating point,
    the test split in the scoring layout, plots and the model card."""
    opened = steps.open_run(APP, config, options, Meta, prepare, load_model)
    run, meta, prepared = opened.run, opened.meta, opened.data
    labels, scores, fn_costs = _validation_and_test(opened, config.score.batch_size)
    costs = opened.config.evaluate
    report = metrics.evaluation_report(meta, labels, scores, fn_costs, costs, prepared.columns)
    report["leaderboard"] = {"detection": metrics.leaderboard(run, meta, report)}
    report["data"] = read_json(prepared.folder / "prepare.json")
    test_rows = prepared.frame[prepared.frame.split == "test"]
    write_table(run.path / TEST_INPUT, test_rows[prepared.columns.schema().names])
    report["test_input"] = TEST_INPUT
    write_json(run.metrics_path, report)
    plots.plot_run(run, meta, report, labels, scores, fn_costs, costs)
    card.write_card(run, meta, report)
    card.print_summary(report)
    return report


def _validation_and_test(opened: steps.OpenRun, batch_size: int) -> tuple[dict, dict, dict]:
    """Per split (val, test): the labels, every model's scores (the networks now, the
    baselines as train saved them, the blend from both) and what a missed positive costs per
    row."""
    meta = opened.meta
    scorer = TransactionScorer(meta, opened.model, batch_size, {})
    baseline_file = np.load(opened.run.path / "baseline_scores.npz", allow_pickle=False)
    frame, columns = opened.data.frame, opened.data.columns
    labels, scores, fn_costs = {}, {}, {}
    for split in ("val", "test"):
        rows = frame[frame.split == split]
        labels[split] = rows[columns.label].to_numpy()
        fn_costs[split] = metrics.fn_costs(opened.config, columns, rows)
        scores[split] = scorer.network_scores(rows)
        for name in meta.baselines:
            scores[split][name] = baseline_file[f"{name}__{split}"]
        if meta.blend_weight is not None:
            scores[split][sk.BLEND] = sk.blend(
                meta.blend_weight, scores[split]["network"], scores[split]["hist_gradient_boosting"]
            )
    return labels, scores, fn_costs


# ---------------------------------------------------------------------------------------------
# score and export


def score(config: Config, options: StepOptions) -> dict:
    """Raw transactions in (the layout the model was trained on) -> scores CSV and rejects CSV."""
    run = steps.locate(APP, config, options)
    output, rejects = default_output_paths(options.input, options.output, options.rejects)
    scorer = TransactionScorer.from_run(run, config.score.batch_size)
    counts = score_file(
        options.input,
        output,
        rejects,
        scorer.schema,
        scorer,
        scorer.output_columns,
        config.score.chunk_rows,
    )
    return print_counts(counts, output, rejects)


def export(config: Config, options: StepOptions | None = None) -> Path:
    """Write the run's scorer as a TensorFlow SavedModel (serving signature: one tensor per
    input column) with, in its assets.extra/, the shipped scikit-learn model (skops) and
    serving.json, the recipe from the SavedModel's outputs to the shipped score."""
    run = steps.locate(APP, config, options)
    meta = Meta.read(run)
    return steps.export_step(
        APP, config, options, load_model, _export_writer(run, meta), serving.describe(meta)
    )


def _export_writer(run: RunDir, meta: Meta):
    return lambda model, folder: serving.write_export(model, folder, run, meta)
