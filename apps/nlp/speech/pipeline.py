"""The speech app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.nlp.speech import data as sdata
from apps.nlp.speech import synth
from apps.nlp.speech.audio import AudioError, check_audio, clip_length, fit_clip, read_audio
from apps.nlp.speech.audio import windows as audio_windows
from apps.nlp.speech.config import Config
from apps.nlp.speech.features import extract, extract_files, feature_shape, params_digest
from apps.nlp.speech.model import build_model
from apps.nlp.speech.plots import plot_feature_grid, plot_speaker_accuracy
from shared import evaluation as ev
from shared import training
from shared.config import load_config
from shared.export import export_saved_model, load_saved_model, model_input_spec
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, atomic_dir, atomic_path, read_json, write_json, write_table
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir, config_digest, load_meta
from shared.scoring import (
    default_output_paths,
    expand_inputs,
    score_files,
)

APP = "speech"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


# ---------------------------------------------------------------------------------------------
# prepare


@dataclasses.dataclass
class Split:
    """One split's feature tensors, integer labels, speakers and file paths."""

    x: np.ndarray  # (clips, frames, bins) float32
    y: np.ndarray  # (clips,) int32
    speakers: np.ndarray  # (clips,) str, '' when unknown
    paths: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass
class SpeechData:
    class_names: list[str]
    splits: dict[str, Split]
    rejects: list[tuple[str, str]]
    info: dict  # what prepare found, as written to prepare.json
    folder: Path


def feature_params(config: Config) -> dict:
    return config.features.params(config.data.sample_rate, config.data.clip_seconds)


def _checks(config: Config) -> dict:
    return {"min_seconds": config.data.min_seconds, "silence_db": config.data.silence_db}


def cache_root(config: Config) -> Path:
    return Path(config.features.cache_dir or Path(config.run.root) / APP / "feature-cache")


def prepare(config: Config, options=None) -> SpeechData:
    """Synthesize the sample if configured, read the layout, extract (or load cached) features,
    split (speaker-disjoint when speakers are known) and record what was found."""
    cfg = config.data
    if cfg.source == "synthetic" and training.is_chief():
        synth.write_dataset(cfg.path, cfg.synth, cfg.sample_rate, cfg.clip_seconds)
    start = time.perf_counter()
    table, rejects = sdata.read(cfg.path, cfg.format, cfg.filename_pattern, cfg.speaker_pattern)
    params = feature_params(config)
    features, bad, stats = extract_files(
        list(table.path), params, _checks(config), cache_root(config), config.features.workers
    )
    rejects = rejects + sorted(bad.items())
    table = table[table.path.isin(features.keys())]
    if table.empty:
        raise DataError(f"{cfg.path}: every audio file was rejected; first: {rejects[0][1]}")
    table, mode = sdata.assign_splits(
        table, cfg.split, cfg.val_fraction, cfg.test_fraction, config.train.seed
    )
    class_names = sorted(table.label.unique())
    lookup = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split in sdata.SPLITS:
        part = table[table.split == split]
        if part.empty:
            raise DataError(
                f"{cfg.path}: the {split} split is empty; add files or change data.split"
            )
        splits[split] = Split(
            np.stack([features[p] for p in part.path]),
            part.label.map(lookup).to_numpy(np.int32),
            part.speaker.to_numpy(str),
            part.path.tolist(),
        )
    speakers = {s: sorted(set(splits[s].speakers) - {""}) for s in sdata.SPLITS}
    info = {
        "source": str(cfg.path),
        "classes": class_names,
        "split_mode": mode,
        "splits": {s: {"clips": len(p), "speakers": len(speakers[s])} for s, p in splits.items()},
        "speaker_overlap_train_test": len(set(speakers["train"]) & set(speakers["test"])),
        "test_speakers": speakers["test"],
        "rejected_files": len(rejects),
        "features": params | {"digest": params_digest(params)},
        "feature_cache": stats,
    }
    stable = {k: v for k, v in info.items() if k != "feature_cache"}  # cache hits vary per run
    digest = config_digest({"info": stable, "paths": table.path.tolist()})
    folder = Path(config.run.root) / APP / "prepared" / digest[:12]
    if training.is_chief():
        write_table(folder / "manifest.csv", table)
        write_table(folder / "rejects.csv", pd.DataFrame(rejects, columns=["path", "reason"]))
        write_json(folder / "prepare.json", info)
    counts = ", ".join(f"{s} {len(p):,}" for s, p in splits.items())
    print(
        f"prepare: {len(table):,} clips, {len(class_names)} words, split {mode} ({counts}); "
        f"features {stats['cached']:,} cached + {stats['extracted']:,} extracted "
        f"({stats['workers']} worker(s)) in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    if rejects:
        print(
            f"prepare: {len(rejects):,} file(s) rejected, reasons in {folder / 'rejects.csv'}; "
            f"first: {rejects[0][0]}: {rejects[0][1]}",
            flush=True,
        )
    return SpeechData(class_names, splits, rejects, info, folder)


# ---------------------------------------------------------------------------------------------
# train


def _onehot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[y]


def train(config: Config, options=None) -> RunDir:
    """Fit the configured network on the training split's features."""
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    cfg, n_classes = config.train, len(data.class_names)
    train_split, val_split = data.splits["train"], data.splits["val"]
    params = feature_params(config)
    shape = feature_shape(params)
    mean = train_split.x.mean(axis=(0, 1))
    variance = train_split.x.var(axis=(0, 1))
    train_ds = in_memory_dataset(
        train_split.x, _onehot(train_split.y, n_classes), cfg.batch_size, True, cfg.seed
    )
    val_ds = in_memory_dataset(
        val_split.x, _onehot(val_split.y, n_classes), config.score.batch_size, False
    )
    start = time.perf_counter()
    with strategy.scope():
        model = build_model(config.model, config.augment, n_classes, shape, mean, variance,
                            params["kind"])  # fmt: skip
        boundary = ["augment"] if any(la.name == "augment" for la in model.layers) else ["features"]
        head, core = training.xla_split(model, cfg, boundary)
        _compile(core, cfg, len(train_split), n_classes, config)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    name = config.model.architecture
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on {len(train_split):,} "
        f"clips of {shape[0]} frames x {shape[1]} {params['kind']} bins, {n_classes} words",
        flush=True,
    )
    training.fit(core, train_ds, val_ds, run, cfg, name, "val_loss", "min",
                 examples=len(train_split))  # fmt: skip
    seconds = time.perf_counter() - start
    if run.is_chief:
        with atomic_path(run.model_path, suffix=".keras") as tmp:
            model.save(tmp)
        with atomic_dir(run.saved_model_path) as tmp:
            export_saved_model(model, str(tmp), model_input_spec(model))
        write_json(
            run.meta_path,
            {
                "app": APP,
                "class_names": data.class_names,
                "features": params,
                "features_digest": params_digest(params),
                "feature_shape": list(shape),
                "checks": _checks(config),
                "input": "float32 features (batch, frames, bins) from apps.nlp.speech.features.extract",
                "architecture": config.model.architecture,
                "split_mode": data.info["split_mode"],
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


def _compile(model, cfg, n_train: int, n_classes: int, config: Config) -> None:
    top_k = config.evaluate.top_k
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if n_classes > top_k:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(top_k, name=f"top{top_k}"))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.model.label_smoothing)
    training.compile_model(model, cfg, n_train, loss, metrics)


def load_model(run: RunDir) -> keras.Model:
    """The run's saved model, loaded safely (the custom layers registered)."""
    import apps.nlp.speech.augment  # noqa: F401  registers the augmentation layers

    return load_saved_model(run.model_path)


def predict_features(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    if not len(x):
        return np.zeros((0, model.output.shape[-1]), np.float32)
    return np.concatenate(
        [model.predict_on_batch(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    )


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """Test metrics (accuracy, macro F1, per class, per speaker), plots and the model card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    run_config = load_config(Config, run.path / "config.yaml")
    data = prepare(run_config)
    model = load_model(run)
    names, top_k = meta["class_names"], config.evaluate.top_k
    report = {"primary_metric": "accuracy", "test": {}, "validation": {}}
    probabilities = {}
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        probabilities[split] = predict_features(model, part.x, config.score.batch_size)
        report[key] = ev.classification_report(part.y, probabilities[split], names, top_k)
    test, prob = data.splits["test"], probabilities["test"]
    predicted = prob.argmax(axis=1)
    per_speaker = {}
    if (test.speakers != "").all():
        for speaker in sorted(set(test.speakers)):
            mask = test.speakers == speaker
            per_speaker[speaker] = {"accuracy": float(np.mean(predicted[mask] == test.y[mask])),
                                    "clips": int(mask.sum())}  # fmt: skip
    report["test"]["per_speaker"] = per_speaker
    report["speaker_disjoint"] = (
        data.info["split_mode"] == "speaker" and data.info["speaker_overlap_train_test"] == 0
    )
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.get("train_seconds")
    write_json(run.metrics_path, report)

    plots = run.subdir("plots")
    ev.plot_confusion_matrix(
        np.array(report["test"]["confusion_matrix"]), names, plots / "confusion_matrix.png",
        f"Confusion matrix (test, accuracy {report['test']['accuracy']:.3f})",
    )  # fmt: skip
    if per_speaker:
        plot_speaker_accuracy(per_speaker, plots / "per_speaker_accuracy.png")
    count = min(config.evaluate.example_inputs, len(test))
    if count:
        # Up to half of them wrong predictions, the rest correct ones spread over the split.
        wrong = np.flatnonzero(predicted != test.y)[: count // 2]
        right = np.flatnonzero(predicted == test.y)
        picks = right[np.linspace(0, len(right) - 1, count - len(wrong)).astype(int)]
        chosen = np.concatenate([wrong, picks if len(right) else right]).astype(int)
        titles = [
            f"true {names[test.y[i]]} / pred {names[predicted[i]]} ({prob[i].max():.2f})"
            for i in chosen
        ]
        plot_feature_grid(test.x[chosen], titles, plots / "examples.png",
                          f"Test inputs ({meta['features']['kind']}) with their predictions")  # fmt: skip
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    _write_card(run, meta, report)
    t = report["test"]
    print(
        f"evaluate: test accuracy {t['accuracy']:.4f}, macro F1 {t['macro_f1']:.4f} on "
        f"{t['examples']:,} clips"
        + (" by speakers unseen in training" if report["speaker_disjoint"] else "")
        + f"; plots -> {plots}",
        flush=True,
    )
    return report


def _write_card(run: RunDir, meta: dict, report: dict) -> None:
    data, test = report["data"], report["test"]
    splits = ", ".join(
        f"{s}: {v['clips']:,} clips / {v['speakers']} speakers" for s, v in data["splits"].items()
    )
    columns = ["accuracy", "macro_f1", "macro_precision", "macro_recall"] + [
        m for m in test if m.startswith("top")
    ]
    params = meta["features"]
    sections = {
        "Intended use": "Recognises which of these words a short recording holds: "
        f"{', '.join(meta['class_names'])}. Every clip gets a word; there is no 'silence' or "
        "'unknown' answer, so score only recordings that contain one of them.",
        "Data": f"Source `{data['source']}`; {data['rejected_files']:,} file(s) rejected at "
        f"preparation. Split: {data['split_mode']} ({splits}); "
        f"{data['speaker_overlap_train_test']} test speaker(s) also in training.",
        "Model": f"Architecture `{meta['architecture']}` on librosa {params['kind']} features "
        f"({meta['feature_shape'][0]} frames x {meta['feature_shape'][1]} bins; "
        f"{params['sample_rate']} Hz, {params['clip_seconds']} s clips, FFT {params['n_fft']}, "
        f"hop {params['hop_length']}). Per-bin normalisation is inside the model; scoring "
        f"refuses other feature parameters. Trained in {meta.get('train_seconds')}s.",
        "Metrics (test and validation)": metrics_table(
            {"test": test, "validation": report["validation"]}, columns
        ),
        "Per word (test)": metrics_table(
            test["per_class"], ["precision", "recall", "f1", "support"]
        ),
    }
    if test["per_speaker"]:
        sections["Per speaker (test)"] = metrics_table(test["per_speaker"], ["accuracy", "clips"])
    sections["Limits"] = (
        "Accuracy holds for recordings like the training ones (microphones, noise, accents). "
        "The synthetic sample is far simpler than real speech; train on real recordings before "
        "trusting it on people."
    )
    write_model_card(run.card_path, "Spoken-word recogniser: model card", sections)


# ---------------------------------------------------------------------------------------------
# score and export


class SpeechScorer:
    """Audio files in -> predicted word, probability, top-k words; long files in windows."""

    def __init__(self, run: RunDir, config: Config):
        self.meta = load_meta(run)
        self.params = self.meta["features"]
        _check_features(feature_params(config), self.params, run)
        self.model = load_model(run)
        expected = (None, *feature_shape(self.params))
        if tuple(self.model.input.shape) != expected:
            raise DataError(
                f"{run.path}: the model takes {tuple(self.model.input.shape)} but its feature "
                f"parameters give {expected}; the run folder is inconsistent"
            )
        self.class_names = self.meta["class_names"]
        self.top_k = min(config.score.top_k, len(self.class_names))
        self.batch_size = config.score.batch_size
        rate = self.params["sample_rate"]
        self.length = clip_length(rate, self.params["clip_seconds"])
        self.hop = max(1, int(round(config.score.window_hop_seconds * rate)))
        self.min_db = config.score.window_min_db
        self.columns = ["path", "predicted_word", "probability"] + [
            f"top{i}_{kind}" for i in range(1, self.top_k + 1) for kind in ("word", "probability")
        ] + ["window_offset_s", "windows"]  # fmt: skip

    def windows(self, path: str) -> tuple[np.ndarray, np.ndarray] | str:
        """Features of the file's clip (or of each loud-enough window), and window starts (s);
        or the reason the file cannot be scored."""
        rate = self.params["sample_rate"]
        try:
            samples = read_audio(path, rate)
            check_audio(samples, rate, **self.meta["checks"])
        except AudioError as exc:
            return str(exc)
        if len(samples) <= self.length:
            return extract(fit_clip(samples, self.length), self.params)[None], np.zeros(1)
        pieces, starts = audio_windows(samples, self.length, self.hop)
        energy = 10 * np.log10(np.mean(pieces.astype(np.float64) ** 2, axis=1) + 1e-12)
        keep = energy >= energy.max() + self.min_db
        features = np.stack([extract(piece, self.params) for piece in pieces[keep]])
        return features, starts[keep] / rate

    def predict(self, paths: list[str]) -> list[list | str]:
        """Per path, in order: its output row, or the reason it cannot be scored."""
        found = [self.windows(path) for path in paths]
        ready = [f for f in found if not isinstance(f, str)]
        if not ready:
            return found
        prob = predict_features(
            self.model, np.concatenate([features for features, _ in ready]), self.batch_size
        )
        out, begin = [], 0
        for path, result in zip(paths, found, strict=True):
            if isinstance(result, str):
                out.append(result)
                continue
            features, offsets = result
            windows = prob[begin : begin + len(features)]
            begin += len(features)
            best = int(np.argmax(windows.max(axis=1)))
            row_prob = windows[best]
            order = np.argsort(-row_prob)[: self.top_k]
            row = [path, self.class_names[order[0]], round(float(row_prob[order[0]]), 6)]
            for k in order:
                row += [self.class_names[k], round(float(row_prob[k]), 6)]
            out.append(row + [round(float(offsets[best]), 3), len(features)])
        return out


def _check_features(current: dict, saved: dict, run: RunDir) -> None:
    """Scoring with other feature parameters than training would feed the model other numbers."""
    differ = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k))
    if differ:
        detail = ", ".join(
            f"{k}: run {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ
        )
        raise DataError(
            f"feature parameters differ from those {run.path.name} was trained with ({detail}); "
            "score with the run's config or train again"
        )


def score(config: Config, options) -> dict:
    """Audio files or folders in -> predictions CSV and rejects CSV (path, reason), atomically."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    files = expand_inputs(list(options.inputs), "audio file(s)")
    first = Path(options.inputs[0])
    output, rejects = default_output_paths(first, options.output, options.rejects)
    scorer = SpeechScorer(run, config)
    return score_files(
        files, scorer, output, rejects, config.score.chunk_files, "scoring audio files"
    )


def export(config: Config, options) -> Path:
    """Write the run's model as a TensorFlow SavedModel (serving signature: features in)."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    model = load_model(run)
    with atomic_dir(target) as tmp:
        export_saved_model(model, str(tmp), model_input_spec(model))
    shape = load_meta(run)["feature_shape"]
    print(f"export: SavedModel -> {target} (input: float32 features (batch, {shape[0]}, "
          f"{shape[1]}))", flush=True)  # fmt: skip
    return target
