"""The steps of `task=sequence` (configs/sequence.yaml): prepare utterances, train the CTC
model, evaluate word and character error rates (greedy and beam search), and score files to
transcripts. `pipeline.py` hands these steps the config when `task` is `sequence`."""

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from apps.nlp.speech import data as sdata
from apps.nlp.speech import sample
from apps.nlp.speech import sequence as seq
from apps.nlp.speech.audio import AudioError, check_audio, clip_length, native_rate, read_audio
from apps.nlp.speech.config import Config
from apps.nlp.speech.features import DEFAULT_RATE, audio_checks, extract, feature_params
from apps.nlp.speech.model import Meta, load_model, write_saved_model
from shared import leaderboard, steps, training
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, atomic_path, write_json, write_table
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir
from shared.scoring import default_output_paths, expand_inputs, score_files
from shared.steps import StepOptions, report_rejects

APP = "speech"
NAME = "ctc"


@dataclasses.dataclass
class SequenceData:
    vocab: list[str]
    x: dict  # split -> (utterances, frames, bins)
    labels: dict  # split -> (utterances, longest) int32, 0-padded
    utterances: dict  # split -> seq.Utterances
    params: dict
    info: dict
    folder: Path


class LazyFeatures(dict):
    """split -> (utterances, frames, bins) features, extracted on first use: extraction is
    most of `prepare`, and evaluate reads only the validation and test splits."""

    def __init__(self, utterances: dict, params: dict, seconds: float):
        super().__init__()
        self.utterances, self.params, self.seconds = utterances, params, seconds

    def __missing__(self, split: str) -> np.ndarray:
        self[split] = seq.features(self.utterances[split], self.params, self.seconds)
        return self[split]


def _has_transcripts(path: Path) -> bool:
    if path.is_file():
        return "transcript" in pd.read_csv(path, nrows=0).columns
    return path.is_dir() and any(path.rglob("*.trans.txt"))


def prepare(config: Config, options: StepOptions | None = None) -> SequenceData:
    """Utterances per split (recorded, or made from single-word clips), their features and
    labels over the training vocabulary."""
    cfg, scfg = config.data, config.sequence
    if cfg.source == "synthetic" and training.is_chief():
        sample.refuse_foreign_folder(cfg.path)
        sample.write_dataset(cfg.path, cfg.synth, cfg.sample_rate or DEFAULT_RATE, 1.0)
    start, path, checks = time.perf_counter(), Path(cfg.path), audio_checks(config)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    recorded = _has_transcripts(path)
    table = seq.read_transcripts(path) if recorded else None
    if table is None:
        table, rejects = sdata.read(path, cfg.format, cfg.filename_pattern, cfg.speaker_pattern)
        table = sdata.keep_words(table, cfg.words)
    else:
        rejects = []
        table = table.assign(label=table.transcript, index=-1)
    rate = cfg.sample_rate or native_rate(list(table.path), DEFAULT_RATE)
    table, mode = sdata.assign_splits(table, _rules(config))
    parts = _recorded(table, rate, checks) if recorded else _generated(config, table, rate, checks)
    utterances, bad = parts
    params = feature_params(config, rate) | {"clip_seconds": scfg.max_seconds, "task": "sequence"}
    vocab = seq.vocabulary(utterances["train"].transcripts, scfg.unit)
    x = LazyFeatures(utterances, params, scfg.max_seconds)
    labels = {s: seq.encode(u.transcripts, vocab, scfg.unit) for s, u in utterances.items()}
    info = {
        "source": str(path),
        "task": "sequence",
        "utterances": "recorded" if recorded else "generated from single-word clips",
        "split_mode": mode,
        "vocabulary": vocab,
        "unit": scfg.unit,
        "splits": {
            s: {"utterances": len(u.audio), "speakers": len(set(u.speakers))}
            for s, u in utterances.items()
        },  # fmt: skip
        "rejected_files": len(rejects) + len(bad),
        "features": params,
    }
    folder = steps.prepared_folder(APP, config, info=info, paths=table.path.tolist())
    if training.is_chief():
        all_rejects = pd.DataFrame(rejects + bad, columns=["path", "reason"])
        write_table(folder / "rejects.csv", all_rejects)
        write_json(folder / "prepare.json", info)
    counts = ", ".join(f"{s} {v['utterances']:,}" for s, v in info["splits"].items())
    print(
        f"prepare: {info['utterances']}: {counts} utterances, {len(vocab)} {scfg.unit} "
        f"tokens, split {mode}, in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    report_rejects(rejects + bad, folder)
    return SequenceData(vocab, x, labels, utterances, params, info, folder)


def _rules(config: Config) -> sdata.SplitRules:
    from apps.nlp.speech.pipeline import split_rules

    return split_rules(config)


def _generated(config: Config, table: pd.DataFrame, rate: int, checks: dict):
    scfg = config.sequence
    clips, bad = seq.word_clips(table, rate, checks, config.data.trim_db)
    out = {}
    for i, (split, count) in enumerate(zip(sdata.SPLITS, scfg.utterances, strict=True)):
        if split not in clips:
            raise DataError(f"{config.data.path}: the {split} split has no clips")
        seed, perturb = config.train.seed + i, split == "train"
        out[split] = seq.concatenate(clips[split], scfg, count, rate, seed, perturb)
    return out, bad


def _recorded(table: pd.DataFrame, rate: int, checks: dict):
    out, bad = {}, []
    for split in sdata.SPLITS:
        part = table[table.split == split]
        if part.empty:
            raise DataError(f"the {split} split is empty; add files or change data.split")
        out[split], rejected = seq.load_utterances(part, rate, checks)
        bad += rejected
    return out, bad


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit the CTC model on the training utterances."""
    run, strategy, policy, data = training.start_run(APP, config, prepare)
    cfg = config.train
    bins = data.x["train"].shape[2]
    train_ds = in_memory_dataset(data.x["train"], data.labels["train"], cfg.batch_size, True, 1)
    val_ds = in_memory_dataset(data.x["val"], data.labels["val"], config.score.batch_size, False)
    start = time.perf_counter()
    with strategy.scope():
        model = seq.build_ctc_model(config.sequence, bins, len(data.vocab))
        training.compile_model(model, cfg, len(data.x["train"]), seq.CTCLoss())
    print(
        f"train: {model.name} ({model.count_params():,} parameters) on "
        f"{len(data.x['train']):,} utterances of {data.x['train'].shape[1]} frames, "
        f"{len(data.vocab)} tokens",
        flush=True,
    )
    try:
        training.fit(model, train_ds, val_ds, run, cfg, NAME, "val_loss", "min")
    except training.Diverged as exc:
        training.fail_run(run, "Speech-to-text (CTC): model card", {NAME: str(exc)})
    meta = Meta(
        app=APP,
        prepared=str(data.folder),
        input="float32 features (batch, frames, bins) from apps.nlp.speech.features.extract",
        train_seconds=round(time.perf_counter() - start, 1),
        precision_policy=policy,
        xla_compiled=bool(model.jit_compile),
        class_names=data.vocab,
        features=data.params,
        features_digest="",
        feature_shape=list(data.x["train"].shape[1:]),
        checks=audio_checks(config),
        architecture=NAME,
        split_mode=data.info["split_mode"],
        task="sequence",
        unit=config.sequence.unit,
    )
    steps.save_model(run, model, meta, functools.partial(write_saved_model, params=data.params))
    print(f"train: finished; model -> {run.model_path}", flush=True)
    return run


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """WER, CER and sequence accuracy on test and validation, greedy and beam search; the
    test transcripts beside the truth in test_transcripts.csv."""
    opened = steps.open_run(APP, config, options, Meta, prepare, load_model)
    run, meta, data = opened.run, opened.meta, opened.data
    report = {"primary_metric": "wer", "task": "sequence", "data": data.info}
    said = {}
    for split, key in (("test", "test"), ("val", "validation")):
        logits = opened.model.predict(data.x[split], batch_size=config.score.batch_size, verbose=0)
        truth = [" ".join(seq.tokens(t, "word")) for t in data.utterances[split].transcripts]
        report[key] = {}
        for name, width in (("greedy", 1), ("beam", config.sequence.beam_width)):
            said[(split, name)] = seq.decode(logits, meta.class_names, meta.unit, width)
            report[key][name] = seq.error_rates(truth, said[(split, name)])
        report[key] |= {m: report[key]["beam"][m] for m in ("wer", "cer", "sequence_accuracy")}
    report["test"]["per_speaker"] = _per_speaker(data.utterances["test"], said, "test")
    report["train_seconds"] = meta.train_seconds
    entry = leaderboard.model_entry(
        "network", _pick(report["test"]), _pick(report["validation"]), meta.train_seconds
    )
    report["leaderboard"] = {"sequence": leaderboard.build("wer", False, {NAME: entry}, NAME)}
    test = data.utterances["test"]
    frame = pd.DataFrame(
        {
            "utterance": test.names,
            "speaker": test.speakers,
            "transcript": test.transcripts,
            "greedy": said[("test", "greedy")],
            "beam": said[("test", "beam")],
        }
    )
    write_table(run.path / "test_transcripts.csv", frame)
    report["test_input"] = _write_test_utterances(run, test, data.params["sample_rate"])
    write_json(run.metrics_path, report)
    _card(run, meta, report)
    t = report["test"]
    print(
        f"evaluate: test WER {t['wer']:.4f}, CER {t['cer']:.4f}, sequence accuracy "
        f"{t['sequence_accuracy']:.4f} on {t['beam']['utterances']:,} utterances (beam "
        f"{config.sequence.beam_width}; greedy WER {t['greedy']['wer']:.4f}) from "
        f"{len(t['per_speaker'])} held-apart speaker(s)",
        flush=True,
    )
    return report


TEST_AUDIO = 50  # generated test utterances written as audio for `score` to transcribe


def _write_test_utterances(run: RunDir, test: seq.Utterances, rate: int) -> str:
    """test_utterances/<name>.wav of the first TEST_AUDIO test utterances (a generated one
    exists only in memory otherwise), the input `make quality` scores end to end."""
    folder = run.path / "test_utterances"
    for name, audio in list(zip(test.names, test.audio, strict=True))[:TEST_AUDIO]:
        with atomic_path(folder / f"{Path(name).stem}.wav", suffix=".wav") as tmp:
            sf.write(tmp, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
    return "test_utterances"


def _per_speaker(utterances: seq.Utterances, said: dict, split: str) -> dict:
    """{speaker: greedy and beam error rates} over each held-apart speaker's utterances."""
    truth = [" ".join(seq.tokens(t, "word")) for t in utterances.transcripts]
    speakers = np.array(utterances.speakers)
    out = {}
    for speaker in sorted(set(utterances.speakers)):
        rows = np.flatnonzero(speakers == speaker)
        out[speaker] = {
            name: seq.error_rates([truth[i] for i in rows], [said[(split, name)][i] for i in rows])
            for name in ("greedy", "beam")
        }
    return out


def _pick(metrics: dict) -> dict:
    return {m: metrics[m] for m in ("wer", "cer", "sequence_accuracy")}


def _card(run: RunDir, meta: Meta, report: dict) -> None:
    data = report["data"]
    splits = ", ".join(f"{s}: {v['utterances']:,}" for s, v in data["splits"].items())
    rows = {
        f"{split} {name}": report[split][name]
        for split in ("test", "validation")
        for name in ("greedy", "beam")
    }
    sections = {
        "Intended use": "Transcribes recordings of words from this vocabulary in a row: "
        f"{', '.join(meta.class_names)} ({meta.unit} tokens).",
        "Data": f"Source `{data['source']}`, {data['utterances']}; split {data['split_mode']} "
        f"({splits} utterances).",
        "Model": "Per-utterance CMVN, convolution stages, two bidirectional GRU layers, CTC "
        f"loss; trained in {meta.train_seconds}s.",
        "Leaderboard": leaderboard.to_markdown(report["leaderboard"]["sequence"]),
        "Error rates": metrics_table(rows, ["wer", "cer", "sequence_accuracy", "utterances"]),
        "Per test speaker (beam)": metrics_table(
            {s: v["beam"] for s, v in report["test"]["per_speaker"].items()},
            ["wer", "cer", "sequence_accuracy", "utterances"],
        ),
    }
    write_model_card(run.card_path, "Speech-to-text (CTC): model card", sections)


class TranscriptScorer:
    """Audio files in -> transcript (greedy and beam search), one row per file."""

    columns = ["path", "transcript", "greedy_transcript", "seconds"]

    def __init__(self, run: RunDir, config: Config):
        self.meta = Meta.read(run)
        self.model = load_model(run)
        self.params, self.width = self.meta.features, config.sequence.beam_width

    def predict(self, paths: list[str]) -> list:
        rate, out = self.params["sample_rate"], []
        for path in paths:
            try:
                samples = read_audio(path, rate)
                check_audio(samples, rate, **self.meta.checks)
            except AudioError as exc:
                out.append(str(exc))
                continue
            logits = utterance_logits(self.model, samples, self.params)
            vocab, unit = self.meta.class_names, self.meta.unit
            beam = seq.decode(logits, vocab, unit, self.width)[0]
            greedy = seq.decode(logits, vocab, unit, 1)[0]
            out.append([path, beam, greedy, round(len(samples) / rate, 3)])
        return out


def utterance_logits(model, samples, params: dict):
    """(1, steps, classes) logits of one recording, padded to the training utterances' length
    as they were (the SavedModel's `serve_waveform` does the same in its graph)."""
    length = clip_length(params["sample_rate"], params["clip_seconds"])
    x = extract(seq.pad_waveform(samples, length), params)[None]
    return model.predict_on_batch(x)


def score(config: Config, options: StepOptions) -> dict:
    run = steps.locate(APP, config, options)
    files = expand_inputs(list(options.inputs), "audio file(s)")
    output, rejects = default_output_paths(Path(options.inputs[0]), options.output, options.rejects)
    scorer = TranscriptScorer(run, config)
    return score_files(files, scorer, output, rejects, config.score.chunk_files, "transcribing")


def is_sequence_run(run: RunDir) -> bool:
    return Meta.read(run).task == "sequence"
