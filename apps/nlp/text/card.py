"""The text app's model card and the one-line summary evaluate prints."""

from pathlib import Path

from apps.nlp.text.model import Meta
from shared import leaderboard
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir

CARD_TITLE = "Text classifier: model card"
LIMITS = (
    "Accuracy holds only for texts like the training texts (domain, length, language). A word "
    "never seen in training maps to the unknown token. Every text gets a class; there is no "
    "'none of these' answer."
)


def write_card(run: RunDir, meta: Meta, report: dict) -> None:
    """model_card.md: use, data, models, the leaderboard, metrics beside the baseline, limits."""
    columns = ["accuracy", "macro_f1", "macro_precision", "macro_recall"]
    rows = {f"{n} (test)": e["test"] for n, e in report["networks"].items()}
    if "blend" in report:
        rows["blend (test)"] = report["blend"]["test"]
    if "baseline" in report:
        rows["TF-IDF + LR baseline (test)"] = report["baseline"]["test"]
    verdict = ""
    if "beats_baseline" in report:
        verdict = "\n\n" + " ".join(
            f"`{n}` {'beats' if b else 'does NOT beat'} the TF-IDF baseline on test macro F1."
            for n, b in report["beats_baseline"].items()
        )
    classes = ", ".join(meta.class_names)
    use = " (any number of them: multi-label)." if meta.multi_label else "."
    board = (
        f"Leaderboard ({meta.metric.replace('_', ' ')}; every model beside the baseline, "
        "TF-IDF + logistic regression fit on the same training split)"
    )
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Intended use": f"Classifies a text into the classes it was trained on: {classes}{use}",
            "Data": _data_section(report["data"]),
            "Model": _model_section(meta, report["failed_networks"]),
            board: leaderboard.to_markdown(report["leaderboard"]["classification"]),
            "Metrics (test) beside the baseline": metrics_table(rows, columns) + verdict,
            "Per class (test, run's model)": metrics_table(
                report["test"]["per_class"], ["precision", "recall", "f1", "support"]
            ),
            "Limits": LIMITS,
        },
    )


def _data_section(data: dict) -> str:
    """Where the texts came from, what was set aside or replaced, and the splits."""
    source = ", ".join(f"`{f}`" for f in data.get("files") or [data["source"]])
    splits = ", ".join(f"{s}: {v['texts']:,}" for s, v in data["splits"].items())
    own = data["own_splits"]
    how = f"own splits: {', '.join(own)}" if own else "stratified, seeded"
    return (
        f"Source {source} ({data['format']}); {data['rejected_rows']:,} row(s) set aside at "
        f"preparation; {data['replaced_bytes']:,} undecodable byte sequence(s) replaced. "
        f"Splits: {splits} ({how})."
    )


def _model_section(meta: Meta, failed: dict[str, str]) -> str:
    """The networks trained, the one kept and why, its input, and the training time."""
    failures = "".join(f" `{n}` failed ({why}) and is not used." for n, why in failed.items())
    seconds = ", ".join(f"{n} {t}s" for n, t in meta.network_seconds.items())
    why = "lowest finite validation loss"
    if meta.blend:
        mix = " + ".join(f"{w:g} x `{n}`" for n, w in meta.blend["weights"].items() if w > 0)
        verdict = "higher" if meta.blend["selected"] else "not higher"
        # A run from before evaluate.metric compared (and stored) accuracies only.
        metric = meta.blend.get("metric", "accuracy").replace("_", " ")
        scores = [
            meta.blend.get(f"{key}_score", meta.blend[f"{key}_accuracy"])
            for key in ("validation", "network_validation")
        ]
        why = (
            f"network with the lowest finite validation loss; the blend {mix} (weights fitted "
            f"on validation) has a {verdict} validation {metric}, {scores[0]:.4f} vs "
            f"{scores[1]:.4f}"
        )
    return (
        f"Networks trained: {', '.join(meta.networks)}; the run's model is `{meta.best}` "
        f"({why}).{failures} Input: raw strings; tokenization inside "
        f"the model; texts longer than {meta.sequence_length} tokens are truncated (scoring "
        f"flags them). Trained in {meta.train_seconds}s ({seconds})."
    )


def evaluate_line(report: dict, meta: Meta, plots: Path) -> str:
    """What evaluate prints: every model's test accuracy and the run's model's macro F1."""
    shown = report["networks"] | ({"blend": report["blend"]} if "blend" in report else {})
    line = ", ".join(f"{n} {e['test']['accuracy']:.4f}" for n, e in shown.items())
    line += "".join(f", {n} failed" for n in report["failed_networks"])
    if "baseline" in report:
        line += f", TF-IDF baseline {report['baseline']['test']['accuracy']:.4f}"
    best = report["test"]
    return (
        f"evaluate: test accuracy {line}; best ({meta.best}) macro F1 "
        f"{best['macro_f1']:.4f} on {best['examples']:,} texts; plots -> {plots}"
    )
