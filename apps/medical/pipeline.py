"""The medical app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import functools
import time
from pathlib import Path

import keras
import numpy as np

from apps.medical import data as mdata
from apps.medical.card import CARD_TITLE, evaluate_summary, train_summary, write_card
from apps.medical.config import Config
from apps.medical.metrics import (
    AUC,
    auc_of,
    calibration_pairs,
    decision_classes,
    medmnist_accuracy,
    onehot_of,
    split_report,
)
from apps.medical.model import (
    LOGITS,
    SERVED_INPUT,
    Meta,
    OperatingPoint,
    build_model,
    load_model,
    logits_model,
    set_temperature,
    write_saved_model,
)
from apps.medical.plots import plot_evaluation
from apps.medical.recipe import NAME as RECIPE
from apps.medical.recipe import evaluate_recipe, fit_recipe
from apps.medical.sample import write_sample
from apps.medical.scorer import MedicalScorer, score_files
from shared import evaluation as ev
from shared import leaderboard, lr_find, training, tta
from shared.calibration import choose_temperature, negative_log_likelihood, scaled_probabilities
from shared.export import TFLITE_MODES, export_tflite_modes, resized_uint8
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, atomic_path, read_json, write_json, write_text
from shared.pixel_baseline import NAME as BASELINE
from shared.pixel_baseline import (
    PixelLogisticRegression,
    load_fitted,
    pixel_features,
    save_fitted,
    subsample,
)
from shared.run import RunDir
from shared.scoring import default_output_paths, expand_inputs, print_counts
from shared.steps import (
    StepOptions,
    export_step,
    locate,
    open_run,
    prepared_folder,
    report_rejects,
    save_model,
)

APP = "medical"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
GENERATED_SIZE = 64  # the sample generator's image size (the model resizes to data.image_size)
THRESHOLD_MARGIN = 1e-6  # operating thresholds sit this far below the validation score chosen
TTA_SUFFIX = "_tta"  # the leaderboard row of the network under test-time augmentation
TEST_NPZ, TEST_LIST = "test_split.npz", "test_split.txt"  # the test split as `score` reads it


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options: StepOptions | None = None) -> mdata.MedicalData:
    """Generate the sample if configured, read, split by patient, check; cached per input."""
    cfg = config.data
    if cfg.source == "generated":
        write_sample(cfg.path, cfg.generated_images, GENERATED_SIZE, cfg.generated_seed)
    source = Path(cfg.path)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (data.path)")
    folder = prepared_folder(APP, config, [source])
    if mdata.is_prepared(folder):
        data = mdata.load_prepared(folder)
        print(f"prepare: using the prepared arrays in {folder}", flush=True)
    else:
        data = _read(source, folder, config)
    report_rejects(data.rejects, folder)
    data.folder = folder
    return data


def _read(source: Path, folder: Path, config: Config) -> mdata.MedicalData:
    """Read and split `source`, and (the chief) save it in the prepared `folder`."""
    cfg, start = config.data, time.perf_counter()
    options = mdata.ReadOptions(
        image_size=tuple(cfg.image_size),
        channels=cfg.channels,
        window=cfg.window,
        max_pixels=cfg.max_image_pixels,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=config.train.seed,
        allow_patient_overlap=cfg.allow_patient_overlap,
        split_column=cfg.split_column,
        dev_split=cfg.dev_split,
    )
    data = mdata.read(source, cfg.format, options)
    if training.is_chief():
        mdata.save_prepared(folder, data, source)
    counts = ", ".join(f"{s} {len(p):,}" for s, p in data.splits.items())
    leak = data.leakage
    print(
        f"prepare: {sum(len(p) for p in data.splits.values()):,} images, {data.task} task "
        f"({', '.join(data.class_names)}), {data.channels} channel(s) from {source} "
        f"({data.format}) in {time.perf_counter() - start:.1f}s; {counts}; patients known "
        f"{leak['patients_known']:,}, in two splits {leak['overlapping_patients']}",
        flush=True,
    )
    return data


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit the network, fit the temperature and the operating point on validation, save both."""
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    start = time.perf_counter()
    model, core, found = _fit_network(run, strategy, data, config)
    seconds = time.perf_counter() - start
    if run.is_chief and config.baseline.enabled:
        fit_baseline(config, data, run)
        if config.baseline.recipe_cnn:
            fit_recipe(config, data, run)
    meta = Meta(
        app=APP,
        prepared=str(data.folder),
        input=SERVED_INPUT,
        train_seconds=round(seconds, 1),
        precision_policy=policy,
        xla_compiled=bool(core.jit_compile),
        task=data.task,
        class_names=data.class_names,
        image_size=list(config.data.image_size),
        channels=data.channels,
        window=config.data.window,
        architecture=config.model.architecture,
        backbone=config.model.backbone or None,
        **calibrate(model, data.splits["val"], data, config),
        lr_find=found,
    )
    save_model(run, model, meta, functools.partial(write_saved_model, meta=meta))
    print(train_summary(meta, seconds, training.weights_digest(model), run), flush=True)
    return run


def _fit_network(run: RunDir, strategy, data: mdata.MedicalData, config: Config):
    """Build and fit the configured network; returns it and the core `fit` trained (the same
    model, or its part after the augmentation head under XLA)."""
    cfg, multilabel = config.train, data.task == "multilabel"
    trainset, valset = data.splits["train"], data.splits["val"]
    train_ds = in_memory_dataset(trainset.images, trainset.labels, cfg.batch_size, True, cfg.seed)
    # Validation in training-sized batches: with several workers Keras builds the model from
    # one batch split between them, and a batch larger than the split would split unevenly.
    val_ds = in_memory_dataset(valset.images, valset.labels, cfg.batch_size, False)
    with strategy.scope():
        model = build_model(
            config.model,
            config.augment,
            len(data.class_names),
            config.data.image_size,
            data.channels,
            multilabel,
        )
        # Random augmentation does not compile with XLA: under `xla` it runs in tf.data.
        head, core = training.xla_split(model, cfg, ["augment"])
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    if cfg.mixup:  # blended images and (one- or multi-hot) targets; validation one-hot
        n_classes = len(data.class_names)
        train_ds = training.soft_targets(train_ds, n_classes, cfg.mixup, cfg.seed, multilabel)
        val_ds = training.soft_targets(val_ds, n_classes, multilabel=multilabel)
    # `train.lr_find`: a range test on the uncompiled core sets the peak rate first.
    loss = _loss(multilabel, bool(cfg.mixup))
    name = config.model.architecture
    config.train, found = lr_find.find_for_run(run, core, train_ds, cfg, loss, name)
    cfg = config.train
    with strategy.scope():
        _compile(core, cfg, len(trainset), multilabel)
    weights = (
        None if multilabel else training.class_weights(trainset.labels, config.model.class_weight)
    )
    shown = {k: round(v, 3) for k, v in weights.items()} if weights else None
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on {len(trainset):,} images, "
        f"{data.task} over {', '.join(data.class_names)}; class weights {shown}",
        flush=True,
    )
    monitor, mode, epoch_auc = _auc_monitor(model, data, config)
    try:
        training.fit(
            core,
            train_ds,
            val_ds,
            run,
            cfg,
            config.model.architecture,
            monitor,
            mode,
            class_weight=weights,
            examples=len(trainset),
            scores=[epoch_auc],
        )
    except training.Diverged as exc:  # one network per run: nothing is left to ship
        training.fail_run(run, CARD_TITLE, {config.model.architecture: str(exc)})
    return model, core, found


def _auc_monitor(model: keras.Model, data: mdata.MedicalData, config: Config):
    """(monitor, mode, epoch score): MedMNIST selects the checkpoint on validation AUC, logged
    each epoch; a validation split of one class has none, and then the loss decides."""
    valset = data.splits["val"]
    positive = mdata.positive_index(data.class_names, config.data.negative_class)
    # The full model, not the core `fit` trains: it takes the raw images (weights are shared).
    epoch_auc = training.EpochScore(
        AUC,
        lambda _: auc_of(
            _predict(model, valset.images, config.score.batch_size),
            valset.labels,
            data.task,
            positive,
        ),
    )
    truth = onehot_of(valset.labels, data.task, len(data.class_names)).astype(float)
    defined = np.isfinite(auc_of(truth, valset.labels, data.task, positive))
    monitor, mode = (f"val_{AUC}", "max") if defined else ("val_loss", "min")
    return monitor, mode, epoch_auc


def fit_baseline(config: Config, data: mdata.MedicalData, run: RunDir) -> None:
    """Pixels + logistic regression on the train split (C chosen on validation, the network's
    class weights), saved in the run's baselines/ folder with its measured fit time."""
    cfg, train, val = config.baseline, data.splits["train"], data.splits["val"]
    multilabel = data.task == "multilabel"
    start = time.perf_counter()
    keep = subsample(train.labels, cfg.max_train_images, config.train.seed)
    size = config.data.image_size
    weights = (
        None if multilabel else training.class_weights(train.labels, config.model.class_weight)
    )
    model = PixelLogisticRegression(
        len(data.class_names), cfg.C, cfg.max_iter, weights, multilabel
    ).fit(
        pixel_features(train.images[keep], size),
        train.labels[keep],
        pixel_features(val.images, size),
        val.labels,
    )
    seconds = time.perf_counter() - start
    save_fitted(model, run.subdir("baselines"), seconds)


def _loss(multilabel: bool, soft: bool) -> str:
    """Binary cross-entropy (multi-label), else cross-entropy on class ids, or on one-hot
    targets when `train.mixup` blends them (`soft`)."""
    if multilabel:
        return "binary_crossentropy"
    return "categorical_crossentropy" if soft else "sparse_categorical_crossentropy"


def _compile(model, cfg, n_train: int, multilabel: bool) -> None:
    soft = bool(cfg.mixup)
    if multilabel:
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    elif soft:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    training.compile_model(model, cfg, n_train, _loss(multilabel, soft), metrics)


def calibrate(
    model: keras.Model, valset: mdata.Split, data: mdata.MedicalData, config: Config
) -> dict:
    """Fit the temperature on validation logits, set it in the model, pick the operating point;
    returns the `Meta` fields they fill."""
    multilabel = data.task == "multilabel"
    logits = _predict(logits_model(model), valset.images, config.score.batch_size)
    positive = mdata.positive_index(data.class_names, config.data.negative_class)
    bins = config.evaluate.calibration_bins

    def ece_of(prob, labels=valset.labels):
        return ev.expected_calibration_error(
            *calibration_pairs(data.task, labels, prob, positive), bins
        )

    # The fitted T ships only when it lowers validation ECE in 90% of paired resamples.
    resamples = min(config.evaluate.bootstrap, 200)
    choice = choose_temperature(
        logits, valset.labels, ece_of, multilabel, resamples, config.train.seed
    )
    temp = choice.temperature
    set_temperature(model, temp)
    after = _predict(model, valset.images, config.score.batch_size)  # what the model will serve
    point = config.operating_point
    thresholds = {}
    for k in decision_classes(data.task, len(data.class_names), positive):
        y = valset.labels[:, k] if multilabel else valset.labels == k
        chosen = ev.threshold_for_target(y, after[:, k], point.metric, point.target)
        # A hair lower, so float noise between two predictions of one image cannot flip it.
        thresholds[data.class_names[k]] = max(0.0, chosen - THRESHOLD_MARGIN)
    return {
        "temperature": temp,
        "temperature_fitted": choice.fitted,
        "temperature_kept_one": choice.kept_one,
        "val_ece_before": choice.ece_at_one,
        "val_ece_after": ece_of(after),
        "val_nll_before": negative_log_likelihood(logits, valset.labels, 1.0, multilabel),
        "val_nll_after": negative_log_likelihood(logits, valset.labels, temp, multilabel),
        "positive_index": positive if data.task == "binary" else None,
        "operating_point": OperatingPoint(point.metric, point.target, "validation", thresholds),
    }


def _predict(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs batch by batch, called directly: the same on every worker of a cluster, where
    `model.predict` would shard the images between them."""
    parts = [
        keras.ops.convert_to_numpy(model(images[i : i + batch_size], training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.output.shape[-1]), np.float32)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """ROC-AUC with bootstrap intervals, operating point, calibration, plots, Grad-CAM, card;
    with `evaluate.tta`, the test-time-augmented scores beside the plain ones."""
    opened = open_run(APP, config, options, Meta, prepare, load_model)
    run, meta, data, model = opened.run, opened.meta, opened.data, opened.model
    report = {
        "primary_metric": AUC,
        "task": meta.task,
        "class_names": meta.class_names,
        "temperature": meta.temperature,
        "operating_point": dataclasses.asdict(meta.operating_point),
    }
    plain, augmented = split_outputs(model, data, meta, config)
    if augmented:
        report["tta"] = tta_report(plain, augmented, data, meta, config.evaluate.tta_views)
    outputs = augmented if report.get("tta", {}).get("used") else plain
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        report[key] = split_report(
            part.labels, outputs[split], meta, config.evaluate, config.train.seed, part.patients
        )
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.train_seconds
    report["baselines"] = evaluate_baselines(run, data, meta)
    board = _leaderboard(run, data, meta, report, plain, augmented)
    report["leaderboard"] = {"classification": board}
    report["test_input"] = write_test_input(run, data)
    write_json(run.metrics_path, report)
    plot_evaluation(run, data.splits["test"], outputs["test"], meta, report, model, config.evaluate)
    write_card(run, meta, report)
    print(evaluate_summary(report, run), flush=True)
    return report


def split_outputs(model: keras.Model, data: mdata.MedicalData, meta: Meta, config: Config):
    """({split: (uncalibrated, calibrated) probabilities}, the same averaged over the TTA views
    or {} without `evaluate.tta`); one pass per view gives both the logits and what the model
    serves."""
    both = keras.Model(model.input, [model.get_layer(LOGITS).output, model.output])
    views = tta.parse_views(config.evaluate.tta_views) if config.evaluate.tta else []
    identity = tta.parse_views(["identity"])
    multilabel, batch = meta.task == "multilabel", config.score.batch_size
    plain, augmented = {}, {}
    for split in ("test", "val"):
        images = data.splits[split].images

        def per_view(chosen, images=images):
            pairs = tta.predict_views(lambda x: _predict_pair(both, x, batch), images, chosen)
            uncalibrated = [scaled_probabilities(logits, 1.0, multilabel) for logits, _ in pairs]
            return uncalibrated, [prob for _, prob in pairs]

        uncalibrated, calibrated = per_view(views or identity)
        if views:
            augmented[split] = (tta.average(uncalibrated), tta.average(calibrated))
            if views[0].name != "identity":  # the plain prediction is not among the views
                uncalibrated, calibrated = per_view(identity)
        plain[split] = (uncalibrated[0], calibrated[0])
    return plain, augmented


def _predict_pair(model: keras.Model, images: np.ndarray, batch_size: int):
    """(logits, probabilities) of a two-output model, batch by batch (as `_predict`)."""
    parts = [
        model(images[i : i + batch_size], training=False) for i in range(0, len(images), batch_size)
    ]
    if not parts:
        empty = np.zeros((0, model.outputs[0].shape[-1]), np.float32)
        return empty, empty
    return tuple(np.concatenate([keras.ops.convert_to_numpy(p[j]) for p in parts]) for j in (0, 1))


def tta_report(plain: dict, augmented: dict, data, meta: Meta, views: list[str]) -> dict:
    """Plain and TTA macro ROC-AUC on validation and test; TTA is used (for the reported
    scores and the selected model) only when it wins on validation."""
    scores = {}
    for split, key in (("val", "validation"), ("test", "test")):
        labels = data.splits[split].labels
        scores[key] = {
            name: auc_of(outputs[split][1], labels, meta.task, meta.positive_index or 0)
            for name, outputs in (("plain", plain), ("tta", augmented))
        }
    used = tta.choose(scores["validation"]["plain"], scores["validation"]["tta"])
    return {"views": list(views), "chosen_on": "validation", "used": used, **scores}


def evaluate_baselines(run: RunDir, data: mdata.MedicalData, meta: Meta) -> dict:
    """The run's baselines on the validation and test splits, with their fit times."""
    out = {}
    recipe = evaluate_recipe(run, data, meta.task, meta.positive_index)
    if recipe is not None:
        out[RECIPE] = recipe
    fitted = load_fitted(run.path / "baselines")
    if fitted is None:
        return out
    model, pixels = fitted
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        prob = model.predict_proba(pixel_features(part.images, meta.image_size))
        pixels[key] = {
            AUC: auc_of(prob, part.labels, meta.task, meta.positive_index),
            "accuracy": medmnist_accuracy(prob, part.labels, meta.task),
        }
    return {BASELINE: pixels} | out


def _leaderboard(run: RunDir, data, meta: Meta, report: dict, plain: dict, augmented: dict):
    """The network (and its TTA row) beside the baselines on test macro ROC-AUC (MedMNIST
    accuracy beside it); the selected row is the one the run's reported scores come from."""
    name = meta.architecture

    def scores(outputs: dict, split: str) -> dict:
        prob, labels = outputs[split][1], data.splits[split].labels
        return {
            AUC: auc_of(prob, labels, meta.task, meta.positive_index or 0),
            "accuracy": medmnist_accuracy(prob, labels, meta.task),
        }

    seconds = (training.fit_summary(run, name) or {}).get("seconds")
    if seconds is not None and meta.lr_find:  # the range test is part of the time to result
        seconds += meta.lr_find.get("seconds") or 0
    history = run.path / f"history-{name}.csv"
    rows = {name: plain} | ({f"{name}{TTA_SUFFIX}": augmented} if augmented else {})
    models = {
        row: leaderboard.model_entry(
            # TTA adds no training: its row carries the network's fit time and history.
            leaderboard.NETWORK,
            scores(out, "test"),
            scores(out, "val"),
            seconds,
            history,
        )
        for row, out in rows.items()
    }
    models |= leaderboard.baseline_entries(report["baselines"])
    selected = f"{name}{TTA_SUFFIX}" if report.get("tta", {}).get("used") else name
    return leaderboard.build(AUC, True, models, selected, history_column=f"val_{AUC}")


def write_test_input(run: RunDir, data: mdata.MedicalData) -> str:
    """The test split as `score` takes it: its images as an NPZ (`images`) when the data came
    as arrays, else a list of its files, one path a line (`@test_split.txt`)."""
    test = data.splits["test"]
    if data.format == "npz":
        with atomic_path(run.path / TEST_NPZ, suffix=".npz") as tmp:
            np.savez(tmp, images=test.images)
        return TEST_NPZ
    write_text(run.path / TEST_LIST, "".join(f"{Path(i).absolute()}\n" for i in test.ids))
    return f"@{TEST_LIST}"


# ---------------------------------------------------------------------------------------------
# score and export


def score(config: Config, options: StepOptions) -> dict:
    """NPZ, image and DICOM files or folders in -> scores CSV and rejects CSV, atomically."""
    opened = open_run(APP, config, options, Meta, load_model=load_model)
    files = expand_inputs(list(options.inputs), "NPZ, image or DICOM file(s)")
    output, rejects = default_output_paths(Path(options.inputs[0]), options.output, options.rejects)
    cfg = config.score
    scorer = MedicalScorer(opened.meta, opened.model, cfg.batch_size, cfg.max_image_pixels)
    overlays = output.with_name(f"{output.stem}_gradcam") if cfg.gradcam else None
    counts = score_files(scorer, files, output, rejects, cfg.chunk_files, overlays)
    note = f"; Grad-CAM overlays -> {overlays}" if overlays else ""
    return print_counts(counts, output, rejects, "images", note)


def export(config: Config, options: StepOptions | None = None) -> Path:
    """Write the run's model as a SavedModel: raw uint8 images in, calibrated probabilities out."""
    if config.export.format == "tflite":
        return export_edge(config, options)
    meta = Meta.read(locate(APP, config, options))
    describe = (
        "signatures: serve (uint8 images, any size), serve_bytes (encoded PNG/JPEG), metadata "
        "(class names, thresholds, temperature); calibrated output"
    )
    writer = functools.partial(write_saved_model, meta=meta)
    return export_step(APP, config, options, load_model, writer, describe)


def export_edge(config: Config, options: StepOptions | None = None) -> Path:
    """LiteRT files (float16, int8 calibrated on train images) in `--output` (default the run's
    tflite/), with their test ROC-AUC and accuracy beside the Keras model's on the same images
    (printed and saved as tflite_parity.json)."""
    opened = open_run(APP, config, options, Meta, prepare, load_model)
    meta, data = opened.meta, opened.data
    size = tuple(meta.image_size)
    train, test = data.splits["train"], data.splits["test"]
    keep = subsample(train.labels, config.export.representative_images, config.train.seed)
    if meta.task == "multilabel":  # subsample stratifies single labels; multilabel: the first
        keep = np.arange(min(len(train), config.export.representative_images))
    folder = Path(options.output) if options and options.output else opened.run.path / "tflite"
    modes = export_tflite_modes(
        opened.model,
        folder,
        size,
        resized_uint8(train.images[keep], size),
        resized_uint8(test.images, size),
    )
    parity = {}
    for mode, result in modes.items():
        prob = result["outputs"]
        parity[mode] = {
            AUC: auc_of(prob, test.labels, meta.task, meta.positive_index or 0),
            "accuracy": medmnist_accuracy(prob, test.labels, meta.task),
            **{k: v for k, v in result.items() if k in ("path", "bytes")},
        }
    write_json(folder / "tflite_parity.json", parity)
    for mode in TFLITE_MODES:
        print(edge_line(mode, parity[mode], parity["keras"], len(test)), flush=True)
    return folder


def edge_line(mode: str, edge: dict, keras_scores: dict, n: int) -> str:
    """One export line: the file, its size and its test scores beside the Keras model's."""
    points = (edge["accuracy"] - keras_scores["accuracy"]) * 100
    return (
        f"export: LiteRT {mode} -> {edge['path']} ({edge['bytes'] / 1024:.0f} KiB); test "
        f"{AUC} {edge[AUC]:.4f} vs Keras {keras_scores[AUC]:.4f}, accuracy "
        f"{edge['accuracy']:.4f} vs {keras_scores['accuracy']:.4f} ({points:+.1f} points) on "
        f"{n:,} images"
    )
