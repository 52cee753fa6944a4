"""The text app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.nlp.text import card, metrics
from apps.nlp.text import data as tdata
from apps.nlp.text.config import Config
from apps.nlp.text.model import (
    INPUT,
    VECTORIZE,
    Meta,
    build_bert,
    build_bilstm,
    build_transformer,
    fit_baseline,
    load_model,
    load_network,
    make_vectorizer,
    predict_texts,
    write_saved_model,
)
from apps.nlp.text.plots import write_plots
from apps.nlp.text.sample import write_reviews
from apps.nlp.text.scorer import TextScorer, score_file
from shared import leaderboard, steps, training
from shared.io import DataError, atomic_path, read_json, write_json, write_table
from shared.run import RunDir
from shared.scoring import default_output_paths, print_counts
from shared.steps import NO_OPTIONS, StepOptions

APP = "nlp"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
EXACT_MATCH = "exact_match"  # multi-label: the history column val_exact_match
BASELINE = "tfidf_logreg"  # the baseline's name in the leaderboard
TEST_INPUT = "test_split.csv"  # evaluate writes the test split here, as a scoring input


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options: StepOptions | None = None) -> tdata.TextData:
    """Write the review sample if configured, read and split the texts; summary in the cache."""
    cfg = config.data
    if cfg.source == "generated":
        write_reviews(Path(cfg.path), cfg.generated_rows, config.train.seed)
    start = time.perf_counter()
    data = tdata.read(cfg, config.train.seed)
    sizes = {s: len(p) for s, p in data.splits.items()}
    data.folder = steps.prepared_folder(APP, config, data.files, sizes=sizes)
    if training.is_chief():
        rejects = pd.DataFrame(data.rejects, columns=["where", "reason"])
        write_table(data.folder / "rejects.csv", rejects)
        write_json(data.folder / "prepare.json", tdata.summary(data) | {"source": cfg.path})
    counts = ", ".join(f"{s} {n:,}" for s, n in sizes.items())
    files = data.files[0] if len(data.files) == 1 else f"{len(data.files)} files"
    print(
        f"prepare: {sum(sizes.values()):,} texts, {len(data.class_names)} "
        f"classes{' (multi-label)' if data.multi_label else ''} from {files} ({data.format}, "
        f"{cfg.encoding}) in {time.perf_counter() - start:.1f}s; {counts}",
        flush=True,
    )
    if data.replaced_bytes:
        print(
            f"prepare: {data.replaced_bytes:,} undecodable byte sequence(s) replaced by U+FFFD",
            flush=True,
        )
    if data.rejects:
        print(
            f"prepare: {len(data.rejects):,} row(s) set aside, reasons in "
            f"{data.folder / 'rejects.csv'}; first: {data.rejects[0][0]}: {data.rejects[0][1]}",
            flush=True,
        )
    return data


# ---------------------------------------------------------------------------------------------
# train


@dataclasses.dataclass
class Fits:
    """What fitting every network gave: per network its lowest validation loss, seconds,
    whether it ran under XLA or why it failed; and the best model so far."""

    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    compiled: dict[str, bool] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    best: keras.Model | None = None


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit every configured network on the same split; the lowest finite validation loss wins.

    A network that diverges is marked failed and never selected; when every network failed,
    the run fails (exit 1) and never becomes `latest`.
    """
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    train_split = data.splits["train"]
    networks = list(
        dict.fromkeys(config.model.networks + (["bert"] if config.model.preset else []))
    )
    start = time.perf_counter()
    with strategy.scope():
        vectorizer = make_vectorizer(config.model, train_split.texts)
    print(
        f"train: vocabulary of {vectorizer.vocabulary_size():,} tokens from "
        f"{len(train_split):,} training texts",
        flush=True,
    )
    fits = _fit_networks(networks, config, run, strategy, vectorizer, data)
    best = training.best_network(fits.scores, "min")
    if best is None:
        training.fail_run(run, card.CARD_TITLE, fits.failed)
    total = time.perf_counter() - start
    meta = _meta(config, data, networks, best, fits, round(total, 1), policy)
    steps.save_model(run, fits.best, meta, write_saved_model)
    note = f"; failed: {', '.join(fits.failed)}" if fits.failed else ""
    print(
        f"train: finished in {total:.0f}s; best on validation: {best}{note}; weights "
        f"sha256 {training.weights_digest(fits.best)}; model -> {run.model_path}",
        flush=True,
    )
    return run


def _fit_networks(networks: list[str], config: Config, run: RunDir, strategy, vectorizer, data):
    """Fit each network in turn; each that trains to a finite validation loss is saved as
    models/<name>.keras. Scores come from fit's own validation, which every worker computes on
    the whole split alike."""
    fits = Fits()
    for name in networks:
        began = time.perf_counter()
        try:
            model, fits.compiled[name] = _fit_network(name, config, run, strategy, vectorizer, data)
        except training.Diverged as exc:
            fits.failed[name] = (
                f"diverged: {exc.what} at epoch {exc.epoch} (learning rate {exc.learning_rate:.3g})"
            )
            continue
        finally:
            fits.seconds[name] = round(time.perf_counter() - began, 1)
        history = pd.read_csv(run.path / f"history-{name}.csv")
        fits.scores[name] = score = round(float(history["val_loss"].min()), 5)
        if not np.isfinite(score):
            fits.failed[name] = "no finite validation loss"
            print(f"train: {name} failed: {fits.failed[name]}", flush=True)
            continue
        if run.is_chief:
            with atomic_path(run.subdir("models") / f"{name}.keras", suffix=".keras") as tmp:
                model.save(tmp)
        print(f"train: {name} validation loss {score:.4f} ({fits.seconds[name]}s)", flush=True)
        if training.best_network(fits.scores, "min") == name:
            fits.best = model
    return fits


def _fit_network(name: str, config: Config, run: RunDir, strategy, vectorizer, data):
    """Build, compile and fit one network (raises training.Diverged); (model, ran under XLA)."""
    hub = name == "bert"
    n_classes, multi = len(data.class_names), data.multi_label
    train_split, val_split = data.splits["train"], data.splits["val"]
    cfg = dataclasses.replace(
        config.train, learning_rate=config.model.rate(name, config.train.learning_rate)
    )
    train_ds = tdata.make_dataset(train_split, cfg.batch_size, True, config.train.seed, hub)
    val_ds = tdata.make_dataset(val_split, config.score.batch_size, False, config.train.seed, hub)
    with strategy.scope():
        model = _build(name, config, vectorizer, n_classes, multi)
        # String ops do not compile with XLA: under `xla` the vectorizer runs in tf.data.
        head, core = (None, model) if hub else training.xla_split(model, cfg, [VECTORIZE])
        _compile(core, cfg, len(train_split), multi)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    print(
        f"train: {name} ({model.count_params():,} parameters) on {len(train_split):,} texts, "
        f"{n_classes} classes, learning rate {cfg.learning_rate:g}",
        flush=True,
    )
    # Multi-label accuracy is the exact match of the label set, which Keras does not log.
    batch = config.score.batch_size
    scores = [training.EpochScore(EXACT_MATCH, lambda _: _exact_match(model, val_split, batch))]
    training.fit(
        core,
        train_ds,
        val_ds,
        run,
        cfg,
        name,
        "val_loss",
        "min",
        examples=len(train_split),
        scores=scores if multi else (),
    )
    return model, bool(core.jit_compile)


def _build(name: str, config: Config, vectorizer, n_classes: int, multi_label: bool):
    if name == "bert":
        return build_bert(config.model, n_classes, multi_label)
    builder = build_bilstm if name == "bilstm" else build_transformer
    return builder(config.model, vectorizer, n_classes, multi_label)


def _compile(model, cfg, n_train: int, multi_label: bool) -> None:
    if multi_label:
        loss, metric = "binary_crossentropy", keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss = "sparse_categorical_crossentropy"
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    training.compile_model(model, cfg, n_train, loss, [metric])


def _exact_match(model: keras.Model, split: tdata.Split, batch: int) -> float:
    predicted = predict_texts(model, split.texts, batch) >= 0.5
    return float((predicted == split.labels.astype(bool)).all(axis=1).mean())


def _meta(config: Config, data, networks, best: str, fits: Fits, seconds: float, policy: str):
    model = config.model
    return Meta(
        app=APP,
        prepared=str(data.folder),
        input=INPUT,
        train_seconds=seconds,
        precision_policy=policy,
        xla_compiled=fits.compiled,  # per network: whether its train step ran under XLA
        class_names=data.class_names,
        multi_label=data.multi_label,
        networks=networks,
        best=best,
        failed_networks=fits.failed,
        validation_loss=fits.scores,
        learning_rates={n: model.rate(n, config.train.learning_rate) for n in networks},
        sequence_length=model.preset_sequence_length if best == "bert" else model.sequence_length,
        network_seconds=fits.seconds,
    )


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """Each network and the TF-IDF baseline on test and validation: metrics.json with the
    leaderboard, the test split as a scoring input, plots, wrong-examples CSV, model card."""
    opened = steps.open_run(APP, config, options, Meta, prepare)
    run, meta, data = opened.run, opened.meta, opened.data
    report, best_test_prob = _network_reports(run, meta, data, config.score.batch_size)
    if config.evaluate.baseline:
        report["baseline"] = _baseline_report(data)
    report["test"] = report["networks"][meta.best]["test"]
    report["validation"] = report["networks"][meta.best]["validation"]
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.train_seconds
    report["network_seconds"] = meta.network_seconds
    if "baseline" in report:
        base_f1 = report["baseline"]["test"]["macro_f1"]
        report["beats_baseline"] = {
            n: e["test"]["macro_f1"] > base_f1 for n, e in report["networks"].items()
        }
    report["leaderboard"] = {"classification": _leaderboard(run, meta, report)}
    delimiter = opened.config.data.label_delimiter
    tdata.write_scoring_input(run.path / TEST_INPUT, data, config.score, delimiter)
    report["test_input"] = TEST_INPUT
    write_json(run.metrics_path, report)
    plots = write_plots(run, meta, report)
    wrong = metrics.most_confidently_wrong(
        data.splits["test"],
        best_test_prob,
        meta.class_names,
        meta.multi_label,
        config.evaluate.wrong_examples,
    )
    write_table(run.path / "most_confidently_wrong.csv", wrong)
    card.write_card(run, meta, report)
    print(card.evaluate_line(report, meta, plots), flush=True)
    return report


def _network_reports(run: RunDir, meta: Meta, data: tdata.TextData, batch: int):
    """The report's start (every network that trained, on test and validation) and the run's
    model's test probabilities."""
    report = {"primary_metric": "macro_f1", "best": meta.best, "networks": {}}
    best_test_prob = None
    for name in [n for n in meta.networks if n not in meta.failed_networks]:
        model = load_network(run, name)
        entry = {}
        for split, key in (("test", "test"), ("val", "validation")):
            prob = predict_texts(model, data.splits[split].texts, batch)
            entry[key] = metrics.split_report(
                data.splits[split].labels, prob, meta.class_names, meta.multi_label
            )
            if (name, split) == (meta.best, "test"):
                best_test_prob = prob
        report["networks"][name] = entry
    report["failed_networks"] = meta.failed_networks
    return report, best_test_prob


def _baseline_report(data: tdata.TextData) -> dict:
    """The TF-IDF + logistic regression baseline on test and validation."""
    prob, seconds = fit_baseline(data)
    names, multi = data.class_names, data.multi_label
    return {
        "model": "TF-IDF (1-2 grams) + logistic regression",
        "test": metrics.split_report(data.splits["test"].labels, prob["test"], names, multi),
        "validation": metrics.split_report(data.splits["val"].labels, prob["val"], names, multi),
        "fit_seconds": round(seconds, 2),
    }


def _leaderboard(run: RunDir, meta: Meta, report: dict) -> dict:
    """Every network (failed ones with the reason) beside the TF-IDF baseline, on accuracy."""
    failed = report["failed_networks"]
    models = {}
    for name in meta.networks:
        seconds = (training.fit_summary(run, name) or {}).get("seconds")
        if name in failed:
            models[name] = leaderboard.model_entry(
                leaderboard.NETWORK, train_seconds=seconds, status="failed", reason=failed[name]
            )
            continue
        entry = report["networks"][name]
        models[name] = leaderboard.model_entry(
            leaderboard.NETWORK,
            _headline(entry["test"]),
            _headline(entry["validation"]),
            seconds,
            history=run.path / f"history-{name}.csv",
        )
    if "baseline" in report:
        baselines = {BASELINE: report["baseline"]}
        models |= leaderboard.baseline_entries(baselines, ("accuracy", "macro_f1"))
    # Multi-label accuracy (exact match) has its own history column; Keras's is per label.
    column = f"val_{EXACT_MATCH}" if meta.multi_label else "val_accuracy"
    return leaderboard.build("accuracy", True, models, meta.best, history_column=column)


def _headline(entry: dict) -> dict:
    return {"accuracy": entry["accuracy"], "macro_f1": entry["macro_f1"]}


# ---------------------------------------------------------------------------------------------
# score and export


def score(config: Config, options: StepOptions | None = None) -> dict:
    """Texts in (CSV/TSV/JSONL/.txt) -> predictions CSV and rejects CSV, both atomic."""
    options = options or NO_OPTIONS
    run = steps.locate(APP, config, options)
    path = Path(options.input)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    output, rejects = default_output_paths(path, options.output, options.rejects)
    scorer = TextScorer(run, config.score.batch_size, config.score.threshold)
    counts = score_file(scorer, path, output, rejects, config.score)
    result = print_counts(counts, output, rejects)
    if counts.truncated:
        print(
            f"note: {counts.truncated:,} text(s) longer than {scorer.length} tokens were "
            "truncated (truncated=True)",
            flush=True,
        )
    if counts.replaced:
        print(
            f"note: {counts.replaced:,} undecodable byte sequence(s) in the scored texts were "
            "replaced by U+FFFD",
            flush=True,
        )
    return result | {"truncated": counts.truncated}


def export(config: Config, options: StepOptions | None = None) -> Path:
    """Write the run's model as a TensorFlow SavedModel (serving signature: raw strings in)."""
    describe = "input: a batch of raw strings"
    return steps.export_step(APP, config, options, load_model, write_saved_model, describe)
