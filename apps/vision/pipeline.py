"""The vision app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import functools
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.vision import data as vdata
from apps.vision.card import CARD_TITLE, summary_line, write_card
from apps.vision.config import AUTO_SIZE_MAX, AUTO_SIZE_MIN, Config
from apps.vision.model import INPUT, Meta, build_model, find_backbone, load_model, write_saved_model
from apps.vision.plots import write_plots
from apps.vision.recipe import NAME as RECIPE
from apps.vision.recipe import evaluate_recipe, fit_recipe
from apps.vision.sample import write_digits
from apps.vision.scorer import ImageScorer
from shared import evaluation as ev
from shared import leaderboard, lr_find, steps, training, tta
from shared.export import TFLITE_MODES, export_tflite_modes, resized_uint8
from shared.io import DataError, read_json, write_json, write_table
from shared.pixel_baseline import NAME as BASELINE
from shared.pixel_baseline import (
    PixelLogisticRegression,
    load_fitted,
    pixel_features,
    save_fitted,
    subsample,
)
from shared.run import RunDir
from shared.scoring import default_output_paths, expand_inputs, score_files
from shared.steps import OpenRun, StepOptions, report_rejects

APP = "vision"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
BOARD_METRICS = ("accuracy", "macro_f1")  # the leaderboard's primary metric first
LOSS = "sparse_categorical_crossentropy"
TTA_SUFFIX = "_tta"  # the leaderboard row of the network under test-time augmentation


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options: StepOptions | None = None) -> vdata.ImageData:
    """Write the digits sample if configured, read and check every image, split; cached per
    input."""
    cfg = config.data
    if cfg.source == "digits":
        write_digits(Path(cfg.path))
    source = Path(cfg.path)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (data.path)")
    folder = steps.prepared_folder(APP, config, [source])
    cached = folder / "manifest.csv"
    if cached.exists() and (folder / "prepare.json").exists():
        data = vdata.from_manifest(cached, read_json(folder / "prepare.json"))
        print(f"prepare: using the checked file list in {folder}", flush=True)
    else:
        data = _read_and_cache(config, source, folder)
    report_rejects(data.rejects, folder)
    data.folder = folder
    if not cfg.image_size:
        own = vdata.typical_size(data)
        cfg.image_size = vdata.auto_image_size(own, AUTO_SIZE_MIN, AUTO_SIZE_MAX)
        print(
            f"prepare: image size {cfg.image_size[0]}x{cfg.image_size[1]}, from the data's own "
            f"{own[0]}x{own[1]} (long side at most {AUTO_SIZE_MAX} px, short side at least "
            f"{AUTO_SIZE_MIN}; data.image_size=[h,w] sets it)",
            flush=True,
        )
    return data


def _read_and_cache(config: Config, source: Path, folder: Path) -> vdata.ImageData:
    """Read and check `source`, then cache its summary, rejects and checked file list."""
    cfg = config.data
    start = time.perf_counter()
    plan = vdata.SplitPlan(
        cfg.val_fraction, cfg.test_fraction, config.train.seed, cfg.split_column, cfg.dev_split
    )
    data = vdata.read(source, cfg.format, cfg.channels, cfg.max_image_pixels, plan)
    if training.is_chief():
        info = vdata.summary(data) | {"source": str(source)}
        write_table(folder / "rejects.csv", vdata.rejects_frame(data.rejects))
        write_json(folder / "prepare.json", info)
        if data.splits["train"].paths is not None:  # arrays are re-read, files not re-checked
            write_table(folder / "manifest.csv", vdata.manifest_frame(data))
    counts = ", ".join(f"{s} {len(p):,}" for s, p in data.splits.items())
    if data.format == "idx" and not data.own_splits:
        counts += (
            f" (the IDX folder holds only t10k files: all three splits drawn from them by "
            f"data.val_fraction {cfg.val_fraction} and data.test_fraction {cfg.test_fraction})"
        )
    print(
        f"prepare: {sum(len(p) for p in data.splits.values()):,} images, "
        f"{len(data.class_names)} classes, {data.channels} channel(s) from {source} "
        f"({data.format}) in {time.perf_counter() - start:.1f}s; {counts}",
        flush=True,
    )
    return data


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit the configured network (for transfer learning, the head first, then everything),
    then the pixels + logistic regression baseline on the same split.

    A network whose loss or weights go non-finite stops: the run is marked failed (metrics.json,
    model card), exits non-zero and never becomes `latest`.
    """
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    size, n_classes = config.data.image_size, len(data.class_names)
    decode_in_memory(config, data, ("train", "val"))
    train_ds = _dataset(config, data, "train", shuffle=True)
    val_ds = _dataset(config, data, "val", shuffle=False)
    start = time.perf_counter()
    with strategy.scope():
        model = build_model(config.model, config.augment, n_classes, size, data.channels)
        # Random augmentation does not compile with XLA: under `xla` it runs in tf.data.
        head, core = training.xla_split(model, config.train, ["augment"])
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    if soft_targets(config):  # mixup or label smoothing: one-hot (blended) targets
        train_ds = training.soft_targets(train_ds, n_classes, config.train.mixup, config.train.seed)
        val_ds = training.soft_targets(val_ds, n_classes)
    name = "head" if config.model.architecture == "transfer" else config.model.architecture
    loss = _loss(config)
    config.train, found = lr_find.find_for_run(run, core, train_ds, config.train, loss, name)
    with strategy.scope():
        _compile(core, config, len(data.splits["train"]), n_classes)
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on "
        f"{len(data.splits['train']):,} images, {n_classes} classes",
        flush=True,
    )
    try:
        _fit(config, model, core, strategy, run, (train_ds, val_ds), data)
    except training.Diverged as exc:  # one network per run: nothing is left to ship
        training.fail_run(run, CARD_TITLE, {config.model.architecture: str(exc)})
    seconds = time.perf_counter() - start
    if run.is_chief and config.baseline.enabled:
        fit_baseline(config, data, run)
        if config.baseline.recipe_cnn:
            fit_recipe(config, data, run)
    meta = _meta(config, data, seconds, policy, bool(core.jit_compile))
    meta.lr_find = found
    steps.save_model(run, model, meta, functools.partial(write_saved_model, meta=meta))
    print(
        f"train: finished in {seconds:.0f}s; weights sha256 {training.weights_digest(model)}; "
        f"model -> {run.model_path}",
        flush=True,
    )
    return run


def _meta(config: Config, data: vdata.ImageData, seconds: float, policy: str, xla: bool) -> Meta:
    """What model_meta.json records of this training run."""
    return Meta(
        app=APP,
        prepared=str(data.folder),
        input=INPUT,
        train_seconds=round(seconds, 1),
        precision_policy=policy,
        xla_compiled=xla,
        class_names=data.class_names,
        image_size=list(config.data.image_size),
        channels=data.channels,
        architecture=config.model.architecture,
        backbone=config.model.backbone or None,
    )


def _fit(config: Config, model, core, strategy, run: RunDir, datasets, data) -> None:
    """Fit `core` (the model, or its XLA-compiled part); a transfer model's head first, then,
    with `model.fine_tune_epochs`, the whole network with its backbone unfrozen."""
    cfg, n_train = config.train, len(data.splits["train"])
    name = "head" if config.model.architecture == "transfer" else config.model.architecture
    training.fit(core, *datasets, run, cfg, name, "val_loss", "min", examples=n_train)
    backbone = find_backbone(model) if config.model.architecture == "transfer" else None
    if backbone is None or not config.model.fine_tune_epochs:
        return
    backbone.trainable = True
    tune = dataclasses.replace(
        cfg,
        epochs=config.model.fine_tune_epochs,
        learning_rate=cfg.learning_rate * config.model.fine_tune_learning_rate_ratio,
        warmup_epochs=0.0,
    )
    with strategy.scope():
        _compile(core, config, n_train, len(data.class_names), tune)
    print("train: fine-tuning the whole network (backbone unfrozen)", flush=True)
    training.fit(core, *datasets, run, tune, "finetune", "val_loss", "min", examples=n_train)


def decode_in_memory(config: Config, data: vdata.ImageData, splits) -> None:
    """With the memory cache, decode each split's files once, for the network and the baseline
    alike (the paths stay, for the test list and the model card)."""
    if config.data.cache != "memory":
        return
    for split in splits:
        part = data.splits[split]
        if part.images is None:
            images = vdata.decode_all(part.paths, config.data.image_size, data.channels)
            data.splits[split] = vdata.Split(part.labels, paths=part.paths, images=images)


def fit_baseline(config: Config, data: vdata.ImageData, run: RunDir) -> None:
    """Pixels + logistic regression on the train split (C chosen on validation), saved in
    the run's baselines/ folder with its measured fit time (features included)."""
    cfg, train = config.baseline, data.splits["train"]
    start = time.perf_counter()
    keep = subsample(train.labels, cfg.max_train_images, config.train.seed)
    part = vdata.Split(
        train.labels[keep],
        paths=[train.paths[i] for i in keep] if train.paths is not None else None,
        images=train.images[keep] if train.images is not None else None,
    )
    model = PixelLogisticRegression(len(data.class_names), cfg.C, cfg.max_iter)
    val = data.splits["val"]
    model.fit(_pixels(config, data, part), part.labels, _pixels(config, data, val), val.labels)
    seconds = time.perf_counter() - start
    save_fitted(model, run.subdir("baselines"), seconds)


def _pixels(config: Config, data: vdata.ImageData, split: vdata.Split) -> np.ndarray:
    """The baseline's features of one split, read batch by batch as the network reads them."""
    size, batch_size = config.data.image_size, config.score.batch_size
    dataset = vdata.make_dataset(
        split, size, data.channels, batch_size, False, cache="none", labels=False
    )
    parts = [pixel_features(batch.numpy(), size) for batch in dataset]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def soft_targets(config: Config) -> bool:
    """Whether training uses one-hot targets: mixup blends them, label smoothing softens them."""
    return config.train.mixup > 0 or config.model.label_smoothing > 0


def _loss(config: Config):
    """Sparse cross-entropy on class ids; with `soft_targets`, categorical cross-entropy with
    `model.label_smoothing` on one-hot targets."""
    if not soft_targets(config):
        return LOSS
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.model.label_smoothing)


def _compile(model, config: Config, n_train: int, n_classes: int, cfg=None) -> None:
    """Compile for `config` (its train section, or `cfg` for a fine-tuning phase)."""
    top_k, soft = config.evaluate.top_k, soft_targets(config)
    accuracy = (
        keras.metrics.CategoricalAccuracy if soft else keras.metrics.SparseCategoricalAccuracy
    )
    metrics = [accuracy(name="accuracy")]
    if n_classes > top_k:
        top = (
            keras.metrics.TopKCategoricalAccuracy
            if soft
            else keras.metrics.SparseTopKCategoricalAccuracy
        )
        metrics.append(top(top_k, name=f"top{top_k}"))
    training.compile_model(model, cfg or config.train, n_train, _loss(config), metrics)


def _dataset(config: Config, data: vdata.ImageData, split: str, shuffle: bool, labels=True):
    cache_path = str(data.folder / f"cache-{split}") if config.data.cache == "disk" else None
    batch = config.train.batch_size if shuffle else config.score.batch_size
    return vdata.make_dataset(
        data.splits[split],
        config.data.image_size,
        data.channels,
        batch,
        shuffle,
        config.train.seed,
        config.data.cache,
        cache_path,
        labels=labels,
    )


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """Test metrics, confusion matrix, most-confidently-wrong grid, Grad-CAM, model card."""
    opened = steps.open_run(APP, config, options, Meta, prepare, load_model)
    # The data and splits come from the run's own config; what to show, from this command's.
    decode_in_memory(opened.config, opened.data, ("test", "val"))
    report, probabilities = _report(opened, config.evaluate.top_k)
    if config.evaluate.tta:
        report["tta"] = tta_report(opened, config.evaluate.tta_views, probabilities)
        report["leaderboard"]["classification"] = _leaderboard(opened.run, opened.meta, report)
    write_json(opened.run.metrics_path, report)
    test = opened.data.splits["test"]
    plots = write_plots(
        opened.run, opened.model, opened.meta, test, probabilities["test"], report, config.evaluate
    )
    write_card(opened.run, opened.meta, report)
    print(summary_line(report, config.evaluate.top_k, plots), flush=True)
    return report


def _report(opened: OpenRun[Meta], top_k: int) -> tuple[dict, dict[str, np.ndarray]]:
    """metrics.json of an opened run (test and validation, baselines, leaderboard, the test
    input), and the network's probabilities on each split."""
    run, meta, data = opened.run, opened.meta, opened.data
    report = {"primary_metric": "accuracy", "test": {}, "validation": {}}
    probabilities = {}
    for split, key in (("test", "test"), ("val", "validation")):
        dataset = _dataset(opened.config, data, split, shuffle=False, labels=False)
        probabilities[split] = opened.model.predict(dataset, verbose=0)
        report[key] = ev.classification_report(
            data.splits[split].labels, probabilities[split], meta.class_names, top_k
        )
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.train_seconds
    report["baselines"] = evaluate_baselines(run, opened.config, data, top_k)
    report["leaderboard"] = {"classification": _leaderboard(run, meta, report)}
    test_list = vdata.write_test_list(run, data.splits["test"], meta.channels)
    report["test_input"] = "@" + test_list.name
    return report, probabilities


def tta_report(opened: OpenRun[Meta], views: list[str], plain: dict[str, np.ndarray]) -> dict:
    """`evaluate.tta`: test and validation scores of the probabilities averaged over `views`
    (shared/tta.py), and whether they beat the plain network on validation accuracy (the
    only split a choice may be made on)."""
    data, meta = opened.data, opened.meta
    out = {"views": list(views)}
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        images = vdata.split_images(part, np.arange(len(part)), meta.image_size, meta.channels)
        outputs = tta.predict_views(
            lambda x: opened.model.predict(x, verbose=0, batch_size=opened.config.score.batch_size),
            images,
            tta.parse_views(views),
        )
        full = ev.classification_report(part.labels, tta.average(outputs), meta.class_names, 5)
        out[key] = {k: v for k, v in full.items() if k not in ("per_class", "confusion_matrix")}
        out[f"{key}_plain_accuracy"] = float(np.mean(plain[split].argmax(axis=1) == part.labels))
    out["wins_on_validation"] = tta.choose(
        out["validation_plain_accuracy"], out["validation"]["accuracy"]
    )
    print(
        f"evaluate: TTA over {len(views)} views: validation accuracy "
        f"{out['validation']['accuracy']:.4f} vs plain {out['validation_plain_accuracy']:.4f}, "
        f"test {out['test']['accuracy']:.4f} vs {out['test_plain_accuracy']:.4f}",
        flush=True,
    )
    return out


def evaluate_baselines(run: RunDir, config: Config, data: vdata.ImageData, top_k: int) -> dict:
    """The run's baselines on the validation and test splits, with their fit times."""
    fitted = load_fitted(run.path / "baselines")
    if fitted is None:
        return {}
    model, out = fitted
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        prob = model.predict_proba(_pixels(config, data, part))
        full = ev.classification_report(part.labels, prob, data.class_names, top_k)
        out[key] = {k: v for k, v in full.items() if k not in ("per_class", "confusion_matrix")}
    baselines = {BASELINE: out}
    recipe = evaluate_recipe(run, config, data, top_k)
    if recipe is not None:
        baselines[RECIPE] = recipe
    return baselines


def _leaderboard(run: RunDir, meta: Meta, report: dict) -> dict:
    """The network beside the baselines on test accuracy (macro F1 beside it)."""

    def scores(part: dict) -> dict:
        return {m: part[m] for m in BOARD_METRICS}

    fits = ["head", "finetune"] if meta.architecture == "transfer" else [meta.architecture]
    summaries = [s for s in (training.fit_summary(run, n) for n in fits) if s]
    frames = [pd.read_csv(h) for n in fits if (h := run.path / f"history-{n}.csv").exists()]
    history = pd.concat(frames, ignore_index=True) if frames else None
    models = {
        meta.architecture: leaderboard.model_entry(
            leaderboard.NETWORK,
            scores(report["test"]),
            scores(report["validation"]),
            # The range test is part of getting the network trained: its seconds count.
            sum(s["seconds"] for s in summaries) + ((meta.lr_find or {}).get("seconds") or 0),
            history,
        )
    }
    if "tta" in report:  # evaluate-time only: `score` and the exports use the plain network
        models[f"{meta.architecture}{TTA_SUFFIX}"] = leaderboard.model_entry(
            leaderboard.NETWORK,
            scores(report["tta"]["test"]),
            scores(report["tta"]["validation"]),
            models[meta.architecture]["train_seconds"],
        )
    models |= leaderboard.baseline_entries(report["baselines"], BOARD_METRICS)
    return leaderboard.build(
        BOARD_METRICS[0], True, models, meta.architecture, history_column="val_accuracy"
    )


# ---------------------------------------------------------------------------------------------
# score and export


def score(config: Config, options: StepOptions | None = None) -> dict:
    """Image files or folders in -> predictions CSV and rejects CSV (path, reason), atomically."""
    options = options or steps.NO_OPTIONS
    run = steps.locate(APP, config, options)
    files = expand_inputs(list(options.inputs), "image file(s)")
    output, rejects = default_output_paths(options.inputs[0], options.output, options.rejects)
    cfg = config.score
    scorer = ImageScorer(run, cfg.top_k, cfg.batch_size, cfg.max_image_pixels)
    return score_files(files, scorer, output, rejects, cfg.chunk_files, "scoring image files")


def export(config: Config, options: StepOptions | None = None) -> Path:
    """Write the run's model as a TensorFlow SavedModel (serving signature: raw uint8 images in)."""
    if config.export.format == "tflite":
        return export_edge(config, options)
    meta = Meta.read(steps.locate(APP, config, options))
    describe = (
        "signatures: serve (uint8 images, any size), serve_bytes (encoded PNG/JPEG), metadata"
    )
    writer = functools.partial(write_saved_model, meta=meta)
    return steps.export_step(APP, config, options, load_model, writer, describe)


def export_edge(config: Config, options: StepOptions | None = None) -> Path:
    """LiteRT files (float16, int8 calibrated on train images) in `--output` (default the run's
    tflite/), with their test accuracy beside the Keras model's on the same images (printed and
    saved as tflite_parity.json)."""
    opened = steps.open_run(APP, config, options, Meta, prepare, load_model)
    meta, data = opened.meta, opened.data
    size = tuple(meta.image_size)
    train, test = data.splits["train"], data.splits["test"]
    keep = subsample(train.labels, config.export.representative_images, config.train.seed)
    folder = Path(options.output) if options and options.output else opened.run.path / "tflite"
    modes = export_tflite_modes(
        opened.model,
        folder,
        size,
        _fixed_size(train, keep, size, meta.channels),
        _fixed_size(test, np.arange(len(test)), size, meta.channels),
    )
    parity = {}
    for mode, result in modes.items():
        accuracy = float(np.mean(result["outputs"].argmax(axis=1) == test.labels))
        parity[mode] = {"accuracy": accuracy} | {
            k: v for k, v in result.items() if k in ("path", "bytes")
        }
    write_json(folder / "tflite_parity.json", parity)
    keras_accuracy = parity["keras"]["accuracy"]
    for mode in TFLITE_MODES:
        edge = parity[mode]
        print(
            f"export: LiteRT {mode} -> {edge['path']} ({edge['bytes'] / 1024:.0f} KiB); test "
            f"accuracy {edge['accuracy']:.4f} vs Keras {keras_accuracy:.4f} "
            f"({(edge['accuracy'] - keras_accuracy) * 100:+.1f} points) on {len(test):,} images",
            flush=True,
        )
    return folder


def _fixed_size(split: vdata.Split, rows, size, channels: int) -> np.ndarray:
    """The split's images at `rows` as uint8 at the model's size (files decoded as training
    decodes them)."""
    if split.images is not None:
        return resized_uint8(split.images[rows], size)
    return vdata.decode_all([split.paths[i] for i in rows], size, channels)
