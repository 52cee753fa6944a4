"""The vision run's model card and the summary line `evaluate` prints."""

from pathlib import Path

from apps.vision.model import Meta
from shared import leaderboard
from shared.model_card import metrics_table, write_model_card
from shared.pixel_baseline import NAME as BASELINE
from shared.run import RunDir

CARD_TITLE = "Image classifier: model card"
LIMITS = (
    "Accuracy holds only for images like the training images (same kind of camera, framing, "
    "resolution). Grad-CAM shows where the network looked, not why; read it as a sanity check."
)


def write_card(run: RunDir, meta: Meta, report: dict) -> None:
    """model_card.md: intended use, data, model, metrics, leaderboard, per class, limits."""
    test = report["test"]
    columns = ["accuracy", "macro_f1", "macro_precision", "macro_recall"] + [
        m for m in test if m.startswith("top")
    ]
    board = leaderboard.to_markdown(report["leaderboard"]["classification"])
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Intended use": "Classifies images into the classes it was trained on: "
            f"{', '.join(meta.class_names)}. Every image gets a class; there is no "
            "'none of these' answer.",
            "Data": _data_text(report["data"]),
            "Model": _model_text(meta),
            "Metrics (test and validation)": metrics_table(
                {"test": test, "validation": report["validation"]}, columns
            ),
            "Leaderboard (the network beside its baselines, same split)": board
            + baseline_note(report["baselines"]),
            "Per class (test)": metrics_table(
                test["per_class"], ["precision", "recall", "f1", "support"]
            ),
            "Limits": LIMITS,
        },
    )


def _data_text(data: dict) -> str:
    splits = ", ".join(f"{s}: {v['images']:,}" for s, v in data["splits"].items())
    own = data["own_splits"]
    drawn = "own splits: " + ", ".join(own) if own else "stratified, seeded"
    return (
        f"Source `{data['source']}` ({data['format']}); {data['channels']} channel(s); "
        f"{data['rejected_files']:,} file(s) rejected at preparation. "
        f"Splits: {splits} ({drawn})."
    )


def _model_text(meta: Meta) -> str:
    backbone = f" on the KerasHub backbone `{meta.backbone}`" if meta.backbone else ""
    height, width = meta.image_size
    return (
        f"Architecture `{meta.architecture}`{backbone}. Input: raw uint8 images of any size; "
        f"rescaling and resizing to {height}x{width} happen inside the model. "
        f"Trained in {meta.train_seconds}s.{lr_find_text(meta.lr_find)}"
    )


def lr_find_text(found: dict | None) -> str:
    """The range test's line of the card (`train.lr_find`), or nothing when it was off."""
    if not found:
        return ""
    if not found.get("suggestions"):
        return f" Range test: {found['stopped']}; the configured rate {found['used']:g} was used."
    others = ", ".join(f"{k} {v:.2g}" for k, v in found["suggestions"].items())
    return (
        f" Peak learning rate {found['used']:.3g} from a {found['steps']}-step range test "
        f"({found['pick']}; suggestions {others}; {found['seconds']}s, "
        "plots/lr_find.png)."
    )


def baseline_note(baselines: dict) -> str:
    """How the pixel baseline was fitted, under the leaderboard; or that none was."""
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


def summary_line(report: dict, top_k: int, plots: Path) -> str:
    """What `evaluate` prints: the test accuracy (and top-k), macro F1 and where the plots are."""
    test = report["test"]
    key = f"top{top_k}_accuracy"
    extra = f", top-{top_k} {test[key]:.4f}" if key in test else ""
    return (
        f"evaluate: test accuracy {test['accuracy']:.4f}{extra}, macro F1 "
        f"{test['macro_f1']:.4f} on {test['examples']:,} images; plots -> {plots}"
    )
