"""The speech app's five steps: prepare, train, evaluate, score, export."""

import functools
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from apps.nlp.speech import data as sdata
from apps.nlp.speech import sample, sequence_steps
from apps.nlp.speech.audio import native_rate
from apps.nlp.speech.card import CARD_TITLE, summary, write_card
from apps.nlp.speech.config import Config
from apps.nlp.speech.data import SpeechData, Split
from apps.nlp.speech.features import (
    DEFAULT_RATE,
    audio_checks,
    cache_root,
    extract_files,
    feature_params,
    feature_shape,
    mfcc_params,
    mfcc_statistics,
    params_digest,
    silence_frame,
)
from apps.nlp.speech.loso import loso_leaderboard, run_loso
from apps.nlp.speech.model import (
    BASELINE_NAMES,
    Meta,
    baseline_scores,
    build_baseline,
    build_model,
    compile_network,
    load_model,
    predict_features,
    write_saved_model,
)
from apps.nlp.speech.plots import plot_run
from apps.nlp.speech.scorer import SpeechScorer
from shared import evaluation as ev
from shared import leaderboard, steps, training
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, read_json, write_json, write_table, write_text
from shared.run import RunDir
from shared.scoring import default_output_paths, expand_inputs, score_files
from shared.steps import StepOptions, report_rejects

APP = "speech"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
LEADERBOARD_METRICS = ("accuracy", "macro_f1")

# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options: StepOptions | None = None) -> SpeechData:
    """Synthesize the sample if configured, read the layout, extract (or load cached) features,
    split (speaker-disjoint when speakers are known) and record what was found."""
    if config.task == "sequence":
        return sequence_steps.prepare(config, options)
    cfg = config.data
    if cfg.source == "synthetic" and training.is_chief():
        sample.refuse_foreign_folder(cfg.path)
        rate = cfg.sample_rate or DEFAULT_RATE
        sample.write_dataset(cfg.path, cfg.synth, rate, cfg.clip_seconds)
    start = time.perf_counter()
    table, rejects = sdata.read(cfg.path, cfg.format, cfg.filename_pattern, cfg.speaker_pattern)
    table = sdata.keep_words(table, cfg.words)
    native = None if cfg.sample_rate else native_rate(list(table.path), DEFAULT_RATE)
    params = feature_params(config, native)
    checks, cache, workers = audio_checks(config), cache_root(config), config.features.workers
    features, bad, stats = extract_files(list(table.path), params, checks, cache, workers)
    rejects = rejects + sorted(bad.items())
    table = table[table.path.isin(features.keys())]
    if table.empty:
        raise DataError(f"{cfg.path}: every audio file was rejected; first: {rejects[0][1]}")
    table, mode = sdata.assign_splits(table, split_rules(config))
    class_names, splits = sdata.feature_splits(table, features, cfg.path)
    info = _describe(cfg.path, table, mode, class_names, splits, len(rejects), params, stats)
    stable = {k: v for k, v in info.items() if k != "feature_cache"}  # cache hits vary per run
    folder = steps.prepared_folder(APP, config, info=stable, paths=table.path.tolist())
    if training.is_chief():
        write_table(folder / "manifest.csv", table)
        write_table(folder / "rejects.csv", pd.DataFrame(rejects, columns=["path", "reason"]))
        write_json(folder / "prepare.json", info)
    _print_prepared(info, rejects, folder, time.perf_counter() - start)
    return SpeechData(class_names, splits, rejects, info, folder)


def split_rules(config: Config) -> sdata.SplitRules:
    cfg = config.data
    return sdata.SplitRules(
        cfg.split,
        cfg.val_fraction,
        cfg.test_fraction,
        config.train.seed,
        tuple(cfg.test_speakers),
        tuple(cfg.val_speakers),
        cfg.test_index_max,
    )


def run_params(data: SpeechData) -> dict:
    """The feature parameters prepare used (the files' own rate resolved)."""
    return {k: v for k, v in data.info["features"].items() if k != "digest"}


def _describe(source, table, mode, class_names, splits, n_rejects, params, stats) -> dict:
    """prepare.json: the words, splits, their speakers and overlap, lists, features and cache."""
    speakers = {s: set(splits[s].speakers) - {""} for s in sdata.SPLITS}
    return {
        "source": str(source),
        "classes": class_names,
        "split_mode": mode,
        "splits": {s: {"clips": len(p), "speakers": len(speakers[s])} for s, p in splits.items()},
        "speakers_known": bool((table.speaker != "").all()),
        "speaker_overlap_train_test": len(speakers["train"] & speakers["test"]),
        "speaker_overlap_train_val": len(speakers["train"] & speakers["val"]),
        "test_speakers": sorted(speakers["test"]),
        "lists": sdata.lists_used(Path(source), mode, table.path.tolist()),
        "rejected_files": n_rejects,
        "features": params | {"digest": params_digest(params)},
        "feature_cache": stats,
    }


def _print_prepared(info: dict, rejects: list, folder: Path, seconds: float) -> None:
    stats, splits = info["feature_cache"], info["splits"]
    clips = sum(p["clips"] for p in splits.values())
    counts = ", ".join(f"{s} {p['clips']:,}" for s, p in splits.items())
    print(
        f"prepare: {clips:,} clips, {len(info['classes'])} words, split {info['split_mode']} "
        f"({counts}); features {stats['cached']:,} cached + {stats['extracted']:,} extracted "
        f"({stats['workers']} worker(s)) in {seconds:.1f}s",
        flush=True,
    )
    for split, seen in info["lists"].items():
        print(
            f"prepare: {sdata.LISTS[split]} names {seen['listed']:,} clip(s), "
            f"{seen['used']:,} of them here and used",
            flush=True,
        )
    report_rejects(rejects, folder)


# ---------------------------------------------------------------------------------------------
# train


def _onehot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[y]


def repeat_small(x: np.ndarray, y: np.ndarray, min_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """The training clips, cycled to `min_clips` when there are fewer (0: as they are): each
    repeat is augmented afresh, and a few hundred clips otherwise make an epoch of a few
    steps, which early stopping and the warm-up count in."""
    if len(y) >= min_clips:
        return x, y
    order = np.resize(np.arange(len(y)), min_clips)  # every clip once, then again, in turn
    return x[order], y[order]


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit the configured network on the training split's features."""
    if config.task == "sequence":
        return sequence_steps.train(config, options)
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    cfg, n_classes = config.train, len(data.class_names)
    train_split, val_split = data.splits["train"], data.splits["val"]
    params = run_params(data)
    shape = feature_shape(params)
    mean, variance = train_split.x.mean(axis=(0, 1)), train_split.x.var(axis=(0, 1))
    train_x, train_y = repeat_small(train_split.x, train_split.y, cfg.min_epoch_clips)
    train_y, val_y = _onehot(train_y, n_classes), _onehot(val_split.y, n_classes)
    train_ds = in_memory_dataset(train_x, train_y, cfg.batch_size, True, cfg.seed)
    val_ds = in_memory_dataset(val_split.x, val_y, config.score.batch_size, False)
    start = time.perf_counter()
    with strategy.scope():
        model = build_model(
            config.model, config.augment, n_classes, shape, mean, variance, params["kind"]
        )
        boundary = ["augment"] if any(la.name == "augment" for la in model.layers) else ["features"]
        head, core = training.xla_split(model, cfg, boundary)
        compile_network(core, config, len(train_y), n_classes)
    train_ds = training.through_head(head, train_ds, training=True)
    val_ds = training.through_head(head, val_ds, training=False)
    name = config.model.architecture
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on {len(train_split):,} "
        f"clips of {shape[0]} frames x {shape[1]} {params['kind']} bins, {n_classes} words",
        flush=True,
    )
    try:
        examples = len(train_y)
        training.fit(core, train_ds, val_ds, run, cfg, name, "val_loss", "min", examples=examples)
    except training.Diverged as exc:  # the only network: the run fails and never ships
        training.fail_run(run, CARD_TITLE, {name: str(exc)})
    seconds = time.perf_counter() - start
    meta = Meta(
        app=APP,
        prepared=str(data.folder),
        input="float32 features (batch, frames, bins) from apps.nlp.speech.features.extract",
        train_seconds=round(seconds, 1),
        precision_policy=policy,
        xla_compiled=bool(core.jit_compile),
        class_names=data.class_names,
        features=params,
        features_digest=params_digest(params),
        feature_shape=list(shape),
        checks=audio_checks(config),
        architecture=name,
        split_mode=data.info["split_mode"],
    )
    steps.save_model(run, model, meta, functools.partial(write_saved_model, params=params))
    print(
        f"train: finished in {seconds:.0f}s; weights sha256 {training.weights_digest(model)}; "
        f"model -> {run.model_path}",
        flush=True,
    )
    return run


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """Test metrics (accuracy, macro F1, per class, per speaker) beside the MFCC baselines, the
    leaderboard, the test split as a scoring list, plots and the model card."""
    if config.task == "sequence":
        return sequence_steps.evaluate(config, options)
    opened = steps.open_run(APP, config, options, Meta, prepare, load_model)
    run, meta, data = opened.run, opened.meta, opened.data
    top_k = config.evaluate.top_k
    report = {"primary_metric": "accuracy", "test": {}, "validation": {}}
    probabilities = {}
    for split, key in (("test", "test"), ("val", "validation")):
        part = data.splits[split]
        probabilities[split] = predict_features(opened.model, part.x, config.score.batch_size)
        report[key] = ev.classification_report(
            part.y, probabilities[split], meta.class_names, top_k
        )
    test, prob = data.splits["test"], probabilities["test"]
    report["test"]["per_speaker"] = _per_speaker(test, prob.argmax(axis=1))
    info = data.info
    report["speaker_disjoint"] = info["speakers_known"] and info["speaker_overlap_train_test"] == 0
    report["data"] = read_json(data.folder / "prepare.json")
    report["train_seconds"] = meta.train_seconds
    report["baselines"] = fit_baselines(config, opened.config, data, top_k)
    report["leaderboard"] = {"classification": _leaderboard(run, meta, report)}
    if config.evaluate.loso:
        report["loso"] = _loso(config, opened.config, data, meta)
        if "skipped" not in report["loso"]:
            board = loso_leaderboard(report["loso"], meta.architecture)
            report["leaderboard"]["loso"] = board
    report["test_input"] = _write_test_list(run, test)
    write_json(run.metrics_path, report)
    plots = plot_run(run, config.evaluate.example_inputs, meta, report, test, prob)
    write_card(run, meta, report)
    print(summary(report, plots), flush=True)
    return report


def _loso(config: Config, run_config: Config, data: SpeechData, meta: Meta) -> dict:
    """Leave-one-speaker-out over every clip of the run's splits (apps.nlp.speech.loso)."""
    parts = [data.splits[s] for s in sdata.SPLITS]
    pooled = {
        "x": np.concatenate([p.x for p in parts]),
        "y": np.concatenate([p.y for p in parts]),
        "speakers": np.concatenate([p.speakers for p in parts]),
        "n_classes": len(meta.class_names),
    }
    base = None
    if config.baseline.models:
        stats, _ = _baseline_inputs(config.baseline.n_mfcc, run_config, data)
        base = np.concatenate([stats[s] for s in sdata.SPLITS])
    result = run_loso(config, pooled, base, meta.features)
    if "skipped" in result:
        print(f"evaluate: leave-one-speaker-out skipped: {result['skipped']}", flush=True)
    return result


def _per_speaker(test: Split, predicted: np.ndarray) -> dict:
    """Accuracy and clip count per test speaker; empty when some speaker is unknown."""
    if not (test.speakers != "").all():
        return {}
    out = {}
    for speaker in sorted(set(test.speakers)):
        mask = test.speakers == speaker
        accuracy = float(np.mean(predicted[mask] == test.y[mask]))
        out[speaker] = {"accuracy": accuracy, "clips": int(mask.sum())}
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
    params = mfcc_params(run_params(data), n_mfcc)
    paths = [p for split in sdata.SPLITS for p in data.splits[split].paths]
    checks, cache = audio_checks(run_config), cache_root(run_config)
    features, bad, _ = extract_files(paths, params, checks, cache, run_config.features.workers)
    if bad:  # the same checks passed at prepare: only a file changed since then lands here
        path, reason = next(iter(bad.items()))
        raise DataError(f"{path}: {reason} (changed since prepare?)")
    silence = silence_frame(params)
    x = {
        s: mfcc_statistics(np.stack([features[p] for p in data.splits[s].paths]), silence)
        for s in sdata.SPLITS
    }
    described = (
        f"mean and std over time of {n_mfcc} MFCCs with first and second deltas "
        f"({x['train'].shape[1]} values per clip; frames of digital silence left out), "
        "standardised"
    )
    return x, described


def _leaderboard(run: RunDir, meta: Meta, report: dict) -> dict:
    """The network beside the baselines on accuracy; its time to baseline from its history."""
    name = meta.architecture
    seconds = (training.fit_summary(run, name) or {}).get("seconds", meta.train_seconds)
    history = run.path / f"history-{name}.csv"
    test, validation = _pick(report["test"]), _pick(report["validation"])
    models = {name: leaderboard.model_entry("network", test, validation, seconds, history)}
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


# ---------------------------------------------------------------------------------------------
# score and export


def score(config: Config, options: StepOptions) -> dict:
    """Audio files or folders in -> predictions CSV and rejects CSV (path, reason), atomically."""
    run = steps.locate(APP, config, options)
    if Meta.read(run).task == "sequence":  # the run decides: a CTC run writes transcripts
        return sequence_steps.score(config, options)
    files = expand_inputs(list(options.inputs), "audio file(s)")
    first = Path(options.inputs[0])
    output, rejects = default_output_paths(first, options.output, options.rejects)
    scorer = SpeechScorer(run, config)
    return score_files(
        files, scorer, output, rejects, config.score.chunk_files, "scoring audio files"
    )


def export(config: Config, options: StepOptions | None = None) -> Path:
    """Write the run's model as a TensorFlow SavedModel: `serve` takes features, and a log-mel
    run's `serve_waveform` takes waveforms at the run's rate (apps.nlp.speech.model)."""
    meta = Meta.read(steps.locate(APP, config, options))
    frames, bins = meta.feature_shape
    describe = f"input: float32 features (batch, {frames}, {bins})"
    rate = meta.features["sample_rate"]
    if meta.features.get("kind") == "logmel" and meta.task == "word":
        length = round(rate * meta.features["clip_seconds"])
        describe += f"; serve_waveform: float32 waveforms (batch, {length}) at {rate} Hz"
    elif meta.features.get("kind") == "logmel":
        describe = (
            f"input: float32 features (batch, frames, {bins}); serve_waveform: one float32 "
            f"recording (1, samples) at {rate} Hz -> CTC logits (1, steps, "
            f"{len(meta.class_names) + 1}), blank first (apps.nlp.speech.sequence.decode)"
        )
    writer = functools.partial(write_saved_model, params=meta.features)
    return steps.export_step(APP, config, options, load_model, writer, describe)
