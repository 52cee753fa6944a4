"""The medical app's five steps: prepare, train, evaluate, score, export."""

import csv
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from apps.medical import data as mdata
from apps.medical.config import Config
from apps.medical.dicom import is_dicom, read_dicom
from apps.medical.generate import write_sample
from apps.medical.model import (
    FEATURES,
    build_model,
    logits_model,
    set_temperature,
)
from shared import evaluation as ev
from shared import leaderboard, training
from shared.calibration import fit_temperature, negative_log_likelihood, scaled_probabilities
from shared.config import load_config, to_dict
from shared.export import export_saved_model, image_spec, load_saved_model
from shared.gradcam import gradcam_heatmaps, overlay, plot_gradcam_grid
from shared.images import ImageError, read_image
from shared.input_pipeline import in_memory_dataset
from shared.io import (
    DataError,
    atomic_dir,
    atomic_path,
    read_json,
    source_fingerprint,
    write_json,
    write_table,
    write_text,
)
from shared.model_card import metrics_table, write_model_card
from shared.pixel_baseline import NAME as BASELINE
from shared.pixel_baseline import (
    PixelLogisticRegression,
    load_fitted,
    pixel_features,
    save_fitted,
    subsample,
)
from shared.run import RunDir, config_digest, load_meta
from shared.scoring import (
    Progress,
    ScoreCounts,
    default_output_paths,
    expand_inputs,
    non_finite_reason,
)

APP = "medical"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
GENERATED_SIZE = 64  # the sample generator's image size (the model resizes to data.image_size)
THRESHOLD_MARGIN = 1e-6  # operating thresholds sit this far below the validation score chosen
CARD_TITLE = "Medical image classifier: model card"
AUC = "macro_roc_auc"  # the primary metric (MedMNIST): selects the checkpoint, ranks the board
BOARD_METRICS = (AUC, "accuracy")  # accuracy as MedMNIST counts it: argmax, 0.5 per finding
TEST_NPZ, TEST_LIST = "test_split.npz", "test_split.txt"  # the test split as `score` reads it


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options=None) -> mdata.MedicalData:
    """Generate the sample if configured, read, split by patient, check; cached per input."""
    cfg = config.data
    if cfg.source == "generated":
        write_sample(cfg.path, cfg.generated_images, GENERATED_SIZE, cfg.generated_seed)
    source = Path(cfg.path)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (data.path)")
    digest = config_digest(
        {"data": to_dict(cfg), "seed": config.train.seed, "files": source_fingerprint(source)}
    )
    folder = Path(config.run.root) / APP / "prepared" / digest[:12]
    start = time.perf_counter()
    if (folder / "arrays.npz").exists() and (folder / "prepare.json").exists():
        data = _load_prepared(folder)
        print(f"prepare: using the prepared arrays in {folder}", flush=True)
    else:
        options = mdata.ReadOptions(
            tuple(cfg.image_size),
            cfg.channels,
            cfg.window,
            cfg.max_image_pixels,
            cfg.val_fraction,
            cfg.test_fraction,
            config.train.seed,
            cfg.allow_patient_overlap,
            cfg.split_column,
            cfg.dev_split,
        )
        data = mdata.read(source, cfg.format, options)
        if training.is_chief():
            _save_prepared(folder, data, source)
        counts = ", ".join(f"{s} {len(p):,}" for s, p in data.splits.items())
        leak = data.leakage
        print(
            f"prepare: {sum(len(p) for p in data.splits.values()):,} images, {data.task} task "
            f"({', '.join(data.class_names)}), {data.channels} channel(s) from {source} "
            f"({data.format}) in {time.perf_counter() - start:.1f}s; {counts}; patients known "
            f"{leak['patients_known']:,}, in two splits {leak['overlapping_patients']}",
            flush=True,
        )
    if data.rejects:
        print(
            f"prepare: {len(data.rejects):,} file(s) rejected, reasons in {folder / 'rejects.csv'}; "
            f"first: {data.rejects[0][0]}: {data.rejects[0][1]}",
            flush=True,
        )
    data.folder = folder
    return data


def _save_prepared(folder: Path, data: mdata.MedicalData, source: Path) -> None:
    arrays = {}
    for split, part in data.splits.items():
        for name in ("images", "labels", "ids", "patients"):
            arrays[f"{split}_{name}"] = getattr(part, name)
    write_table(folder / "rejects.csv", mdata.rejects_frame(data.rejects))
    with atomic_path(folder / "arrays.npz", suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    write_json(folder / "prepare.json", mdata.summary(data) | {"source": str(source)})


def _load_prepared(folder: Path) -> mdata.MedicalData:
    info = read_json(folder / "prepare.json")
    with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
        splits = {
            s: mdata.Split(*(archive[f"{s}_{n}"] for n in ("images", "labels", "ids", "patients")))
            for s in mdata.SPLITS
        }
    rejects = mdata.read_rejects(folder / "rejects.csv")
    return mdata.MedicalData(
        info["classes"],
        info["task"],
        info["channels"],
        splits,
        info["format"],
        info["own_splits"],
        rejects,
        info["patient_leakage"],
    )


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options=None) -> RunDir:
    """Fit the network, fit the temperature and the operating point on validation, save both."""
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    cfg, multilabel = config.train, data.task == "multilabel"
    trainset, valset = data.splits["train"], data.splits["val"]
    train_ds = in_memory_dataset(trainset.images, trainset.labels, cfg.batch_size, True, cfg.seed)
    # Validation in training-sized batches: with several workers Keras builds the model from
    # one batch split between them, and a batch larger than the split would split unevenly.
    val_ds = in_memory_dataset(valset.images, valset.labels, cfg.batch_size, False)
    start = time.perf_counter()
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
        _compile(core, cfg, len(trainset), multilabel)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    weights = (
        None if multilabel else training.class_weights(trainset.labels, config.model.class_weight)
    )
    shown = {k: round(v, 3) for k, v in weights.items()} if weights else None
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on {len(trainset):,} images, "
        f"{data.task} over {', '.join(data.class_names)}; class weights {shown}",
        flush=True,
    )
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
    # MedMNIST selects the checkpoint on validation AUC; a validation split of one class has none.
    truth = onehot_of(valset.labels, data.task, len(data.class_names)).astype(float)
    defined = np.isfinite(auc_of(truth, valset.labels, data.task, positive))
    monitor, mode = (f"val_{AUC}", "max") if defined else ("val_loss", "min")
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
    seconds = time.perf_counter() - start
    if run.is_chief and config.baseline.enabled:
        fit_baseline(config, data, run)
    calibration = calibrate(model, valset, data, config)
    if run.is_chief:
        with atomic_path(run.model_path, suffix=".keras") as tmp:
            model.save(tmp)
        with atomic_dir(run.saved_model_path) as tmp:
            export_saved_model(model, str(tmp), image_spec(model.input.shape[-1]))
        write_json(
            run.meta_path,
            {
                "app": APP,
                "task": data.task,
                "class_names": data.class_names,
                "image_size": list(config.data.image_size),
                "channels": data.channels,
                "window": config.data.window,
                "input": "uint8 images (batch, height, width, channels), any height and width; "
                "DICOM pixels are rescaled and windowed to 8 bits before the model",
                "architecture": config.model.architecture,
                "backbone": config.model.backbone or None,
                "prepared": str(data.folder),
                "train_seconds": round(seconds, 1),
                "precision_policy": policy,
                "xla_compiled": bool(core.jit_compile),
                **calibration,
            },
        )
    run.finish()
    print(
        f"train: finished in {seconds:.0f}s; temperature {calibration['temperature']:.3f} "
        f"(validation ECE {calibration['val_ece_before']:.4f} -> "
        f"{calibration['val_ece_after']:.4f}); weights sha256 {training.weights_digest(model)}; "
        f"model -> {run.model_path}",
        flush=True,
    )
    return run


def onehot_of(labels: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    return labels if task == "multilabel" else np.eye(n_classes)[labels]


def auc_of(prob: np.ndarray, labels: np.ndarray, task: str, positive: int) -> float:
    """The primary metric: the positive class's ROC-AUC (binary), else the mean one-vs-rest
    ROC-AUC over classes or findings (scikit-learn); NaN where undefined or not finite."""
    if not np.isfinite(prob).all():  # a diverging network: the divergence guard stops it
        return float("nan")
    onehot = onehot_of(labels, task, prob.shape[1])
    if task == "binary":
        return ev.roc_auc(onehot[:, positive], prob[:, positive])
    return ev.macro_roc_auc(onehot, prob)


def medmnist_accuracy(prob: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Accuracy as MedMNIST reports it: the most probable class, or every finding at 0.5."""
    if task == "multilabel":
        return float(np.mean((prob >= 0.5) == (labels >= 0.5)))
    return float(np.mean(prob.argmax(axis=1) == labels))


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


def _compile(model, cfg, n_train: int, multilabel: bool) -> None:
    if multilabel:
        loss, metrics = "binary_crossentropy", [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        loss = "sparse_categorical_crossentropy"
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    training.compile_model(model, cfg, n_train, loss, metrics)


def calibrate(model: keras.Model, valset: mdata.Split, data: mdata.MedicalData, config: Config):
    """Fit the temperature on validation logits, set it in the model, pick the operating point."""
    multilabel = data.task == "multilabel"
    logits = _predict(logits_model(model), valset.images, config.score.batch_size)
    temp = fit_temperature(logits, valset.labels, multilabel)
    set_temperature(model, temp)
    before = scaled_probabilities(logits, 1.0, multilabel)
    after = _predict(model, valset.images, config.score.batch_size)  # what the model will serve
    positive = mdata.positive_index(data.class_names, config.data.negative_class)
    bins = config.evaluate.calibration_bins
    pairs = {
        n: calibration_pairs(data.task, valset.labels, p, positive)
        for n, p in (("before", before), ("after", after))
    }
    point = config.operating_point
    thresholds = {}
    for k in decision_classes(data.task, len(data.class_names), positive):
        y = valset.labels[:, k] if multilabel else valset.labels == k
        chosen = ev.threshold_for_target(y, after[:, k], point.metric, point.target)
        # A hair lower, so float noise between two predictions of one image cannot flip it.
        thresholds[data.class_names[k]] = max(0.0, chosen - THRESHOLD_MARGIN)
    return {
        "temperature": temp,
        "val_ece_before": ev.expected_calibration_error(*pairs["before"], bins),
        "val_ece_after": ev.expected_calibration_error(*pairs["after"], bins),
        "val_nll_before": negative_log_likelihood(logits, valset.labels, 1.0, multilabel),
        "val_nll_after": negative_log_likelihood(logits, valset.labels, temp, multilabel),
        "positive_index": positive if data.task == "binary" else None,
        "operating_point": {
            "metric": point.metric,
            "target": point.target,
            "chosen_on": "validation",
            "thresholds": thresholds,
        },
    }


def decision_classes(task: str, n_classes: int, positive: int) -> list[int]:
    """Classes that get a threshold: the positive class (binary), every finding (multi-label),
    none for multi-class (the decision there is the most probable class)."""
    if task == "binary":
        return [positive]
    return list(range(n_classes)) if task == "multilabel" else []


def calibration_pairs(task: str, labels, prob: np.ndarray, positive: int):
    """(outcome 0/1, predicted probability) for the ECE: the positive class's probability for
    binary, the top-label confidence for multi-class, every (image, finding) for multi-label."""
    if task == "binary":
        return (labels == positive).astype(float), prob[:, positive]
    if task == "multilabel":
        return np.asarray(labels, float).ravel(), prob.ravel()
    return (prob.argmax(axis=1) == labels).astype(float), prob.max(axis=1)


def decide(prob: np.ndarray, meta: dict) -> np.ndarray:
    """0/1 decisions (n, k): thresholds for binary and multi-label, the argmax for multi-class."""
    names, task = meta["class_names"], meta["task"]
    thresholds = meta["operating_point"]["thresholds"]
    if task == "multilabel":
        return np.stack([prob[:, k] >= thresholds[n] for k, n in enumerate(names)], 1).astype(int)
    if task == "binary":
        positive = meta["positive_index"]
        flagged = prob[:, positive] >= thresholds[names[positive]]
        chosen = np.where(flagged, positive, 1 - positive)
    else:
        chosen = prob.argmax(axis=1)
    return np.eye(len(names), dtype=int)[chosen]


def _predict(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs batch by batch, called directly: the same on every worker of a cluster, where
    `model.predict` would shard the images between them."""
    parts = [
        keras.ops.convert_to_numpy(model(images[i : i + batch_size], training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.output.shape[-1]), np.float32)


def load_model(run: RunDir) -> keras.Model:
    """The run's saved model, loaded safely (custom layers and KerasHub classes registered)."""
    import keras_hub  # noqa: F401  registers the backbone classes a transfer model contains

    import apps.medical.model  # noqa: F401  registers TemperatureScaling

    return load_saved_model(run.model_path)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """ROC-AUC with bootstrap intervals, operating point, calibration, plots, Grad-CAM, card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    run_config = load_config(Config, run.path / "config.yaml")
    data = prepare(run_config)
    model = load_model(run)
    cfg, names, task = config.evaluate, meta["class_names"], meta["task"]
    report = {
        "primary_metric": "macro_roc_auc",
        "task": task,
        "class_names": names,
        "temperature": meta["temperature"],
        "operating_point": meta["operating_point"],
    }
    outputs = {}
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        logits = _predict(logits_model(model), part.images, config.score.batch_size)
        calibrated = _predict(model, part.images, config.score.batch_size)
        outputs[split] = (scaled_probabilities(logits, 1.0, task == "multilabel"), calibrated)
        report[key] = split_report(part.labels, outputs[split], meta, cfg, seed=config.train.seed)
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.get("train_seconds")
    report["baselines"] = evaluate_baselines(run, data, meta)
    report["leaderboard"] = {"classification": _leaderboard(run, data, meta, report, outputs)}
    report["test_input"] = write_test_input(run, data)
    write_json(run.metrics_path, report)
    _plots(run, data.splits["test"], outputs["test"], meta, report, model, cfg)
    _write_card(run, meta, report)
    test = report["test"]
    auc = test["macro_roc_auc"]
    print(
        f"evaluate: test macro ROC-AUC {auc['value']:.4f} (95% CI {auc['low']:.4f}-"
        f"{auc['high']:.4f}), accuracy {test['accuracy']:.4f}, ECE {test['ece_before']:.4f} -> "
        f"{test['ece_after']:.4f} after temperature scaling, "
        + ", ".join(
            f"{n}: sensitivity {v['sensitivity']:.3f} specificity {v['specificity']:.3f}"
            for n, v in test["operating_point"].items()
        )
        + f" on {test['examples']:,} images; plots -> {run.path / 'plots'}",
        flush=True,
    )
    return report


def evaluate_baselines(run: RunDir, data: mdata.MedicalData, meta: dict) -> dict:
    """The run's baselines on the validation and test splits, with their fit times."""
    fitted = load_fitted(run.path / "baselines")
    if fitted is None:
        return {}
    model, out = fitted
    positive = meta.get("positive_index")
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        prob = model.predict_proba(pixel_features(part.images, meta["image_size"]))
        out[key] = {
            AUC: auc_of(prob, part.labels, meta["task"], positive),
            "accuracy": medmnist_accuracy(prob, part.labels, meta["task"]),
        }
    return {BASELINE: out}


def _leaderboard(run: RunDir, data, meta: dict, report: dict, outputs: dict) -> dict:
    """The network beside the baselines on test macro ROC-AUC (MedMNIST accuracy beside it)."""
    name, task = meta["architecture"], meta["task"]

    def network(split: str, key: str) -> dict:
        prob = outputs[split][1]
        accuracy = medmnist_accuracy(prob, data.splits[split].labels, task)
        return {AUC: report[key][AUC]["value"], "accuracy": accuracy}

    summary = training.fit_summary(run, name) or {}
    models = {
        name: leaderboard.model_entry(
            leaderboard.NETWORK,
            network("test", "test"),
            network("val", "validation"),
            summary.get("seconds"),
            run.path / f"history-{name}.csv",
        )
    }
    for baseline, entry in report["baselines"].items():
        models[baseline] = leaderboard.model_entry(
            leaderboard.BASELINE, entry["test"], entry["validation"], entry["fit_seconds"]
        )
    return leaderboard.build(AUC, True, models, name, history_column=f"val_{AUC}")


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


def split_report(labels, outputs, meta: dict, cfg, seed: int = 0) -> dict:
    """The metrics of one split from its (uncalibrated, calibrated) probabilities."""
    uncalibrated, prob = outputs
    names, task = meta["class_names"], meta["task"]
    positive = meta.get("positive_index")
    onehot = labels if task == "multilabel" else np.eye(len(names))[labels]
    decisions = decide(prob, meta)
    per_class = {}
    auc_classes = [positive] if task == "binary" else range(len(names))
    for k in auc_classes:
        value, low, high = ev.bootstrap_interval(
            ev.roc_auc, (onehot[:, k], prob[:, k]), cfg.bootstrap, seed
        )
        per_class[names[k]] = {
            "value": value,
            "low": low,
            "high": high,
            "positives": int(onehot[:, k].sum()),
        }
    if task == "binary":
        macro = dict(per_class[names[positive]])
        macro.pop("positives")
    else:
        value, low, high = ev.bootstrap_interval(
            ev.macro_roc_auc, (onehot, prob), cfg.bootstrap, seed
        )
        macro = {"value": value, "low": low, "high": high}
    thresholds = meta["operating_point"]["thresholds"]
    point = {
        name: ev.sensitivity_specificity(
            onehot[:, names.index(name)], prob[:, names.index(name)], t
        )
        for name, t in thresholds.items()
    }
    if task == "multiclass":  # the argmax decision, one class against the rest
        point = {
            name: ev.sensitivity_specificity(onehot[:, k], decisions[:, k], 0.5)
            for k, name in enumerate(names)
        }
    bins = cfg.calibration_bins
    before = calibration_pairs(task, labels, uncalibrated, positive)
    after = calibration_pairs(task, labels, prob, positive)
    report = {
        "examples": int(len(labels)),
        "roc_auc": per_class,
        "macro_roc_auc": macro,
        "accuracy": float(np.mean(decisions == onehot))
        if task == "multilabel"
        else float(np.mean(decisions.argmax(axis=1) == labels)),
        "operating_point": point,
        "ece_before": ev.expected_calibration_error(*before, bins),
        "ece_after": ev.expected_calibration_error(*after, bins),
    }
    if task != "multilabel":
        report["confusion_matrix"] = (onehot.T.astype(int) @ decisions).tolist()
    return report


def _plots(run: RunDir, test: mdata.Split, outputs, meta, report, model, cfg) -> None:
    plots = run.subdir("plots")
    uncalibrated, prob = outputs
    names, task = meta["class_names"], meta["task"]
    positive = meta.get("positive_index")
    onehot = test.labels if task == "multilabel" else np.eye(len(names))[test.labels]
    shown = [positive] if task == "binary" else range(len(names))
    auc = report["test"]["roc_auc"]
    ev.plot_roc(
        {
            f"{names[k]} (95% CI {auc[names[k]]['low']:.3f}-{auc[names[k]]['high']:.3f})": (
                onehot[:, k],
                prob[:, k],
            )
            for k in shown
        },
        plots / "roc.png",
        "ROC curve (test)",
    )
    ev.plot_reliability(
        {
            "before temperature scaling": calibration_pairs(
                task, test.labels, uncalibrated, positive
            ),
            f"after (T = {meta['temperature']:.2f})": calibration_pairs(
                task, test.labels, prob, positive
            ),
        },
        plots / "reliability.png",
        cfg.calibration_bins,
        "Reliability diagram (test)",
    )
    if "confusion_matrix" in report["test"]:
        ev.plot_confusion_matrix(
            report["test"]["confusion_matrix"],
            names,
            plots / "confusion_matrix.png",
            "Confusion matrix (test, at the operating point)",
        )
    focus = _focus_class(meta, cfg.focus_class, onehot)
    decided = decide(prob, meta)[:, focus].astype(bool)
    threshold = meta["operating_point"]["thresholds"].get(names[focus])
    cut = f", flagged at p >= {threshold:.4f}" if threshold is not None else ""
    truth = onehot[:, focus].astype(bool)
    groups = {
        "true positives": decided & truth,
        "false positives": decided & ~truth,
        "false negatives": ~decided & truth,
    }
    rng = np.random.default_rng(0)
    scores = logits_model(model)  # Grad-CAM of the logit: a saturated probability has no gradient
    for group, mask in groups.items():
        index = np.flatnonzero(mask)
        if not len(index) or not cfg.gradcam_per_group:
            continue
        chosen = np.sort(rng.choice(index, min(cfg.gradcam_per_group, len(index)), replace=False))
        images = test.images[chosen]
        heatmaps = gradcam_heatmaps(scores, images, np.full(len(chosen), focus), FEATURES)
        titles = [f"p({names[focus]}) {prob[i, focus]:.2f}" for i in chosen]
        plot_gradcam_grid(
            images,
            heatmaps,
            titles,
            plots / f"gradcam_{group.replace(' ', '_')}.png",
            f"Grad-CAM for '{names[focus]}': {group} (test{cut})",
        )
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy", AUC))


def _focus_class(meta: dict, name: str, onehot: np.ndarray) -> int:
    names = meta["class_names"]
    if name:
        if name not in names:
            raise DataError(f"evaluate.focus_class {name!r} is not one of {names}")
        return names.index(name)
    if meta["task"] == "binary":
        return meta["positive_index"]
    return int(onehot.sum(axis=0).argmax())


def _write_card(run: RunDir, meta: dict, report: dict) -> None:
    data, test, val = report["data"], report["test"], report["validation"]
    splits = ", ".join(
        f"{s}: {v['images']:,} images, {v['patients']:,} patients"
        for s, v in data["splits"].items()
    )
    leak = data["patient_leakage"]

    def interval(v):
        return f"{v['value']:.4f} (95% CI {v['low']:.4f}-{v['high']:.4f})"

    auc_rows = {
        name: {"ROC-AUC (95% CI)": interval(v), "positives": v["positives"]}
        for name, v in test["roc_auc"].items()
    }
    auc_rows["macro"] = {"ROC-AUC (95% CI)": interval(test["macro_roc_auc"])}
    point = meta["operating_point"]
    rates = {
        f"{name} ({split})": values
        for split, part in (("test", test), ("validation", val))
        for name, values in part["operating_point"].items()
    }
    thresholds = ", ".join(f"{n} >= {t:.4f}" for n, t in point["thresholds"].items())
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Not a medical device": "This model is a research and engineering tool. It is not a "
            "medical device, has no regulatory clearance, and must not be used to diagnose, "
            "treat or triage patients. Any clinical use needs a prospective validation on the "
            "target population and the approvals that apply.",
            "Intended use": f"Flags {meta['task']} findings ({', '.join(meta['class_names'])}) "
            "in images like the training images, for data scientists who develop and audit "
            "models. Probabilities are calibrated on the validation split (temperature scaling).",
            "Data": f"Source `{data['source']}` ({data['format']}), {data['channels']} channel(s); "
            f"{data['rejected_files']:,} file(s) rejected at preparation. Splits: {splits} "
            f"({'own splits: ' + ', '.join(data['own_splits']) if data['own_splits'] else 'drawn, seeded'}). "
            f"Patient leakage check: {leak['patients_known']:,} patients known, "
            f"{leak['overlapping_patients']} in more than one split.",
            "Model": f"Architecture `{meta['architecture']}`"
            + (f" on the KerasHub backbone `{meta['backbone']}`" if meta.get("backbone") else "")
            + f". Input: raw 8-bit images of any size (DICOM: rescaled and windowed"
            f"{' with the ' + meta['window'] + ' preset' if meta['window'] else ''} first); "
            f"rescaling and resizing to {meta['image_size'][0]}x{meta['image_size'][1]} happen "
            f"inside the model. Trained in {meta.get('train_seconds')}s ({meta['precision_policy']}).",
            "Discrimination (test, bootstrap 95% intervals)": metrics_table(
                auc_rows, ["ROC-AUC (95% CI)", "positives"]
            )
            + f"\n\nAccuracy at the operating point: test {test['accuracy']:.4f}, "
            f"validation {val['accuracy']:.4f}.",
            "Operating point": (
                f"Chosen on validation for {point['metric']} >= {point['target']:g}: {thresholds} "
                "(on calibrated probabilities; saved in model_meta.json).\n\n"
                if point["thresholds"]
                else "Multi-class: the most probable class is the decision.\n\n"
            )
            + metrics_table(rates, ["threshold", "sensitivity", "specificity", "ppv", "npv"]),
            "Leaderboard (the network beside its baselines, same split)": leaderboard.to_markdown(
                report["leaderboard"]["classification"]
            )
            + _baseline_note(report["baselines"]),
            "Calibration": f"Temperature T = {meta['temperature']:.3f}, fitted on validation, is "
            "applied inside the saved and exported model. Expected calibration error "
            f"(equal-width bins): test {test['ece_before']:.4f} before, {test['ece_after']:.4f} "
            f"after; validation {val['ece_before']:.4f} before, {val['ece_after']:.4f} after. "
            "See plots/reliability.png.",
            "Limits": "Performance holds only for images like the training data (same devices, "
            "protocols, population and prevalence); re-check calibration and the operating point "
            "on local data before relying on either. Intervals cover sampling variation of the "
            "test set only. Grad-CAM shows where the network looked, not why.",
        },
    )


def _baseline_note(baselines: dict) -> str:
    if BASELINE not in baselines:
        return "\n\nNo baseline was fitted (`baseline.enabled=false`)."
    fit = baselines[BASELINE]
    return (
        f"\n\n`{BASELINE}`: every pixel at the model's size, standardised, into a logistic "
        f"regression (scikit-learn, the network's class weights) on {fit['train_images']:,} "
        f"training images; C = {fit['C']:g}, chosen on validation log-loss from "
        f"{', '.join(fit['val_log_loss'])}. Accuracy here is MedMNIST's (the most probable "
        "class, or each finding at 0.5), not the operating point's. The network's checkpoint "
        "is the epoch of best validation ROC-AUC; time to baseline is its training seconds "
        "until that first matched the best baseline's."
    )


# ---------------------------------------------------------------------------------------------
# score and export


class MedicalScorer:
    """Images in -> calibrated probability per class and the decision at the operating point."""

    def __init__(self, run: RunDir, batch_size: int, max_pixels: int):
        self.meta = load_meta(run)
        self.model = load_model(run)
        self.class_names = self.meta["class_names"]
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.columns = ["id"] + [f"p_{n}" for n in self.class_names] + ["decision"]

    def read(self, path: str) -> np.ndarray:
        """A PNG/JPEG/BMP or DICOM file as the model's uint8 input; ImageError says why not."""
        channels = self.meta["channels"]
        if is_dicom(path):
            image = read_dicom(path, self.meta["window"], self.max_pixels)
            return mdata.set_channels(image[None], channels)[0]
        return read_image(path, channels, self.max_pixels)

    def load(self, path: str) -> list[tuple[str, np.ndarray]] | str:
        """(id, image) pairs of one file (an NPZ gives many), or the reason it cannot be used."""
        try:
            pairs = npz_images(path) if path.lower().endswith(".npz") else [(path, self.read(path))]
        except (ImageError, DataError) as exc:
            return str(exc).removeprefix(f"{path}: ")
        channels = self.meta["channels"]
        return [(name, mdata.set_channels(image[None], channels)[0]) for name, image in pairs]

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """Calibrated probabilities (n, k); images of one size go to the model together."""
        out = np.zeros((len(images), len(self.class_names)), np.float32)
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for rows in by_shape.values():
            for begin in range(0, len(rows), self.batch_size):
                part = rows[begin : begin + self.batch_size]
                out[part] = self.model.predict_on_batch(np.stack([images[i] for i in part]))
        return out

    def rows(self, ids: list[str], prob: np.ndarray) -> list[list]:
        decisions = decide(prob, self.meta)
        out = []
        for name, p, d in zip(ids, prob, decisions, strict=True):
            if self.meta["task"] == "multilabel":
                label = "|".join(n for n, flag in zip(self.class_names, d, strict=True) if flag)
            else:
                label = self.class_names[int(d.argmax())]
            out.append([name, *(round(float(v), 6) for v in p), label or "none"])
        return out

    def explain(self, images: list[np.ndarray], prob: np.ndarray) -> list[np.ndarray]:
        """Grad-CAM overlays (float RGB in [0, 1]) for the class each decision is about."""
        if self.meta["task"] == "binary":
            targets = np.full(len(images), self.meta["positive_index"])
        else:
            targets = prob.argmax(axis=1)
        scores = logits_model(self.model)  # a saturated probability has no gradient
        return [
            overlay(image, gradcam_heatmaps(scores, image[None], [k], FEATURES)[0])
            for image, k in zip(images, targets, strict=True)
        ]


def npz_images(path: str) -> list[tuple[str, np.ndarray]]:
    """(id, uint8 image) for every image of an NPZ: `images`, or every `<split>_images` array."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = (
                ["images"]
                if "images" in archive.files
                else sorted(k for k in archive.files if k.endswith("_images"))
            )
            if not keys:
                raise ImageError(f"{path}: NPZ without an `images` or `<split>_images` array")
            out = []
            for key in keys:
                images = mdata.to_uint8(archive[key], f"{path}: {key}")
                out += [(f"{path}:{key}:{i}", image) for i, image in enumerate(images)]
            return out
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
    ) as exc:  # corrupt archive or pickled arrays
        raise ImageError(f"{path}: unreadable NPZ ({str(exc).splitlines()[0]})") from exc


def score(config: Config, options) -> dict:
    """NPZ, image and DICOM files or folders in -> scores CSV and rejects CSV, atomically."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    files = expand_inputs(list(options.inputs), "NPZ, image or DICOM file(s)")
    output, rejects = default_output_paths(Path(options.inputs[0]), options.output, options.rejects)
    scorer = MedicalScorer(run, config.score.batch_size, config.score.max_image_pixels)
    overlays = output.with_name(f"{output.stem}_gradcam") if config.score.gradcam else None
    counts = ScoreCounts()
    meter = Progress("scoring medical images")
    with (
        atomic_path(output) as out_tmp,
        atomic_path(rejects) as rej_tmp,
        open(out_tmp, "w", encoding="utf-8", newline="") as out,
        open(rej_tmp, "w", encoding="utf-8", newline="") as rej,
        ThreadPoolExecutor(max_workers=4) as pool,  # decoding overlaps reading the next files
    ):
        out_writer, rej_writer = csv.writer(out), csv.writer(rej)
        out_writer.writerow(["row", *scorer.columns])
        rej_writer.writerow(["row", "path", "reason"])
        for begin in range(0, len(files), config.score.chunk_files):
            numbers, ids, images = [], [], []
            chunk = files[begin : begin + config.score.chunk_files]
            for path, read in zip(chunk, pool.map(scorer.load, chunk), strict=True):
                if isinstance(read, str):
                    counts.rows += 1
                    rej_writer.writerow([counts.rows, path, read])
                    counts.rejected += 1
                    continue
                # An NPZ holds many images, each a row of its own.
                numbers += range(counts.rows + 1, counts.rows + 1 + len(read))
                counts.rows += len(read)
                ids += [name for name, _ in read]
                images += [image for _, image in read]
            if images:
                prob = scorer.predict(images)
                rows = scorer.rows(ids, prob)
                keep = []
                for number, row in zip(numbers, rows, strict=True):
                    reason = non_finite_reason(row, scorer.columns)
                    if reason:
                        rej_writer.writerow([number, row[0], reason])
                        counts.rejected += 1
                    else:
                        out_writer.writerow([number, *row])
                        counts.scored += 1
                    keep.append(not reason)
                if overlays is not None:
                    kept = [i for i, k in enumerate(keep) if k]
                    explained = scorer.explain([images[i] for i in kept], prob[kept])
                    _write_overlays(overlays, [ids[i] for i in kept], explained)
            meter.update(counts.rows)
    print(
        f"{counts.rows:,} images read: {counts.scored:,} scored -> {output}, "
        f"{counts.rejected:,} rejected -> {rejects}"
        + (f"; Grad-CAM overlays -> {overlays}" if overlays else ""),
        flush=True,
    )
    return {
        "images": counts.rows,
        "scored": counts.scored,
        "rejected": counts.rejected,
        "output": str(output),
        "rejects": str(rejects),
    }


def _write_overlays(folder: Path, ids: list[str], images: list[np.ndarray]) -> None:
    from PIL import Image

    for name, image in zip(ids, images, strict=True):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/"))[-120:]
        with atomic_path(folder / f"{safe}.png", suffix=".png") as tmp:
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="PNG")


def export(config: Config, options) -> Path:
    """Write the run's model as a SavedModel: raw uint8 images in, calibrated probabilities out."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    model = load_model(run)
    with atomic_dir(target) as tmp:
        export_saved_model(model, str(tmp), image_spec(model.input.shape[-1]))
    print(
        f"export: SavedModel -> {target} (input: uint8 images, any size; calibrated output)",
        flush=True,
    )
    return target
