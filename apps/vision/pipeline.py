"""The vision app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.vision import data as vdata
from apps.vision.config import Config
from apps.vision.model import FEATURES, build_model, find_backbone
from apps.vision.plots import plot_image_grid
from shared import evaluation as ev
from shared import leaderboard, training
from shared.config import load_config, to_dict
from shared.export import export_saved_model, image_spec, load_saved_model
from shared.gradcam import gradcam_heatmaps, plot_gradcam_grid
from shared.images import ImageError, read_image
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
    default_output_paths,
    expand_inputs,
    score_files,
)

APP = "vision"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
CARD_TITLE = "Image classifier: model card"
BOARD_METRICS = ("accuracy", "macro_f1")  # the leaderboard's primary metric first
TEST_LIST = "test_split.txt"  # the test images, one path a line, as `score` reads them


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options=None) -> vdata.ImageData:
    """Write the digits sample if configured, read and check every image, split; cached per input."""
    cfg = config.data
    if cfg.source == "digits":
        write_digits(Path(cfg.path))
    source = Path(cfg.path)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (data.path)")
    digest = config_digest(
        {"data": to_dict(cfg), "seed": config.train.seed, "files": source_fingerprint(source)}
    )
    folder = Path(config.run.root) / APP / "prepared" / digest[:12]
    start = time.perf_counter()
    plan = vdata.SplitPlan(
        cfg.val_fraction, cfg.test_fraction, config.train.seed, cfg.split_column, cfg.dev_split
    )
    cached = folder / "manifest.csv"
    if cached.exists() and (folder / "prepare.json").exists():
        data = _from_manifest(cached, read_json(folder / "prepare.json"))
        print(f"prepare: using the checked file list in {folder}", flush=True)
    else:
        data = vdata.read(source, cfg.format, cfg.channels, cfg.max_image_pixels, plan)
        if training.is_chief():
            info = vdata.summary(data) | {"source": str(source)}
            write_table(folder / "rejects.csv", vdata.rejects_frame(data.rejects))
            write_json(folder / "prepare.json", info)
            if data.splits["train"].paths is not None:  # arrays are re-read, files not re-checked
                write_table(cached, _manifest(data))
        counts = ", ".join(f"{s} {len(p):,}" for s, p in data.splits.items())
        print(
            f"prepare: {sum(len(p) for p in data.splits.values()):,} images, "
            f"{len(data.class_names)} classes, {data.channels} channel(s) from {source} "
            f"({data.format}) in {time.perf_counter() - start:.1f}s; {counts}",
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


def _manifest(data: vdata.ImageData) -> pd.DataFrame:
    rows = [
        (path, data.class_names[label], split)
        for split, part in data.splits.items()
        for path, label in zip(part.paths, part.labels, strict=True)
    ]
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def _from_manifest(path: Path, info: dict) -> vdata.ImageData:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    lookup = {name: i for i, name in enumerate(info["classes"])}
    splits = {}
    for split in vdata.SPLITS:
        part = frame[frame.split == split]
        labels = np.array([lookup[v] for v in part.label], dtype=np.int32)
        splits[split] = vdata.Split(labels, paths=part.path.tolist())
    rejects_file = path.parent / "rejects.csv"
    rejects = (
        pd.read_csv(rejects_file, dtype=str, keep_default_na=False)
        if rejects_file.exists()
        else None
    )
    pairs = list(rejects.itertuples(index=False, name=None)) if rejects is not None else []
    return vdata.ImageData(
        info["classes"], info["channels"], splits, info["format"], info["own_splits"], pairs
    )


def write_digits(folder: Path) -> None:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images) as `folder/<digit>/*.png`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    stamp = folder / ".complete"
    if stamp.exists():
        return
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for index, (image, label) in enumerate(zip(images, digits.target, strict=True)):
        target = folder / str(label) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, suffix=".png") as tmp:
            Image.fromarray(image, mode="L").save(tmp, format="PNG")
    stamp.write_text(f"{len(images)} images from sklearn.datasets.load_digits\n")
    print(f"prepare: wrote {len(images):,} digit images to {folder}", flush=True)


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options=None) -> RunDir:
    """Fit the configured network (for transfer learning, the head first, then everything),
    then the pixels + logistic regression baseline on the same split.

    A network whose loss or weights go non-finite stops: the run is marked failed (metrics.json,
    model card), exits non-zero and never becomes `latest`.
    """
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    cfg, size = config.train, config.data.image_size
    n_classes = len(data.class_names)
    decode_in_memory(config, data, ("train", "val"))
    train_ds = _dataset(config, data, "train", shuffle=True)
    val_ds = _dataset(config, data, "val", shuffle=False)
    start = time.perf_counter()
    with strategy.scope():
        model = build_model(config.model, config.augment, n_classes, size, data.channels)
        # Random augmentation does not compile with XLA: under `xla` it runs in tf.data.
        head, core = training.xla_split(model, cfg, ["augment"])
        _compile(core, cfg, len(data.splits["train"]), n_classes, config.evaluate.top_k)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    name = "head" if config.model.architecture == "transfer" else config.model.architecture
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on "
        f"{len(data.splits['train']):,} images, {n_classes} classes",
        flush=True,
    )
    n_train = len(data.splits["train"])
    try:
        training.fit(core, train_ds, val_ds, run, cfg, name, "val_loss", "min", examples=n_train)
        backbone = find_backbone(model) if config.model.architecture == "transfer" else None
        if backbone is not None and config.model.fine_tune_epochs:
            backbone.trainable = True
            tune = dataclasses.replace(
                cfg,
                epochs=config.model.fine_tune_epochs,
                learning_rate=cfg.learning_rate * config.model.fine_tune_learning_rate_ratio,
                warmup_epochs=0.0,
            )
            with strategy.scope():
                _compile(core, tune, n_train, n_classes, config.evaluate.top_k)
            print("train: fine-tuning the whole network (backbone unfrozen)", flush=True)
            training.fit(
                core, train_ds, val_ds, run, tune, "finetune", "val_loss", "min", examples=n_train
            )
    except training.Diverged as exc:  # one network per run: nothing is left to ship
        training.fail_run(run, CARD_TITLE, {config.model.architecture: str(exc)})
    seconds = time.perf_counter() - start
    if run.is_chief and config.baseline.enabled:
        fit_baseline(config, data, run)
    if run.is_chief:
        with atomic_path(run.model_path, suffix=".keras") as tmp:
            model.save(tmp)
        with atomic_dir(run.saved_model_path) as tmp:
            export_saved_model(model, str(tmp), image_spec(model.input.shape[-1]))
        write_json(
            run.meta_path,
            {
                "app": APP,
                "class_names": data.class_names,
                "image_size": list(size),
                "channels": data.channels,
                "input": "uint8 images (batch, height, width, channels), any height and width",
                "architecture": config.model.architecture,
                "backbone": config.model.backbone or None,
                "prepared": str(data.folder),
                "train_seconds": round(seconds, 1),
                "precision_policy": policy,
                "xla_compiled": bool(core.jit_compile),
            },
        )
    run.finish()
    print(
        f"train: finished in {seconds:.0f}s; weights sha256 {training.weights_digest(model)}; "
        f"model -> {run.model_path}",
        flush=True,
    )
    return run


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


def _compile(model, cfg, n_train: int, n_classes: int, top_k: int) -> None:
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if n_classes > top_k:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(top_k, name=f"top{top_k}"))
    training.compile_model(model, cfg, n_train, "sparse_categorical_crossentropy", metrics)


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


def load_model(run: RunDir) -> keras.Model:
    """The run's saved model, loaded safely (custom layers and KerasHub classes registered)."""
    import keras_hub  # noqa: F401  registers the backbone classes a transfer model contains

    return load_saved_model(run.model_path)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """Test metrics, confusion matrix, most-confidently-wrong grid, Grad-CAM, model card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    # The data and splits come from the run's own config; what to show, from this command's.
    run_config = load_config(Config, run.path / "config.yaml")
    data = prepare(run_config)
    model = load_model(run)
    names, size, channels = meta["class_names"], meta["image_size"], meta["channels"]
    top_k = config.evaluate.top_k
    decode_in_memory(run_config, data, ("test", "val"))
    report = {"primary_metric": "accuracy", "test": {}, "validation": {}}
    probabilities = {}
    for split, key in (("test", "test"), ("val", "validation")):
        dataset = _dataset(run_config, data, split, shuffle=False, labels=False)
        probabilities[split] = model.predict(dataset, verbose=0)
        report[key] = ev.classification_report(
            data.splits[split].labels, probabilities[split], names, top_k
        )
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.get("train_seconds")
    report["baselines"] = evaluate_baselines(run, run_config, data, top_k)
    report["leaderboard"] = {"classification": _leaderboard(run, meta, report)}
    report["test_input"] = "@" + write_test_list(run, data.splits["test"], channels).name
    write_json(run.metrics_path, report)

    plots = run.subdir("plots")
    test, prob = data.splits["test"], probabilities["test"]
    ev.plot_confusion_matrix(
        np.array(report["test"]["confusion_matrix"]), names, plots / "confusion_matrix.png",
        f"Confusion matrix (test, accuracy {report['test']['accuracy']:.3f})",
    )  # fmt: skip
    predicted, confidence = prob.argmax(axis=1), prob.max(axis=1)
    wrong = np.flatnonzero(predicted != test.labels)
    wrong = wrong[np.argsort(-confidence[wrong])][: config.evaluate.wrong_images]
    if len(wrong):
        plot_image_grid(
            vdata.split_images(test, wrong, size, channels),
            [
                f"true {names[test.labels[i]]}\npred {names[predicted[i]]} ({confidence[i]:.2f})"
                for i in wrong
            ],
            plots / "most_confidently_wrong.png",
            f"Most confidently wrong test images ({len(wrong)} of {int((predicted != test.labels).sum())} errors)",
        )
    count = min(config.evaluate.gradcam_images, len(test))
    if count:
        chosen = np.linspace(0, len(test) - 1, count).astype(int)
        images = vdata.split_images(test, chosen, size, channels)
        heatmaps = gradcam_heatmaps(model, images, predicted[chosen], FEATURES)
        titles = [f"true {names[test.labels[i]]}\npred {names[predicted[i]]}" for i in chosen]
        plot_gradcam_grid(images, heatmaps, titles, plots / "gradcam.png", "Grad-CAM (test images)")
    if config.evaluate.gradcam_paths:
        _gradcam_files(model, config.evaluate.gradcam_paths, meta, plots / "gradcam_files.png")
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    _write_card(run, meta, report)
    test_report = report["test"]
    extra = (
        f", top-{top_k} {test_report[f'top{top_k}_accuracy']:.4f}"
        if f"top{top_k}_accuracy" in test_report
        else ""
    )
    print(
        f"evaluate: test accuracy {test_report['accuracy']:.4f}{extra}, macro F1 "
        f"{test_report['macro_f1']:.4f} on {test_report['examples']:,} images; plots -> {plots}",
        flush=True,
    )
    return report


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
    return {BASELINE: out}


def _leaderboard(run: RunDir, meta: dict, report: dict) -> dict:
    """The network beside the baselines on test accuracy (macro F1 beside it)."""

    def scores(part: dict) -> dict:
        return {m: part[m] for m in BOARD_METRICS}

    fits = ["head", "finetune"] if meta["architecture"] == "transfer" else [meta["architecture"]]
    summaries = [s for s in (training.fit_summary(run, n) for n in fits) if s]
    frames = [pd.read_csv(h) for n in fits if (h := run.path / f"history-{n}.csv").exists()]
    history = pd.concat(frames, ignore_index=True) if frames else None
    models = {
        meta["architecture"]: leaderboard.model_entry(
            leaderboard.NETWORK,
            scores(report["test"]),
            scores(report["validation"]),
            sum(s["seconds"] for s in summaries),
            history,
        )
    }
    for name, entry in report["baselines"].items():
        models[name] = leaderboard.model_entry(
            leaderboard.BASELINE,
            scores(entry["test"]),
            scores(entry["validation"]),
            entry["fit_seconds"],
        )
    return leaderboard.build(
        BOARD_METRICS[0], True, models, meta["architecture"], history_column="val_accuracy"
    )


def write_test_list(run: RunDir, test: vdata.Split, channels: int) -> Path:
    """The test images as `score` takes them: one path a line. Images that came as arrays
    (NPZ, IDX) are written as PNG files first, under test_split/."""
    paths = test.paths
    if paths is None:
        from PIL import Image

        folder = run.subdir("test_split")
        paths = []
        for index, image in enumerate(test.images):
            target = folder / f"{index:06d}.png"
            with atomic_path(target, suffix=".png") as tmp:
                Image.fromarray(image[..., 0] if channels == 1 else image).save(tmp, format="PNG")
            paths.append(str(target))
    target = run.path / TEST_LIST
    write_text(target, "".join(f"{Path(path).absolute()}\n" for path in paths))
    return target


def _gradcam_files(model, paths: list[str], meta: dict, target: Path) -> None:
    size, channels = meta["image_size"], meta["channels"]
    images = []
    for path in paths:
        try:
            raw = read_image(path, channels)
        except ImageError as exc:
            raise DataError(f"evaluate.gradcam_paths: {exc}") from exc
        images.append(
            keras.ops.convert_to_numpy(keras.layers.Resizing(*size)(raw.astype("float32")))
        )
    batch = np.clip(np.round(np.stack(images)), 0, 255).astype(np.uint8)
    prob = model.predict(batch, verbose=0)
    heatmaps = gradcam_heatmaps(model, batch, prob.argmax(axis=1), FEATURES)
    titles = [
        f"{Path(p).name}\npred {meta['class_names'][k]}"
        for p, k in zip(paths, prob.argmax(axis=1), strict=True)
    ]
    plot_gradcam_grid(batch, heatmaps, titles, target, "Grad-CAM (chosen images)")


def _write_card(run: RunDir, meta: dict, report: dict) -> None:
    data, test = report["data"], report["test"]
    splits = ", ".join(f"{s}: {v['images']:,}" for s, v in data["splits"].items())
    columns = ["accuracy", "macro_f1", "macro_precision", "macro_recall"] + [
        m for m in test if m.startswith("top")
    ]
    per_class = metrics_table(test["per_class"], ["precision", "recall", "f1", "support"])
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Intended use": "Classifies images into the classes it was trained on: "
            f"{', '.join(meta['class_names'])}. Every image gets a class; there is no 'none of these' answer.",
            "Data": f"Source `{data['source']}` ({data['format']}); {data['channels']} channel(s); "
            f"{data['rejected_files']:,} file(s) rejected at preparation. Splits: {splits} "
            f"({'own splits: ' + ', '.join(data['own_splits']) if data['own_splits'] else 'stratified, seeded'}).",
            "Model": f"Architecture `{meta['architecture']}`"
            + (f" on the KerasHub backbone `{meta['backbone']}`" if meta.get("backbone") else "")
            + f". Input: raw uint8 images of any size; rescaling and resizing to {meta['image_size'][0]}x"
            f"{meta['image_size'][1]} happen inside the model. Trained in {meta.get('train_seconds')}s.",
            "Metrics (test and validation)": metrics_table(
                {"test": test, "validation": report["validation"]}, columns
            ),
            "Leaderboard (the network beside its baselines, same split)": leaderboard.to_markdown(
                report["leaderboard"]["classification"]
            )
            + _baseline_note(report["baselines"]),
            "Per class (test)": per_class,
            "Limits": "Accuracy holds only for images like the training images (same kind of camera, "
            "framing, resolution). Grad-CAM shows where the network looked, not why; read it as a sanity check.",
        },
    )


def _baseline_note(baselines: dict) -> str:
    if BASELINE not in baselines:
        return "\n\nNo baseline was fitted (`baseline.enabled=false`)."
    fit = baselines[BASELINE]
    return (
        f"\n\n`{BASELINE}`: every pixel at the model's size, standardised, into a multinomial "
        f"logistic regression (scikit-learn) on {fit['train_images']:,} training images; "
        f"C = {fit['C']:g}, chosen on validation log-loss from {', '.join(fit['val_log_loss'])}. "
        "Time to baseline: the network's training seconds until its validation accuracy first "
        "matched the best baseline's."
    )


# ---------------------------------------------------------------------------------------------
# score and export


class ImageScorer:
    """Image files in -> predicted label, probability and the top-k labels with probabilities."""

    def __init__(self, run: RunDir, top_k: int, batch_size: int, max_pixels: int):
        self.meta = load_meta(run)
        self.model = load_model(run)
        self.class_names = self.meta["class_names"]
        self.top_k = min(top_k, len(self.class_names))
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.columns = ["path", "predicted_label", "probability"] + [
            f"top{i}_{kind}" for i in range(1, self.top_k + 1) for kind in ("label", "probability")
        ]

    def _read(self, path: str) -> np.ndarray | str:
        """The decoded image, or the reason it cannot be used."""
        try:
            return read_image(path, self.meta["channels"], self.max_pixels)
        except ImageError as exc:
            return str(exc).removeprefix(f"{path}: ")

    def predict(self, paths: list[str]) -> list[list | str]:
        """Per path, in order: its output row, or the reason the file cannot be used."""
        found = [self._read(path) for path in paths]
        # Raw images of one size go to the model together; it resizes them itself.
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(found):
            if not isinstance(image, str):
                by_shape.setdefault(image.shape, []).append(i)
        probabilities = {}
        for group in by_shape.values():
            batch = np.stack([found[i] for i in group])
            prob = np.concatenate(
                [
                    self.model.predict_on_batch(batch[i : i + self.batch_size])
                    for i in range(0, len(batch), self.batch_size)
                ]
            )
            probabilities.update(zip(group, prob, strict=True))
        out = []
        for i, path in enumerate(paths):
            if i not in probabilities:
                out.append(found[i])
                continue
            prob = probabilities[i]
            order = np.argsort(-prob)[: self.top_k]
            row = [path, self.class_names[order[0]], round(float(prob[order[0]]), 6)]
            for k in order:
                row += [self.class_names[k], round(float(prob[k]), 6)]
            out.append(row)
        return out


def score(config: Config, options) -> dict:
    """Image files or folders in -> predictions CSV and rejects CSV (path, reason), atomically."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    files = expand_inputs(list(options.inputs), "image file(s)")
    first = Path(options.inputs[0])
    output, rejects = default_output_paths(first, options.output, options.rejects)
    scorer = ImageScorer(
        run, config.score.top_k, config.score.batch_size, config.score.max_image_pixels
    )
    return score_files(
        files, scorer, output, rejects, config.score.chunk_files, "scoring image files"
    )


def export(config: Config, options) -> Path:
    """Write the run's model as a TensorFlow SavedModel (serving signature: raw uint8 images in)."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    model = load_model(run)
    with atomic_dir(target) as tmp:
        export_saved_model(model, str(tmp), image_spec(model.input.shape[-1]))
    print(f"export: SavedModel -> {target} (input: uint8 images, any size)", flush=True)
    return target
