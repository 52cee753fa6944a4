"""The speech app's five steps: prepare, train, evaluate, score, export."""

import dataclasses
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from apps.nlp.speech import data as sdata
from apps.nlp.speech import synth
from apps.nlp.speech.audio import AudioError, check_audio, clip_length, fit_clip, read_audio
from apps.nlp.speech.audio import windows as audio_windows
from apps.nlp.speech.config import Config
from apps.nlp.speech.features import (
    extract,
    extract_files,
    feature_shape,
    mfcc_params,
    mfcc_statistics,
    params_digest,
    silence_frame,
)
from apps.nlp.speech.model import BASELINE_NAMES, baseline_scores, build_baseline, build_model
from apps.nlp.speech.plots import plot_feature_grid, plot_speaker_accuracy
from shared import evaluation as ev
from shared import leaderboard, training
from shared.config import load_config
from shared.export import export_saved_model, load_saved_model, model_input_spec
from shared.input_pipeline import in_memory_dataset
from shared.io import (
    DataError,
    atomic_dir,
    atomic_path,
    read_json,
    write_json,
    write_table,
    write_text,
)
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir, config_digest, load_meta
from shared.scoring import (
    default_output_paths,
    expand_inputs,
    score_files,
)

APP = "speech"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
CARD_TITLE = "Spoken-word recogniser: model card"


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
        _refuse_foreign_folder(Path(cfg.path))
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
    speakers = {s: set(splits[s].speakers) - {""} for s in sdata.SPLITS}
    info = {
        "source": str(cfg.path),
        "classes": class_names,
        "split_mode": mode,
        "splits": {s: {"clips": len(p), "speakers": len(speakers[s])} for s, p in splits.items()},
        "speakers_known": bool((table.speaker != "").all()),
        "speaker_overlap_train_test": len(speakers["train"] & speakers["test"]),
        "speaker_overlap_train_val": len(speakers["train"] & speakers["val"]),
        "test_speakers": sorted(speakers["test"]),
        "lists": _lists(Path(cfg.path), mode, table),
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
    for split, seen in info["lists"].items():
        print(f"prepare: {sdata.LISTS[split]} names {seen['listed']:,} clip(s), "
              f"{seen['used']:,} of them here and used", flush=True)  # fmt: skip
    if rejects:
        print(
            f"prepare: {len(rejects):,} file(s) rejected, reasons in {folder / 'rejects.csv'}; "
            f"first: {rejects[0][0]}: {rejects[0][1]}",
            flush=True,
        )
    return SpeechData(class_names, splits, rejects, info, folder)


def _lists(root: Path, mode: str, table: pd.DataFrame) -> dict:
    """How many of the split lists' clips are used, when the split came from a folder's lists."""
    if mode != "own" or not root.is_dir():
        return {}
    return sdata.list_coverage(root, table.path.tolist())


def _refuse_foreign_folder(folder: Path) -> None:
    """The synthesizer replaces its whole folder when it (re)writes the sample: refuse a folder
    it did not write, such as real recordings named in data.path without data.source=files."""
    stamp = folder.with_name(folder.name + ".simulator.json")  # shared.io.record_generated's
    if folder.exists() and any(folder.iterdir()) and not stamp.exists():
        raise DataError(
            f"{folder}: data.source=synthetic would replace this folder with the synthetic "
            "sample, and it holds files the synthesizer did not write; set data.source=files "
            "to read them (or delete the folder to have the sample written there)"
        )


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
    try:
        training.fit(core, train_ds, val_ds, run, cfg, name, "val_loss", "min",
                     examples=len(train_split))  # fmt: skip
    except training.Diverged as exc:  # the only network: the run fails and never ships
        training.fail_run(run, CARD_TITLE, {name: str(exc)})
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
    """Test metrics (accuracy, macro F1, per class, per speaker) beside the MFCC baselines, the
    leaderboard, the test split as a scoring list, plots and the model card."""
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
    report["test"]["per_speaker"] = _per_speaker(test, prob.argmax(axis=1))
    info = data.info
    report["speaker_disjoint"] = info["speakers_known"] and info["speaker_overlap_train_test"] == 0
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.get("train_seconds")
    report["baselines"] = fit_baselines(config, run_config, data, top_k)
    report["leaderboard"] = {"classification": _leaderboard(run, meta, report)}
    report["test_input"] = _write_test_list(run, test)
    write_json(run.metrics_path, report)
    plots = _plot(run, config, meta, report, test, prob)
    _write_card(run, meta, report)
    t = report["test"]
    base = "; ".join(f"{n} {b['test']['accuracy']:.4f}" for n, b in report["baselines"].items())
    print(
        f"evaluate: test accuracy {t['accuracy']:.4f}, macro F1 {t['macro_f1']:.4f} on "
        f"{t['examples']:,} clips"
        + (" by speakers unseen in training" if report["speaker_disjoint"] else "")
        + (f" (baselines: {base})" if base else "")
        + f"; plots -> {plots}",
        flush=True,
    )
    return report


def _per_speaker(test: Split, predicted: np.ndarray) -> dict:
    """Accuracy and clip count per test speaker; empty when some speaker is unknown."""
    if not (test.speakers != "").all():
        return {}
    out = {}
    for speaker in sorted(set(test.speakers)):
        mask = test.speakers == speaker
        out[speaker] = {"accuracy": float(np.mean(predicted[mask] == test.y[mask])),
                        "clips": int(mask.sum())}  # fmt: skip
    return out


def fit_baselines(config: Config, run_config: Config, data: SpeechData, top_k: int) -> dict:
    """Each of `baseline.models` fitted on MFCC statistics of the training clips the network
    trained on (same split, same clips, the run's sample rate and frames), timed, and measured
    on test and validation like the network."""
    cfg = config.baseline
    if not cfg.models:
        return {}
    x, described = _baseline_inputs(cfg.n_mfcc, run_config, data)
    out = {}
    # One BLAS thread: these matrices are small, and two threads contending for two busy cores
    # made the logistic regression's fit on the 1,680-clip sample 50x slower (4 s, not 0.08 s).
    with threadpool_limits(limits=1):
        for kind in cfg.models:
            model = build_baseline(kind, cfg, run_config.train.seed)
            start = time.perf_counter()
            model.fit(x["train"], data.splits["train"].y)
            entry = {"features": described, "fit_seconds": round(time.perf_counter() - start, 3)}
            for split, key in (("test", "test"), ("val", "validation")):
                scores = baseline_scores(model, x[split], len(data.class_names))
                full = ev.classification_report(
                    data.splits[split].y, scores, data.class_names, top_k
                )
                entry[key] = {k: v for k, v in full.items() if not isinstance(v, dict | list)}
            out[BASELINE_NAMES[kind]] = entry
    return out


def _baseline_inputs(n_mfcc: int, run_config: Config, data: SpeechData) -> tuple[dict, str]:
    """Per split, the MFCC statistics of its clips (features cached like the network's), and
    what they are, in words."""
    params = mfcc_params(feature_params(run_config), n_mfcc)
    paths = [p for split in sdata.SPLITS for p in data.splits[split].paths]
    features, bad, _ = extract_files(paths, params, _checks(run_config), cache_root(run_config),
                                     run_config.features.workers)  # fmt: skip
    if bad:  # the same checks passed at prepare: only a file changed since then lands here
        path, reason = next(iter(bad.items()))
        raise DataError(f"{path}: {reason} (changed since prepare?)")
    silence = silence_frame(params)
    x = {s: mfcc_statistics(np.stack([features[p] for p in data.splits[s].paths]), silence)
         for s in sdata.SPLITS}  # fmt: skip
    described = (
        f"mean and std over time of {n_mfcc} MFCCs with first and second deltas "
        f"({x['train'].shape[1]} values per clip; frames of digital silence left out), "
        "standardised"
    )
    return x, described


LEADERBOARD_METRICS = ("accuracy", "macro_f1")


def _leaderboard(run: RunDir, meta: dict, report: dict) -> dict:
    """The network beside the baselines on accuracy; its time to baseline from its history."""
    name = meta["architecture"]
    seconds = (training.fit_summary(run, name) or {}).get("seconds", meta.get("train_seconds"))
    history = run.path / f"history-{name}.csv"
    models = {
        name: leaderboard.model_entry(
            "network", _pick(report["test"]), _pick(report["validation"]), seconds, history
        )
    }
    for base, entry in report["baselines"].items():
        models[base] = leaderboard.model_entry(
            "baseline", _pick(entry["test"]), _pick(entry["validation"]), entry["fit_seconds"]
        )
    return leaderboard.build("accuracy", True, models, name, "val_accuracy")


def _pick(metrics: dict) -> dict:
    return {m: metrics[m] for m in LEADERBOARD_METRICS}


def _write_test_list(run: RunDir, test: Split) -> str:
    """test_split.txt (one absolute clip path per line), for `score --input @test_split.txt`."""
    write_text(run.path / "test_split.txt", "".join(f"{os.path.abspath(p)}\n" for p in test.paths))
    return "@test_split.txt"


def _plot(run: RunDir, config: Config, meta: dict, report: dict, test: Split, prob) -> Path:
    names, per_speaker = meta["class_names"], report["test"]["per_speaker"]
    predicted = prob.argmax(axis=1)
    plots = run.subdir("plots")
    ev.plot_confusion_matrix(
        np.array(report["test"]["confusion_matrix"]), names, plots / "confusion_matrix.png",
        f"Confusion matrix (test, accuracy {report['test']['accuracy']:.3f})",
    )  # fmt: skip
    if per_speaker:
        plot_speaker_accuracy(per_speaker, plots / "per_speaker_accuracy.png")
    count = min(config.evaluate.example_inputs, len(test))
    if count:
        chosen = example_picks(predicted, test.y, count)
        titles = [
            f"true {names[test.y[i]]} / pred {names[predicted[i]]} ({prob[i].max():.2f})"
            for i in chosen
        ]
        plot_feature_grid(test.x[chosen], titles, plots / "examples.png",
                          f"Test inputs ({meta['features']['kind']}) with their predictions")  # fmt: skip
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "accuracy"))
    return plots


def example_picks(predicted: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """`count` distinct test clips to plot: up to half wrong predictions, correct ones for the
    rest (more wrong ones when too few are correct), each kind spread over the split."""
    wrong, right = np.flatnonzero(predicted != y), np.flatnonzero(predicted == y)
    n_right = min(len(right), count - min(len(wrong), count // 2))
    n_wrong = min(len(wrong), count - n_right)
    return np.concatenate([_spread(wrong, n_wrong), _spread(right, n_right)])


def _spread(index: np.ndarray, n: int) -> np.ndarray:
    """n of `index`, evenly spaced (distinct, as n <= len(index))."""
    return index[np.linspace(0, len(index) - 1, n).astype(int)] if n else index[:0]


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
        f"{data['speaker_overlap_train_test']} test and {data['speaker_overlap_train_val']} "
        "validation speaker(s) also in training.",
        "Model": f"Architecture `{meta['architecture']}` on librosa {params['kind']} features "
        f"({meta['feature_shape'][0]} frames x {meta['feature_shape'][1]} bins; "
        f"{params['sample_rate']} Hz, {params['clip_seconds']} s clips, FFT {params['n_fft']}, "
        f"hop {params['hop_length']}). Per-bin normalisation is inside the model; scoring "
        f"refuses other feature parameters. Trained in {meta.get('train_seconds')}s.",
        "Leaderboard (the network beside its baselines)": _baselines_text(report),
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
    write_model_card(run.card_path, CARD_TITLE, sections)


def _baselines_text(report: dict) -> str:
    board = leaderboard.to_markdown(report["leaderboard"]["classification"])
    if not report["baselines"]:
        return board + "\n\nNo baseline was fitted (`baseline.models` is empty)."
    first = next(iter(report["baselines"].values()))
    return (
        f"{board}\n\nBaselines: {first['features']} (the same clips and split as the network), "
        "fitted in `evaluate`; `train s` is their fit time. The run's model is the network: "
        "the baselines are measured, not shipped."
    )


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
