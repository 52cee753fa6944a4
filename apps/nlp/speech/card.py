"""The speech run's model card and the one-line summary `evaluate` prints."""

from pathlib import Path

from apps.nlp.speech.model import Meta
from shared import leaderboard
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir

CARD_TITLE = "Spoken-word recogniser: model card"
LIMITS = (
    "Accuracy holds for recordings like the training ones (microphones, noise, accents). "
    "The synthetic sample is far simpler than real speech; train on real recordings before "
    "trusting it on people."
)


def write_card(run: RunDir, meta: Meta, report: dict) -> None:
    """model_card.md: use, data, model, leaderboard, metrics per split, word and speaker."""
    test = report["test"]
    columns = ["accuracy", "macro_f1", "macro_precision", "macro_recall"]
    columns += [m for m in test if m.startswith("top")]
    sections = {
        "Intended use": "Recognises which of these words a short recording holds: "
        f"{', '.join(meta.class_names)}. Every clip gets a word; there is no 'silence' or "
        "'unknown' answer, so score only recordings that contain one of them.",
        "Data": _data_text(report["data"]),
        "Model": _model_text(meta),
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
    if "per_speaker" in report.get("loso", {}):
        sections["Leave-one-speaker-out"] = _loso_text(report)
    sections["Limits"] = LIMITS
    write_model_card(run.card_path, CARD_TITLE, sections)


def _loso_text(report: dict) -> str:
    """The leave-one-speaker-out leaderboard, and accuracy per left-out speaker."""
    loso = report["loso"]
    board = leaderboard.to_markdown(report["leaderboard"]["loso"])
    columns = ["clips", *loso["mean_per_speaker"]]
    return (
        f"Every clip tested by models trained without its speaker ({loso['speakers']} speakers "
        f"in {loso['folds']} folds; `test` is the mean over speakers).\n\n{board}\n\n"
        + metrics_table(loso["per_speaker"], columns)
    )


def _data_text(data: dict) -> str:
    splits = ", ".join(
        f"{s}: {v['clips']:,} clips / {v['speakers']} speakers" for s, v in data["splits"].items()
    )
    return (
        f"Source `{data['source']}`; {data['rejected_files']:,} file(s) rejected at "
        f"preparation. Split: {data['split_mode']} ({splits}); "
        f"{data['speaker_overlap_train_test']} test and {data['speaker_overlap_train_val']} "
        "validation speaker(s) also in training."
    )


def _model_text(meta: Meta) -> str:
    params, (frames, bins) = meta.features, meta.feature_shape
    return (
        f"Architecture `{meta.architecture}` on librosa {params['kind']} features "
        f"({frames} frames x {bins} bins; "
        f"{params['sample_rate']} Hz, {params['clip_seconds']} s clips, FFT {params['n_fft']}, "
        f"hop {params['hop_length']}). Per-bin normalisation is inside the model; scoring "
        f"refuses other feature parameters. Trained in {meta.train_seconds}s."
    )


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


def _loso_summary(report: dict) -> str:
    means = report.get("loso", {}).get("mean_per_speaker")
    if not means:
        return ""
    return "; leave-one-speaker-out mean " + ", ".join(f"{n} {v:.4f}" for n, v in means.items())


def summary(report: dict, plots: Path) -> str:
    """`evaluate`'s closing line: test accuracy and macro F1 beside the baselines."""
    t = report["test"]
    base = "; ".join(f"{n} {b['test']['accuracy']:.4f}" for n, b in report["baselines"].items())
    return (
        f"evaluate: test accuracy {t['accuracy']:.4f}, macro F1 {t['macro_f1']:.4f} on "
        f"{t['examples']:,} clips"
        + (" by speakers unseen in training" if report["speaker_disjoint"] else "")
        + (f" (baselines: {base})" if base else "")
        + _loso_summary(report)
        + f"; plots -> {plots}"
    )
