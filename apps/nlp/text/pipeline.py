"""The text app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.nlp.text import blend, card, metrics
from apps.nlp.text import data as tdata
from apps.nlp.text import pretrain as ptrain
from apps.nlp.text.config import Config
from apps.nlp.text.model import (
    BUILDERS,
    INPUT,
    VECTORIZE,
    VECTORIZER_MAKERS,
    Meta,
    build_bert,
    build_fasttext,
    build_transformer,
    fit_baseline,
    is_hub_task,
    load_encoder,
    load_model,
    load_network,
    make_char_vectorizer,
    predict_texts,
    vectorizer_kind,
    vectorizer_names,
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
MACRO_F1 = "macro_f1"  # evaluate.metric macro_f1: the history column val_macro_f1
BASELINE = "tfidf_logreg"  # the baseline's name in the leaderboard
BLEND = "blend"  # models/blend.keras, and the name meta.best takes when the blend ships
TFIDF_KERAS = "tfidf_keras"  # the blend's TF-IDF + LR half, as Keras layers: models/<this>.keras
TFIDF_CHARS = blend.CHARS_NAME  # its character n-gram TF-IDF + LR member: models/<this>.keras
BEFORE_REFIT = "validation_before_refit.json"  # the validation reports from before a refit
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

    scores: dict[str, float] = dataclasses.field(default_factory=dict)  # val loss, best epoch
    selection: dict[str, float] = dataclasses.field(default_factory=dict)  # what picks (monitor)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    compiled: dict[str, bool] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    best: keras.Model | None = None
    models: dict[str, keras.Model] = dataclasses.field(default_factory=dict)  # every one trained
    refit: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> epochs refitted


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
        vectorizers = Vectorizers(config.model, train_split.texts)
    fits = _fit_networks(networks, config, run, strategy, vectorizers, data)
    best = training.best_network(fits.selection, monitor_of(config, data)[1])
    if best is None:
        training.fail_run(run, card.CARD_TITLE, fits.failed)
    blended, blend_model = _blend(config, run, fits, best, data)
    refit = refits(config, data)
    if refit:
        _keep_validation(config, run, data, fits, blend_model)
        blend_model = _refit(config, run, strategy, vectorizers, data, fits, blended)
    shipped = blend_model if blended and blended["selected"] else fits.best
    total = time.perf_counter() - start
    meta = _meta(config, data, networks, best, fits, round(total, 1), policy)
    meta.blend, meta.best = blended, BLEND if blended and blended["selected"] else best
    meta.metric = run_metric(config, data)
    steps.save_model(run, shipped, meta, write_saved_model)
    note = f"; failed: {', '.join(fits.failed)}" if fits.failed else ""
    print(
        f"train: finished in {total:.0f}s; best network on validation: {best}{note}; the run's "
        f"model: {meta.best}; weights sha256 {training.weights_digest(shipped)}; model -> "
        f"{run.model_path}",
        flush=True,
    )
    return run


def _blend(config: Config, run: RunDir, fits: Fits, best: str, data):
    """Fit the TF-IDF model and the blend of it with every network that trained
    (models/tfidf_keras.keras, models/blend.keras); the weights, and whether the blend beat the
    best network on the validation metric (`evaluate.metric`), and the blended model. Nothing
    ({}, None) when off or when only a KerasHub task trained (its tokenizer runs outside its
    graph, so one model cannot hold it and the rest)."""
    networks = {n: m for n, m in fits.models.items() if not is_hub_task(m)}
    if not config.model.blend or not networks:
        return {}, None
    val, batch = data.splits["val"], config.score.batch_size
    network_val = {n: predict_texts(m, val.texts, batch) for n, m in networks.items()}
    fitted = blend.fit_blend(config.model, network_val, data)
    linear = blend.members(fitted)
    model = blend.build_blend(networks | linear, fitted.weights)
    blend_val = predict_texts(model, val.texts, batch)
    reference = network_val.get(best)
    if reference is None:  # the best network is a KerasHub task
        reference = predict_texts(fits.models[best], val.texts, batch)
    metric = run_metric(config, data)
    reports = {
        key: metrics.split_report(val.labels, prob, data.class_names, data.multi_label)
        for key, prob in (("network", reference), ("blend", blend_val))
    }
    scores = {key: r[metric] for key, r in reports.items()}
    if run.is_chief:
        for key, keep in (linear | {BLEND: model}).items():
            with atomic_path(run.subdir("models") / f"{key}.keras", suffix=".keras") as tmp:
                keep.save(tmp)
    selected = scores["blend"] > scores["network"]
    mix = " + ".join(f"{w:g} x {n}" for n, w in fitted.weights.items() if w > 0)
    chars_c = "" if fitted.chars is None else f", characters C={fitted.chars_C:g}"
    print(
        f"train: blend {mix} (TF-IDF C={fitted.C:g}{chars_c}): validation {metric} "
        f"{scores['blend']:.4f} vs {best} {scores['network']:.4f}; "
        f"{'the blend ships' if selected else f'{best} ships'} ({fitted.seconds:.1f}s)",
        flush=True,
    )
    info = {
        "weights": fitted.weights,
        "C": fitted.C,
        "chars_C": fitted.chars_C,  # the character member's C (None: no such member)
        "metric": metric,
        "validation_score": round(scores["blend"], 5),
        "network_validation_score": round(scores["network"], 5),
        "validation_accuracy": round(reports["blend"]["accuracy"], 5),
        "network_validation_accuracy": round(reports["network"]["accuracy"], 5),
        "seconds": fitted.seconds,
        "selected": bool(selected),
    }
    return info, model


def monitor_of(config: Config, data: tdata.TextData) -> tuple[str, str]:
    """The history column early stopping watches and its mode (`train.monitor`): val_loss
    (min), or the run's metric on validation (max): val_accuracy, val_macro_f1, or for
    multi-label data val_exact_match."""
    if config.train.monitor == "loss":
        return "val_loss", "min"
    return metric_column(run_metric(config, data), data.multi_label), "max"


def metric_column(metric: str, multi_label: bool) -> str:
    """The history column of the run's metric (macro F1 and multi-label accuracy, the exact
    match of the label set, have their own; Keras's multi-label accuracy is per label)."""
    if metric == MACRO_F1:
        return f"val_{MACRO_F1}"
    return f"val_{EXACT_MATCH}" if multi_label else "val_accuracy"


def best_epoch(history: pd.DataFrame, column: str, mode: str) -> int:
    """The (0-based) epoch early stopping keeps: the first best of `column`; NaNs never."""
    values = history[column].astype(float)
    if not values.notna().any():
        return 0
    return int(values.idxmin() if mode == "min" else values.idxmax())


def refits(config: Config, data: tdata.TextData) -> bool:
    """Whether the shipped models are refitted on train + validation: `train.refit`, or a
    training split of fewer than `train.refit_below` texts."""
    return config.train.refit or len(data.splits["train"]) < config.train.refit_below


def _keep_validation(config: Config, run: RunDir, data, fits: Fits, blend_model) -> None:
    """Before a refit: every model's validation report (networks, the blend and its linear
    members) into validation_before_refit.json, which evaluate reports as their validation
    scores; the refitted models have seen the validation texts."""
    val, batch = data.splits["val"], config.score.batch_size
    models = dict(fits.models)
    if blend_model is not None:
        models[BLEND] = blend_model
        for name in (TFIDF_KERAS, TFIDF_CHARS):
            if (run.path / "models" / f"{name}.keras").exists():
                models[name] = load_network(run, name)
    reports = {
        name: metrics.split_report(
            val.labels, predict_texts(model, val.texts, batch), data.class_names, data.multi_label
        )
        for name, model in models.items()
    }
    if run.is_chief:
        write_json(run.path / BEFORE_REFIT, reports)


def run_metric(config: Config, data: tdata.TextData) -> str:
    """The run's metric (`evaluate.metric`; auto: by the training labels' class balance)."""
    train = data.splits["train"]
    return metrics.primary_metric(config.evaluate.metric, train.labels, data.multi_label)


class Vectorizers:
    """The vectorizers the networks share, each adapted on the training texts once, when the
    first network that reads it is built (`vectorizer_kind`: token ids, the n-gram TF-IDF bag
    of fasttext, character ids of char_cnn), or a pretrained encoder's own (model.pretrained)."""

    def __init__(self, config, texts: list[str]):
        self.config, self.texts, self.made = config, texts, {}

    def __getitem__(self, network: str):
        pretrained = network == "transformer" and self.config.pretrained
        kind = "encoder" if pretrained else vectorizer_kind(network)
        if kind not in self.made:
            self.made[kind] = self._make(kind)
        return self.made[kind]

    def chars(self):
        """fasttext's character n-gram bag (None when model.bag_char_ngrams is 0)."""
        if "chars" not in self.made:
            self.made["chars"] = make_char_vectorizer(self.config, self.texts), None
            if self.made["chars"][0] is not None:
                size = self.made["chars"][0].vocabulary_size()
                print(f"train: {size:,} character n-grams in the fasttext bag", flush=True)
        return self.made["chars"][0]

    def _make(self, kind: str):
        if kind == "encoder":
            encoder = load_encoder(self.config.pretrained)
            vectorizer = encoder.get_layer(VECTORIZE)
            print(f"train: transformer starts from {self.config.pretrained}", flush=True)
            return vectorizer, encoder
        make, what = VECTORIZER_MAKERS[kind]
        vectorizer = make(self.config, self.texts)
        print(
            f"train: vocabulary of {vectorizer.vocabulary_size():,} {what} from "
            f"{len(self.texts):,} training texts",
            flush=True,
        )
        return vectorizer, None


def _fit_networks(networks: list[str], config: Config, run: RunDir, strategy, vectorizers, data):
    """Fit each network in turn; each that trains to a finite validation loss is saved as
    models/<name>.keras. Scores come from fit's own validation, which every worker computes on
    the whole split alike."""
    fits = Fits()
    start = time.perf_counter()
    for k, name in enumerate(networks):
        began = time.perf_counter()
        minutes = network_minutes(config.train, (began - start) / 60, len(networks) - k)
        try:
            model, fits.compiled[name] = _fit_network(
                name, config, run, strategy, vectorizers, data, minutes=minutes
            )
        except training.Diverged as exc:
            fits.failed[name] = (
                f"diverged: {exc.what} at epoch {exc.epoch} (learning rate {exc.learning_rate:.3g})"
            )
            continue
        finally:
            fits.seconds[name] = round(time.perf_counter() - began, 1)
        history = pd.read_csv(run.path / f"history-{name}.csv")
        column, mode = monitor_of(config, data)
        epoch = best_epoch(history, column, mode)
        fits.scores[name] = score = round(float(history["val_loss"].iloc[epoch]), 5)
        fits.selection[name] = round(float(history[column].iloc[epoch]), 5)
        if not np.isfinite(score):
            fits.failed[name] = "no finite validation loss"
            print(f"train: {name} failed: {fits.failed[name]}", flush=True)
            continue
        if run.is_chief:
            with atomic_path(run.subdir("models") / f"{name}.keras", suffix=".keras") as tmp:
                model.save(tmp)
        shown = "" if column == "val_loss" else f", {column} {fits.selection[name]:.4f}"
        print(
            f"train: {name} validation loss {score:.4f}{shown} at epoch {epoch + 1} "
            f"({fits.seconds[name]}s)",
            flush=True,
        )
        fits.models[name] = model
        if training.best_network(fits.selection, mode) == name:
            fits.best = model
    return fits


def network_minutes(cfg, elapsed: float, remaining: int) -> float:
    """`train.max_minutes` for the next of `remaining` networks, `elapsed` minutes into the
    networks' training: an equal share of what is left of `train.budget_minutes` (a network
    that stopped early leaves its time to the next), at most `train.max_minutes` when set;
    `train.max_minutes` alone when there is no run budget (0: no limit)."""
    if not cfg.budget_minutes:
        return cfg.max_minutes
    share = max(cfg.budget_minutes - elapsed, 0.0) / max(remaining, 1)
    share = max(share, 0.01)  # 0 would mean no limit: a spent budget still stops after an epoch
    return min(share, cfg.max_minutes) if cfg.max_minutes else share


def _fit_network(
    name: str,
    config: Config,
    run: RunDir,
    strategy,
    vectorizers,
    data,
    refit_epochs: int = 0,
    minutes: float | None = None,
):
    """Build, compile and fit one network (raises training.Diverged); (model, ran under XLA).

    With `refit_epochs`, a fresh one is fitted on train + validation for that many epochs, with
    no validation and no early stopping (`train.refit`), its files named `<name>_refit`.
    """
    hub = name == "bert"
    n_classes, multi = len(data.class_names), data.multi_label
    cfg, fit_name, train_split, val_split = _fit_plan(name, config, data, refit_epochs, minutes)
    train_ds = tdata.make_dataset(train_split, cfg.batch_size, True, config.train.seed, hub)
    val_ds = val_split and tdata.make_dataset(
        val_split, config.score.batch_size, False, config.train.seed, hub
    )
    with strategy.scope():
        model = _build(name, config, vectorizers, n_classes, multi)
        # String ops do not compile with XLA: under `xla` the vectorizer runs in tf.data.
        # fastText's bags are not split: Keras infers (batch, 1, vocabulary) for a TF-IDF
        # TextVectorization on the (batch, 1) text input where it yields (batch, vocabulary),
        # so the compiled core would refuse its own input; fastText trains without XLA (and
        # model_meta says so) until the text input is reshaped.
        unsplit = hub or name == "fasttext"
        head, core = (
            (None, model) if unsplit else training.xla_split(model, cfg, vectorizer_names(model))
        )
        if unsplit and cfg.xla and not hub:
            print(f"train: {name} trains without XLA (its bag vectorizers stay in the model)")
        _compile(core, cfg, len(train_split), multi, config.model.clipnorm)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    print(
        f"train: {fit_name} ({model.count_params():,} parameters) on {len(train_split):,} "
        f"texts, {n_classes} classes, learning rate {cfg.learning_rate:g}",
        flush=True,
    )
    monitor, mode = ("loss", "min") if refit_epochs else monitor_of(config, data)
    training.fit(
        core,
        train_ds,
        val_ds,
        run,
        cfg,
        fit_name,
        monitor,
        mode,
        class_weight=class_weights(config, train_split, data),
        examples=len(train_split),
        scores=_epoch_scores(model, config, data, val_split) if val_split else (),
    )
    return model, bool(core.jit_compile)


def _fit_plan(name: str, config: Config, data, refit_epochs: int, minutes: float | None):
    """(train config, file name, train split, validation split) of one network's fit: its
    share of the run budget as `max_minutes`; a refit on train + validation for
    `refit_epochs` epochs, without validation or early stopping, named `<name>_refit`."""
    train_split, val_split = data.splits["train"], data.splits["val"]
    cfg, fit_name = network_train_config(name, config), name
    if minutes is not None:  # this network's share of the run budget (network_minutes)
        cfg = dataclasses.replace(cfg, max_minutes=round(minutes, 3))
    if refit_epochs:
        train_split = tdata.Split(
            train_split.texts + val_split.texts,
            np.concatenate([train_split.labels, val_split.labels]),
        )
        cfg = dataclasses.replace(cfg, epochs=refit_epochs, patience=0)
        val_split, fit_name = None, f"{name}_refit"
    return cfg, fit_name, train_split, val_split


def _epoch_scores(model, config: Config, data, val_split) -> list:
    """The validation scores Keras does not log, per epoch, so that time to baseline is read
    in the leaderboard's own metric: the exact match of the label set (multi-label), or macro
    F1 when it is the run's metric."""
    batch, names, multi = config.score.batch_size, data.class_names, data.multi_label
    scores = []
    if multi:
        scores.append(
            training.EpochScore(EXACT_MATCH, lambda _: _exact_match(model, val_split, batch))
        )
    if run_metric(config, data) == MACRO_F1:

        def macro_f1(_):
            prob = predict_texts(model, val_split.texts, batch)
            return metrics.split_report(val_split.labels, prob, names, multi)[MACRO_F1]

        scores.append(training.EpochScore(MACRO_F1, macro_f1))
    return scores


def class_weights(config: Config, split: tdata.Split, data) -> dict[int, float] | None:
    """`train.class_weight` of the training labels (shared.training.class_weights); None for
    multi-label data, which has no single class per text."""
    if data.multi_label:
        return None
    return training.class_weights(split.labels, config.train.class_weight)


def _refit(config: Config, run: RunDir, strategy, vectorizers, data, fits: Fits, blended):
    """`train.refit`: each network the run ships (the best, or those the blend gives a share)
    trained again on train + validation for its best epoch count on validation, replacing
    models/<name>.keras; the blend rebuilt from them with the same weights and its TF-IDF half
    refitted with the same C. The blended model, or None without a blend."""
    weights = blended.get("weights", {})
    names = [n for n, w in weights.items() if w > 0 and n in fits.models] or [
        n for n, m in fits.models.items() if m is fits.best
    ]
    for name in names:
        history = pd.read_csv(run.path / f"history-{name}.csv")
        epochs = best_epoch(history, *monitor_of(config, data)) + 1
        model, _ = _fit_network(name, config, run, strategy, vectorizers, data, epochs)
        fits.refit[name] = epochs
        if fits.models[name] is fits.best:
            fits.best = model
        fits.models[name] = model
        if run.is_chief:
            with atomic_path(run.subdir("models") / f"{name}.keras", suffix=".keras") as tmp:
                model.save(tmp)
    if not blended:
        return None
    train, val = data.splits["train"], data.splits["val"]
    joined = tdata.Split(train.texts + val.texts, np.concatenate([train.labels, val.labels]))
    linear = {TFIDF_KERAS: blend.refit_tfidf(config.model, joined, blended["C"], data)}
    if blended.get("chars_C"):
        chars = blend.refit_tfidf(config.model, joined, blended["chars_C"], data, chars=True)
        linear[TFIDF_CHARS] = chars
    model = blend.build_blend({**fits.models, **linear}, weights)
    if run.is_chief:
        for key, keep in (linear | {BLEND: model}).items():
            with atomic_path(run.subdir("models") / f"{key}.keras", suffix=".keras") as tmp:
                keep.save(tmp)
    return model


def _build(name: str, config: Config, vectorizers, n_classes: int, multi_label: bool):
    if name == "bert":
        return build_bert(config.model, n_classes, multi_label)
    vectorizer, encoder = vectorizers[name]
    if name == "transformer":
        model_cfg = config.model
        if encoder is not None:  # the pretrained encoder's shape, whatever model.* says
            shape = ptrain.pretrained_shape(config.model.pretrained)
            model_cfg = dataclasses.replace(model_cfg, **shape)
        return build_transformer(model_cfg, vectorizer, n_classes, multi_label, encoder)
    if name == "fasttext":
        chars = vectorizers.chars()
        return build_fasttext(config.model, vectorizer, n_classes, multi_label, chars)
    return BUILDERS[name](config.model, vectorizer, n_classes, multi_label)


def network_train_config(name: str, config: Config):
    """train.* for one network: its own peak rate, and the Transformer's own warm-up."""
    cfg = dataclasses.replace(
        config.train, learning_rate=config.model.rate(name, config.train.learning_rate)
    )
    if name == "transformer":
        warmup = max(cfg.warmup_epochs, config.model.transformer_warmup_epochs)
        cfg = dataclasses.replace(cfg, warmup_epochs=warmup)
    return cfg


def _compile(model, cfg, n_train: int, multi_label: bool, clipnorm: float) -> None:
    if multi_label:
        loss, metric = "binary_crossentropy", keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss = "sparse_categorical_crossentropy"
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    training.compile_model(model, cfg, n_train, loss, [metric])
    if clipnorm:
        # The shared optimizer has no clipping switch; the attribute is read when the train
        # step is traced, after compile. A loss-scale wrapper clips in its inner optimizer.
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        optimizer.clipnorm = clipnorm


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
        refit=fits.refit,
    )


# ---------------------------------------------------------------------------------------------
# pretrain


def pretrain(config: Config, options: StepOptions | None = None) -> RunDir:
    """Masked-token pretraining of the Transformer encoder on the training texts and the
    unlabelled files of `data.unlabelled_path`, in a run folder of its own (`pretrain-<time>`
    unless run.run_id names one): encoder.keras and pretrain.json. `train --set
    model.pretrained=<that folder>` fine-tunes from it; the run never becomes `latest`."""
    run_id = config.run.run_id or "pretrain-" + time.strftime("%Y%m%d-%H%M%S")
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, run_id=run_id))
    run, _, _, data = training.start_run(APP, config, prepare)
    extra = ptrain.unlabelled_texts(config.data)
    texts = data.splits["train"].texts + extra
    print(
        f"pretrain: masking {config.pretrain.mask_rate:.0%} of the tokens of "
        f"{len(data.splits['train']):,} training and {len(extra):,} unlabelled texts, "
        f"{config.pretrain.epochs} epoch(s)",
        flush=True,
    )
    encoder, history, seconds = ptrain.fit_encoder(config, texts)
    loss = [round(float(v), 5) for v in history["loss"]]
    info = {"texts": len(texts), "unlabelled_texts": len(extra), "seconds": seconds}
    if run.is_chief:
        ptrain.save(run, encoder, config.model, info | {"loss": loss})
    print(
        f"pretrain: masked-token loss {loss[0]:.3f} -> {loss[-1]:.3f} in {seconds:.0f}s; "
        f"encoder -> {run.path / ptrain.ENCODER}; fine-tune with "
        f"--set model.pretrained={run.path}",
        flush=True,
    )
    return run


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
    report["test"] = shown_models(report)[meta.best]["test"]
    report["validation"] = shown_models(report)[meta.best]["validation"]
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.train_seconds
    report["network_seconds"] = meta.network_seconds
    if "baseline" in report:
        base_f1 = report["baseline"]["test"]["macro_f1"]
        report["beats_baseline"] = {
            n: e["test"]["macro_f1"] > base_f1 for n, e in shown_models(report).items()
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
    """The report's start (every network that trained, the blend and its TF-IDF half, on test
    and validation) and the run's model's test probabilities."""
    report = {"primary_metric": meta.metric, "best": meta.best, "networks": {}}
    names = [n for n in meta.networks if n not in meta.failed_networks]
    models = names + ([BLEND, TFIDF_KERAS] if meta.blend else [])
    if meta.blend.get("chars_C"):
        models.append(TFIDF_CHARS)
    best_test_prob = None
    before = run.path / BEFORE_REFIT  # refitted models saw the validation texts: their own
    before = read_json(before) if meta.refit and before.exists() else {}
    for name in models:
        model = load_network(run, name)
        entry = {}
        for split, key in (("test", "test"), ("val", "validation")):
            prob = predict_texts(model, data.splits[split].texts, batch)
            entry[key] = metrics.split_report(
                data.splits[split].labels, prob, meta.class_names, meta.multi_label
            )
            if (name, split) == (meta.best, "test"):
                best_test_prob = prob
        if name in before:  # scored before the refit, out of sample (the test scores after)
            entry["validation"] = before[name]
        if name == BLEND:
            report[BLEND] = entry | {"of": meta.blend}
        elif name in (TFIDF_KERAS, TFIDF_CHARS):
            report[name] = entry
        else:
            report["networks"][name] = entry
    report["failed_networks"] = meta.failed_networks
    return report, best_test_prob


def shown_models(report: dict) -> dict:
    """The models a run can ship, by name: every network that trained, and the blend."""
    return report["networks"] | ({BLEND: report[BLEND]} if BLEND in report else {})


def _baseline_report(data: tdata.TextData) -> dict:
    """The TF-IDF + logistic regression baseline on test and validation."""
    prob, seconds, C = fit_baseline(data)
    names, multi = data.class_names, data.multi_label
    return {
        "model": f"TF-IDF (1-2 grams, sublinear tf) + logistic regression (C={C:g} on validation)",
        "test": metrics.split_report(data.splits["test"].labels, prob["test"], names, multi),
        "validation": metrics.split_report(data.splits["val"].labels, prob["val"], names, multi),
        "fit_seconds": round(seconds, 2),
    }


def _leaderboard(run: RunDir, meta: Meta, report: dict) -> dict:
    """Every network (failed ones with the reason) beside the TF-IDF baseline, on the run's
    metric (accuracy, or macro F1 for imbalanced classes: `evaluate.metric`)."""
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
    if BLEND in report:
        entry = report[BLEND]
        models[BLEND] = leaderboard.model_entry(
            leaderboard.BLEND,
            _headline(entry["test"]),
            _headline(entry["validation"]),
            meta.blend["seconds"],
        )
    baselines = {}
    if "baseline" in report:
        baselines[BASELINE] = report["baseline"]
    for name in (TFIDF_KERAS, TFIDF_CHARS):  # the blend's linear members, baselines of their own
        if name in report:
            baselines[name] = report[name] | {"fit_seconds": meta.blend["seconds"]}
    models |= leaderboard.baseline_entries(baselines, ("accuracy", "macro_f1"))
    column = metric_column(meta.metric, meta.multi_label)
    return leaderboard.build(meta.metric, True, models, meta.best, history_column=column)


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
