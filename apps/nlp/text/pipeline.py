"""The text app's five steps: prepare, train, evaluate, score, export."""

import csv
import dataclasses
import json
import re
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from apps.nlp.text import data as tdata
from apps.nlp.text.config import Config
from apps.nlp.text.generate import generate_reviews
from apps.nlp.text.model import (
    VECTORIZE,
    build_bert,
    build_bilstm,
    build_transformer,
    export_saved_model,
    is_hub_task,
    make_vectorizer,
    predict_texts,
)
from shared import evaluation as ev
from shared import leaderboard, training
from shared.config import load_config, to_dict
from shared.export import load_saved_model
from shared.io import (
    DataError,
    atomic_dir,
    atomic_path,
    generated_is_current,
    iter_table_chunks,
    read_json,
    record_generated,
    write_json,
    write_table,
)
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir, config_digest, load_meta
from shared.scoring import (
    Progress,
    ScoreCounts,
    default_output_paths,
    finite_outputs,
    print_counts,
)

APP = "nlp"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
EXACT_MATCH = "exact_match"  # multi-label: the history column val_exact_match
BASELINE = "tfidf_logreg"  # the baseline's name in the leaderboard
TEST_INPUT = "test_split.csv"  # evaluate writes the test split here, as a scoring input
# TextVectorization's default standardisation: lower case, these characters removed.
PUNCTUATION = re.compile(r"[!\"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~']")


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options=None) -> tdata.TextData:
    """Write the review sample if configured, read and split the texts; summary in the cache."""
    cfg = config.data
    if cfg.source == "generated":
        write_reviews(Path(cfg.path), cfg.generated_rows, config.train.seed)
    start = time.perf_counter()
    data = tdata.read(cfg, config.train.seed)
    digest = config_digest({"data": to_dict(cfg), "seed": config.train.seed,
                            "sizes": {s: len(p) for s, p in data.splits.items()}})  # fmt: skip
    data.folder = Path(config.run.root) / APP / "prepared" / digest[:12]
    if training.is_chief():
        rejects = pd.DataFrame(data.rejects, columns=["where", "reason"])
        write_table(data.folder / "rejects.csv", rejects)
        write_json(data.folder / "prepare.json", summary(data) | {"source": cfg.path})
    counts = ", ".join(f"{s} {len(p):,}" for s, p in data.splits.items())
    files = data.files[0] if len(data.files) == 1 else f"{len(data.files)} files"
    print(
        f"prepare: {sum(len(p) for p in data.splits.values()):,} texts, {len(data.class_names)} "
        f"classes{' (multi-label)' if data.multi_label else ''} from {files} ({data.format}, "
        f"{cfg.encoding}) in {time.perf_counter() - start:.1f}s; {counts}",
        flush=True,
    )
    if data.replaced_bytes:
        print(f"prepare: {data.replaced_bytes:,} undecodable byte sequence(s) replaced by U+FFFD",
              flush=True)  # fmt: skip
    if data.rejects:
        print(
            f"prepare: {len(data.rejects):,} row(s) set aside, reasons in "
            f"{data.folder / 'rejects.csv'}; first: {data.rejects[0][0]}: {data.rejects[0][1]}",
            flush=True,
        )
    return data


def summary(data: tdata.TextData) -> dict:
    return {
        "classes": data.class_names,
        "multi_label": data.multi_label,
        "format": data.format,
        "files": data.files,
        "own_splits": data.own_splits,
        "splits": {s: {"texts": len(p)} for s, p in data.splits.items()},
        "rejected_rows": len(data.rejects),
        "replaced_bytes": data.replaced_bytes,
    }


def write_reviews(path: Path, rows: int, seed: int) -> None:
    """The seeded review sample (id, text, label, domain) at `path`, unless already current."""
    params = {"generator": "reviews-v1", "rows": rows, "seed": seed}
    if generated_is_current(path, params):
        return
    write_table(path, generate_reviews(rows, seed))
    record_generated(path, params)
    print(f"prepare: wrote {rows:,} generated reviews to {path}", flush=True)


# ---------------------------------------------------------------------------------------------
# train


def make_dataset(split: tdata.Split, batch: int, shuffle: bool, seed: int, hub: bool):
    """(raw strings, labels) batches; strings as [n, 1] for our models, [n] for KerasHub tasks."""
    texts = tf.constant(split.texts, dtype=tf.string)
    dataset = tf.data.Dataset.from_tensor_slices((texts if hub else texts[:, None], split.labels))
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch).prefetch(tf.data.AUTOTUNE)


def _build(name: str, config: Config, vectorizer, n_classes: int, multi_label: bool):
    if name == "bert":
        return build_bert(config.model, n_classes, multi_label)
    builder = build_bilstm if name == "bilstm" else build_transformer
    return builder(config.model, vectorizer, n_classes, multi_label)


def _compile(model, cfg, n_train: int, multi_label: bool) -> None:
    if multi_label:
        loss, metrics = "binary_crossentropy", [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        loss = "sparse_categorical_crossentropy"
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    training.compile_model(model, cfg, n_train, loss, metrics)


def train(config: Config, options=None) -> RunDir:
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
    print(f"train: vocabulary of {vectorizer.vocabulary_size():,} tokens from "
          f"{len(train_split):,} training texts", flush=True)  # fmt: skip
    scores, seconds, compiled, failed, best = {}, {}, {}, {}, None
    for name in networks:
        began = time.perf_counter()
        try:
            model, compiled[name] = _fit_network(name, config, run, strategy, vectorizer, data)
        except training.Diverged as exc:
            failed[name] = (
                f"diverged: {exc.what} at epoch {exc.epoch} (learning rate {exc.learning_rate:.3g})"
            )
            continue
        finally:
            seconds[name] = round(time.perf_counter() - began, 1)
        # From fit's own validation, which every worker computes on the whole split alike.
        history = pd.read_csv(run.path / f"history-{name}.csv")
        scores[name] = round(float(history["val_loss"].min()), 5)
        if not np.isfinite(scores[name]):
            failed[name] = "no finite validation loss"
            print(f"train: {name} failed: {failed[name]}", flush=True)
            continue
        if run.is_chief:
            with atomic_path(run.subdir("models") / f"{name}.keras", suffix=".keras") as tmp:
                model.save(tmp)
        print(f"train: {name} validation loss {scores[name]:.4f} ({seconds[name]}s)", flush=True)
        if training.best_network(scores, "min") == name:
            best = model
    best_name = training.best_network(scores, "min")
    if best_name is None:
        training.fail_run(run, "Text classifier: model card", failed)
    total = time.perf_counter() - start
    if run.is_chief:
        meta = _meta(config, data, networks, best_name, scores, failed)
        meta |= {
            "network_seconds": seconds,
            "train_seconds": round(total, 1),
            "precision_policy": policy,
            "xla_compiled": compiled,  # per network: whether its train step ran under XLA
        }
        _save_run_model(run, best, meta)
    run.finish()
    note = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"train: finished in {total:.0f}s; best on validation: {best_name}{note}; weights "
          f"sha256 {training.weights_digest(best)}; model -> {run.model_path}", flush=True)  # fmt: skip
    return run


def _fit_network(name: str, config: Config, run: RunDir, strategy, vectorizer, data):
    """Build, compile and fit one network (raises training.Diverged); (model, ran under XLA)."""
    hub = name == "bert"
    n_classes, multi = len(data.class_names), data.multi_label
    train_split, val_split = data.splits["train"], data.splits["val"]
    cfg = dataclasses.replace(
        config.train, learning_rate=config.model.rate(name, config.train.learning_rate)
    )
    seed = config.train.seed
    train_ds = make_dataset(train_split, cfg.batch_size, True, seed, hub)
    val_ds = make_dataset(val_split, config.score.batch_size, False, seed, hub)
    with strategy.scope():
        model = _build(name, config, vectorizer, n_classes, multi)
        # String ops do not compile with XLA: under `xla` the vectorizer runs in tf.data.
        head, core = (None, model) if hub else training.xla_split(model, cfg, [VECTORIZE])
        _compile(core, cfg, len(train_split), multi)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    print(f"train: {name} ({model.count_params():,} parameters) on {len(train_split):,} texts, "
          f"{n_classes} classes, learning rate {cfg.learning_rate:g}", flush=True)  # fmt: skip
    # Multi-label accuracy is the exact match of the label set, which Keras does not log.
    batch = config.score.batch_size
    scores = [training.EpochScore(EXACT_MATCH, lambda _: _exact_match(model, val_split, batch))]
    training.fit(core, train_ds, val_ds, run, cfg, name, "val_loss", "min",
                 examples=len(train_split), scores=scores if multi else ())  # fmt: skip
    return model, bool(core.jit_compile)


def _exact_match(model: keras.Model, split: tdata.Split, batch: int) -> float:
    predicted = predict_texts(model, split.texts, batch) >= 0.5
    return float((predicted == split.labels.astype(bool)).all(axis=1).mean())


def _meta(config: Config, data, networks, best: str, scores: dict, failed: dict) -> dict:
    return {
        "app": APP,
        "class_names": data.class_names,
        "multi_label": data.multi_label,
        "networks": networks,
        "best": best,
        "failed_networks": failed,  # name -> why it failed; never selected, no models/<name>
        "validation_loss": scores,
        "learning_rates": {n: config.model.rate(n, config.train.learning_rate) for n in networks},
        "sequence_length": config.model.preset_sequence_length
        if best == "bert" else config.model.sequence_length,
        "input": "raw strings (batch,); tokenization inside the model",
        "prepared": str(data.folder),
    }  # fmt: skip


def _save_run_model(run: RunDir, best: keras.Model, meta: dict) -> None:
    with atomic_path(run.model_path, suffix=".keras") as tmp:
        best.save(tmp)
    with atomic_dir(run.saved_model_path) as tmp:
        export_saved_model(best, str(tmp))
    write_json(run.meta_path, meta)


def load_model(path: Path) -> keras.Model:
    """A saved text model, loaded safely (shared layers and KerasHub classes registered)."""
    import keras_hub  # noqa: F401  registers the KerasHub task, backbone and tokenizer classes

    return load_saved_model(path)


# ---------------------------------------------------------------------------------------------
# evaluate


def _report(y, prob: np.ndarray, names: list[str], multi_label: bool) -> dict:
    if not multi_label:
        return ev.classification_report(y, prob, names, top_k=min(5, len(names)))
    from sklearn import metrics as skm

    predicted = (prob >= 0.5).astype(int)
    p, r, f, support = skm.precision_recall_fscore_support(y, predicted, zero_division=0)
    return {
        "examples": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),  # exact match of the label set
        "macro_f1": float(f.mean()),
        "micro_f1": float(skm.f1_score(y, predicted, average="micro", zero_division=0)),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "per_class": {
            n: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, n in enumerate(names)
        },  # fmt: skip
    }


def baseline(data: tdata.TextData) -> tuple[dict[str, np.ndarray], float]:
    """TF-IDF (words and word pairs) + logistic regression on the same split: val/test probs,
    and the seconds its fit took."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000
    )
    features = vectorizer.fit_transform(data.splits["train"].texts)
    classifier = LogisticRegression(C=4.0, max_iter=2000)
    if data.multi_label:
        classifier = OneVsRestClassifier(classifier)
    classifier.fit(features, data.splits["train"].labels)
    seconds = time.perf_counter() - start
    out = {}
    for split in ("val", "test"):
        prob = classifier.predict_proba(vectorizer.transform(data.splits[split].texts))
        if not data.multi_label and prob.shape[1] != len(data.class_names):
            full = np.zeros((len(prob), len(data.class_names)))  # a class missing from train
            full[:, classifier.classes_] = prob
            prob = full
        out[split] = prob
    return out, seconds


def evaluate(config: Config, options=None) -> dict:
    """Each network and the TF-IDF baseline on test and validation: metrics.json with the
    leaderboard, the test split as a scoring input, plots, wrong-examples CSV, model card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    run_config = load_config(Config, run.path / "config.yaml")
    data = prepare(run_config)
    names, multi = meta["class_names"], meta["multi_label"]
    failed = meta.get("failed_networks", {})
    trained = [n for n in meta["networks"] if n not in failed]
    batch = config.score.batch_size
    report = {"primary_metric": "macro_f1", "best": meta["best"], "networks": {}}
    probs = {}
    for name in trained:
        model = load_model(run.path / "models" / f"{name}.keras")
        entry = {}
        for split, key in (("test", "test"), ("val", "validation")):
            prob = predict_texts(model, data.splits[split].texts, batch)
            entry[key] = _report(data.splits[split].labels, prob, names, multi)
            probs[(name, split)] = prob
        report["networks"][name] = entry
    report["failed_networks"] = failed
    if config.evaluate.baseline:
        base, seconds = baseline(data)
        report["baseline"] = {
            "model": "TF-IDF (1-2 grams) + logistic regression",
            "test": _report(data.splits["test"].labels, base["test"], names, multi),
            "validation": _report(data.splits["val"].labels, base["val"], names, multi),
            "fit_seconds": round(seconds, 2),
        }
    report["test"] = report["networks"][meta["best"]]["test"]
    report["validation"] = report["networks"][meta["best"]]["validation"]
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.get("train_seconds")
    report["network_seconds"] = meta.get("network_seconds")
    if "baseline" in report:
        base_f1 = report["baseline"]["test"]["macro_f1"]
        report["beats_baseline"] = {n: e["test"]["macro_f1"] > base_f1
                                    for n, e in report["networks"].items()}  # fmt: skip
    report["leaderboard"] = {"classification": _leaderboard(run, meta, report)}
    report["test_input"] = write_test_input(
        run, data, config.score, run_config.data.label_delimiter
    )
    write_json(run.metrics_path, report)

    plots = run.subdir("plots")
    best_test = report["test"]
    if not multi:
        for name in trained:
            test = report["networks"][name]["test"]
            ev.plot_confusion_matrix(
                np.array(test["confusion_matrix"]), names,
                plots / ("confusion_matrix.png" if name == meta["best"] else f"confusion_matrix_{name}.png"),
                f"{name}: confusion matrix (test, accuracy {test['accuracy']:.3f})",
            )  # fmt: skip
    wrong = most_confidently_wrong(
        data.splits["test"], probs[(meta["best"], "test")], names, multi,
        config.evaluate.wrong_examples,
    )  # fmt: skip
    write_table(run.path / "most_confidently_wrong.csv", wrong)
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    _write_card(run, meta, report)
    line = ", ".join(f"{n} {e['test']['accuracy']:.4f}" for n, e in report["networks"].items())
    line += "".join(f", {n} failed" for n in failed)
    if "baseline" in report:
        line += f", TF-IDF baseline {report['baseline']['test']['accuracy']:.4f}"
    print(f"evaluate: test accuracy {line}; best ({meta['best']}) macro F1 "
          f"{best_test['macro_f1']:.4f} on {best_test['examples']:,} texts; plots -> {plots}",
          flush=True)  # fmt: skip
    return report


def _leaderboard(run: RunDir, meta: dict, report: dict) -> dict:
    """Every network (failed ones with the reason) beside the TF-IDF baseline, on accuracy."""
    failed = report["failed_networks"]
    models = {}
    for name in meta["networks"]:
        seconds = (training.fit_summary(run, name) or {}).get("seconds")
        if name in failed:
            models[name] = leaderboard.model_entry(
                leaderboard.NETWORK, train_seconds=seconds, status="failed", reason=failed[name]
            )
            continue
        entry = report["networks"][name]
        models[name] = leaderboard.model_entry(
            leaderboard.NETWORK, _headline(entry["test"]), _headline(entry["validation"]),
            seconds, history=run.path / f"history-{name}.csv",
        )  # fmt: skip
    if "baseline" in report:
        base = report["baseline"]
        models[BASELINE] = leaderboard.model_entry(
            leaderboard.BASELINE, _headline(base["test"]), _headline(base["validation"]),
            base["fit_seconds"],
        )  # fmt: skip
    # Multi-label accuracy (exact match) has its own history column; Keras's is per label.
    column = f"val_{EXACT_MATCH}" if meta["multi_label"] else "val_accuracy"
    return leaderboard.build("accuracy", True, models, meta["best"], history_column=column)


def _headline(metrics: dict) -> dict:
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def write_test_input(run: RunDir, data: tdata.TextData, cfg, delimiter: str) -> str:
    """The test texts as a scoring input (`score.id_column`, `score.text_column`, and the true
    label beside them) in the run folder; its name, relative to the run folder."""
    split = data.splits["test"]
    if data.multi_label:
        labels = [delimiter.join(np.array(data.class_names)[row.astype(bool)])
                  for row in split.labels]  # fmt: skip
    else:
        labels = [data.class_names[k] for k in split.labels]
    frame = pd.DataFrame({cfg.id_column: np.arange(1, len(split) + 1), cfg.text_column: split.texts,
                          "true_label": labels})  # fmt: skip
    with atomic_path(run.path / TEST_INPUT) as tmp:
        # Every text quoted: a lone \r in a text would otherwise end the row for CSV readers.
        frame.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return TEST_INPUT


def most_confidently_wrong(split, prob, names, multi: bool, count: int) -> pd.DataFrame:
    """The test texts the model got wrong with the highest confidence, most confident first."""
    if multi:
        predicted_sets = prob >= 0.5
        wrong = np.flatnonzero((predicted_sets != split.labels.astype(bool)).any(axis=1))
        confidence = np.abs(prob - 0.5).max(axis=1) + 0.5
        truth = [
            ";".join(n for n, on in zip(names, row, strict=True) if on) for row in split.labels
        ]
        guess = [
            ";".join(n for n, on in zip(names, row, strict=True) if on) for row in predicted_sets
        ]
    else:
        predicted = prob.argmax(axis=1)
        wrong = np.flatnonzero(predicted != split.labels)
        confidence = prob.max(axis=1)
        truth = [names[i] for i in split.labels]
        guess = [names[i] for i in predicted]
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    return pd.DataFrame({
        "text": [split.texts[i] for i in wrong],
        "true_label": [truth[i] for i in wrong],
        "predicted_label": [guess[i] for i in wrong],
        "confidence": np.round(confidence[wrong], 4),
    })  # fmt: skip


def _write_card(run: RunDir, meta: dict, report: dict) -> None:
    data = report["data"]
    splits = ", ".join(f"{s}: {v['texts']:,}" for s, v in data["splits"].items())
    columns = ["accuracy", "macro_f1", "macro_precision", "macro_recall"]
    rows = {f"{n} (test)": e["test"] for n, e in report["networks"].items()}
    if "baseline" in report:
        rows["TF-IDF + LR baseline (test)"] = report["baseline"]["test"]
    source = ", ".join(f"`{f}`" for f in data.get("files") or [data["source"]])
    failed = report["failed_networks"]
    failures = "".join(f" `{n}` failed ({why}) and is not used." for n, why in failed.items())
    verdict = ""
    if "beats_baseline" in report:
        verdict = "\n\n" + " ".join(
            f"`{n}` {'beats' if b else 'does NOT beat'} the TF-IDF baseline on test macro F1."
            for n, b in report["beats_baseline"].items()
        )
    write_model_card(
        run.card_path,
        "Text classifier: model card",
        {
            "Intended use": "Classifies a text into the classes it was trained on: "
            f"{', '.join(meta['class_names'])}"
            + (" (any number of them: multi-label)." if meta["multi_label"] else "."),
            "Data": f"Source {source} ({data['format']}); {data['rejected_rows']:,} row(s) "
            f"set aside at preparation; {data['replaced_bytes']:,} undecodable byte sequence(s) "
            f"replaced. Splits: {splits} "
            f"({'own splits: ' + ', '.join(data['own_splits']) if data['own_splits'] else 'stratified, seeded'}).",
            "Model": f"Networks trained: {', '.join(meta['networks'])}; the run's model is "
            f"`{meta['best']}` (lowest finite validation loss).{failures} Input: raw strings; "
            f"tokenization inside the model; texts longer than {meta['sequence_length']} tokens "
            f"are truncated (scoring flags them). Trained in {meta.get('train_seconds')}s "
            f"({', '.join(f'{n} {t}s' for n, t in (meta.get('network_seconds') or {}).items())}).",
            "Leaderboard (accuracy; every model beside the baseline, TF-IDF + logistic "
            "regression fit on the same training split)": leaderboard.to_markdown(
                report["leaderboard"]["classification"]
            ),
            "Metrics (test) beside the baseline": metrics_table(rows, columns) + verdict,
            "Per class (test, run's model)": metrics_table(
                report["test"]["per_class"], ["precision", "recall", "f1", "support"]
            ),
            "Limits": "Accuracy holds only for texts like the training texts (domain, length, "
            "language). A word never seen in training maps to the unknown token. Every text gets "
            "a class; there is no 'none of these' answer.",
        },
    )


# ---------------------------------------------------------------------------------------------
# score and export


class TextScorer:
    """Raw strings in -> predicted label, per-class probabilities and a truncation flag."""

    def __init__(self, run: RunDir, batch_size: int, threshold: float):
        self.meta = load_meta(run)
        self.model = load_model(run.model_path)
        self.names = self.meta["class_names"]
        self.length = self.meta["sequence_length"]
        self.batch_size, self.threshold = batch_size, threshold
        self.columns = ["id", "predicted_label", *[f"prob_{n}" for n in self.names],
                        "tokens", "truncated"]  # fmt: skip

    def tokens(self, texts: list[str]) -> np.ndarray:
        """Tokens each text has before truncation, as the model's own tokenizer counts them."""
        if is_hub_task(self.model):
            ids = self.model.preprocessor.tokenizer(tf.constant(texts))
            # A ragged tensor, or lists of ids where KerasHub converts eager outputs to Python.
            lengths = (
                ids.row_lengths().numpy() if hasattr(ids, "row_lengths") else list(map(len, ids))
            )
            return np.asarray(lengths) + 2  # [CLS] and [SEP]
        return np.array([len(PUNCTUATION.sub("", t.lower()).split()) for t in texts])

    def predict(self, ids: list[str], texts: list[str]) -> pd.DataFrame:
        prob = predict_texts(self.model, texts, self.batch_size)
        if self.meta["multi_label"]:
            label = [";".join(n for n, p in zip(self.names, row, strict=True) if p >= self.threshold)
                     for row in prob]  # fmt: skip
        else:
            label = [self.names[k] for k in prob.argmax(axis=1)]
        tokens = self.tokens(texts)
        frame = pd.DataFrame({"id": ids, "predicted_label": label})
        for k, name in enumerate(self.names):
            frame[f"prob_{name}"] = np.round(prob[:, k], 6)
        frame["tokens"] = tokens
        frame["truncated"] = tokens > self.length
        return frame


def _check_text(value) -> str:
    """'' for a text to score, else why it cannot be scored."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing text"
    if not isinstance(value, str):
        return f"text is not a string ({type(value).__name__})"
    if value == "":
        return "empty text"
    if not value.strip():
        return "whitespace-only text"
    return ""


def iter_inputs(path: Path, text_column: str, id_column: str, chunk_rows: int):
    """Chunks of (ids, raw values) from CSV/TSV (header), JSONL or .txt (one text per line)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        first = True
        for chunk in iter_table_chunks(path, chunk_rows):
            if first and text_column not in chunk.columns:
                raise DataError(f"{path}: no text column {text_column!r} (columns: "
                                f"{', '.join(map(str, chunk.columns[:12]))}); set score.text_column")  # fmt: skip
            first = False
            ids = chunk[id_column].tolist() if id_column in chunk.columns else None
            yield ids, chunk[text_column].tolist()
        return
    if suffix not in (".jsonl", ".json", ".txt"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected .csv, .tsv, .jsonl "
                        "or .txt (one text per line)")  # fmt: skip
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text, _ = tdata.read_text_file(path)
    lines = tdata.lines_of(text)  # \n or \r\n end a text; U+0085 or U+2028 inside one do not
    for begin in range(0, len(lines), chunk_rows):
        part = lines[begin : begin + chunk_rows]
        if suffix == ".txt":
            yield None, part
            continue
        ids, values = [], []
        for line in part:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                row = f"not valid JSON ({exc.msg})"
            if isinstance(row, dict):
                ids.append(row.get(id_column))
                values.append(row.get(text_column))
            else:
                ids.append(None)
                values.append(_JsonProblem(row if isinstance(row, str) and line.strip()
                                           else "not a JSON object"))  # fmt: skip
        yield ids, values


@dataclasses.dataclass
class _JsonProblem:
    reason: str


def score(config: Config, options) -> dict:
    """Texts in (CSV/TSV/JSONL/.txt) -> predictions CSV and rejects CSV, both atomic."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    path = Path(options.input)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    output, rejects = default_output_paths(path, options.output, options.rejects)
    scorer = TextScorer(run, config.score.batch_size, config.score.threshold)
    counts, truncated, replaced = ScoreCounts(), 0, 0
    meter = Progress(f"scoring {path.name}")
    cfg = config.score
    with (
        atomic_path(output) as out_tmp,
        atomic_path(rejects) as rej_tmp,
        open(out_tmp, "w", encoding="utf-8", newline="") as out,
        open(rej_tmp, "w", encoding="utf-8", newline="") as rej,
    ):
        rej_writer = csv.writer(rej)
        rej_writer.writerow(["row", "id", "reason"])
        header = True
        for ids, values in iter_inputs(path, cfg.text_column, cfg.id_column, cfg.chunk_rows):
            rows = range(counts.rows + 1, counts.rows + 1 + len(values))
            ids = [str(i) if i not in (None, "") else str(r) for i, r in
                   zip(ids or [None] * len(values), rows, strict=True)]  # fmt: skip
            good_rows, good_ids, good_texts = [], [], []
            for row, key, value in zip(rows, ids, values, strict=True):
                reason = value.reason if isinstance(value, _JsonProblem) else _check_text(value)
                if reason:
                    rej_writer.writerow([row, key, reason])
                    counts.rejected += 1
                else:
                    good_rows.append(row)
                    good_ids.append(key)
                    good_texts.append(value)
                    replaced += value.count("\ufffd")
            if good_texts:
                frame = scorer.predict(good_ids, good_texts)
                frame.insert(0, "row", good_rows)
                finite, why = finite_outputs(frame)
                for row, key, reason in zip(frame["row"][~finite], frame["id"][~finite],
                                            why[~finite], strict=True):  # fmt: skip
                    rej_writer.writerow([row, key, reason])
                counts.rejected += int((~finite).sum())
                frame = frame[finite]
                frame.to_csv(out, index=False, header=header)
                header = False
                counts.scored += len(frame)
                truncated += int(frame["truncated"].sum())
            counts.rows += len(values)
            meter.update(counts.rows)
        if header:
            pd.DataFrame(columns=["row", *scorer.columns]).to_csv(out, index=False)
    print_counts(counts, output, rejects)
    if truncated:
        print(f"note: {truncated:,} text(s) longer than {scorer.length} tokens were truncated "
              "(truncated=True)", flush=True)  # fmt: skip
    if replaced:
        print(f"note: {replaced:,} undecodable byte sequence(s) in the scored texts were replaced "
              "by U+FFFD", flush=True)  # fmt: skip
    return {"rows": counts.rows, "scored": counts.scored, "rejected": counts.rejected,
            "truncated": truncated, "output": str(output), "rejects": str(rejects)}  # fmt: skip


def export(config: Config, options) -> Path:
    """Write the run's model as a TensorFlow SavedModel (serving signature: raw strings in)."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    model = load_model(run.model_path)
    with atomic_dir(target) as tmp:
        export_saved_model(model, str(tmp))
    print(f"export: SavedModel -> {target} (input: a batch of raw strings)", flush=True)
    return target
