"""The medical run's model card (model_card.md) and the one-line summaries train and evaluate
print."""

from apps.medical.model import Meta
from shared import leaderboard
from shared.model_card import metrics_table, write_model_card
from shared.pixel_baseline import NAME as BASELINE
from shared.run import RunDir

CARD_TITLE = "Medical image classifier: model card"
NOT_A_DEVICE = (
    "This model is a research and engineering tool. It is not a medical device, has no "
    "regulatory clearance, and must not be used to diagnose, treat or triage patients. Any "
    "clinical use needs a prospective validation on the target population and the approvals "
    "that apply."
)
LIMITS = (
    "Performance holds only for images like the training data (same devices, protocols, "
    "population and prevalence); re-check calibration and the operating point on local data "
    "before relying on either. Intervals cover sampling variation of the test set only. "
    "Grad-CAM shows where the network looked, not why."
)


def write_card(run: RunDir, meta: Meta, report: dict) -> None:
    """model_card.md from the run's metadata and its evaluation report."""
    test, val = report["test"], report["validation"]
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Not a medical device": NOT_A_DEVICE,
            "Intended use": f"Flags {meta.task} findings ({', '.join(meta.class_names)}) "
            "in images like the training images, for data scientists who develop and audit "
            "models. Probabilities are calibrated on the validation split (temperature scaling).",
            "Data": _data_section(report["data"]),
            "Model": _model_section(meta),
            "Discrimination (test, bootstrap 95% intervals)": _discrimination_section(test, val),
            "Operating point": _operating_point_section(meta, test, val),
            "Leaderboard (the network beside its baselines, same split)": leaderboard.to_markdown(
                report["leaderboard"]["classification"]
            )
            + _baseline_note(report["baselines"]),
            "Calibration": _calibration_section(meta, test, val),
            **({"Test-time augmentation": tta_line(report["tta"])} if "tta" in report else {}),
            "Limits": LIMITS,
        },
    )


def tta_line(block: dict) -> str:
    """What TTA did: its views, plain vs TTA macro ROC-AUC, and whether the run uses it."""
    val, test = block["validation"], block["test"]
    verdict = "used (it won on validation)" if block["used"] else "not used (no validation gain)"
    return (
        f"TTA over {len(block['views'])} views ({', '.join(block['views'])}): validation macro "
        f"ROC-AUC {val['tta']:.4f} vs {val['plain']:.4f} plain, test {test['tta']:.4f} vs "
        f"{test['plain']:.4f}; {verdict}"
    )


def _ece(part: dict, key: str) -> str:
    low, high = part.get(f"{key}_ci", [float("nan")] * 2)
    return f"{part[key]:.4f} (95% CI {low:.4f}-{high:.4f})"


def _calibration_section(meta: Meta, test: dict, val: dict) -> str:
    """The temperature, why it is what it is, and both ECEs with their intervals."""
    fitted = meta.temperature_fitted
    why = (
        f"the validation-NLL fit T = {fitted:.3f} did not lower the validation ECE in 90% of "
        "paired bootstrap resamples, so T = 1 is kept"
        if meta.temperature_kept_one and fitted is not None
        else "fitted on validation by NLL (bounded search) and kept because it lowered the "
        "validation ECE in at least 90% of paired bootstrap resamples"
    )
    unit = test.get("bootstrap_unit", "image")
    return (
        f"Temperature T = {meta.temperature:.3f}: {why}; it is a Rescaling layer inside the "
        "saved and exported model. Expected calibration error (equal-width bins, bootstrap "
        f"over {unit}s): test {_ece(test, 'ece_before')} before, {_ece(test, 'ece_after')} "
        f"after; validation {_ece(val, 'ece_before')} before, {_ece(val, 'ece_after')} after. "
        "See plots/reliability.png."
    )


def _data_section(data: dict) -> str:
    splits = ", ".join(
        f"{s}: {v['images']:,} images, {v['patients']:,} patients"
        for s, v in data["splits"].items()
    )
    own = data["own_splits"]
    origin = "own splits: " + ", ".join(own) if own else "drawn, seeded"
    leak = data["patient_leakage"]
    return (
        f"Source `{data['source']}` ({data['format']}), {data['channels']} channel(s); "
        f"{data['rejected_files']:,} file(s) rejected at preparation. Splits: {splits} "
        f"({origin}). Patient leakage check: {leak['patients_known']:,} patients known, "
        f"{leak['overlapping_patients']} in more than one split."
    )


def _model_section(meta: Meta) -> str:
    backbone = f" on the KerasHub backbone `{meta.backbone}`" if meta.backbone else ""
    window = f" with the {meta.window} preset" if meta.window else ""
    height, width = meta.image_size
    return (
        f"Architecture `{meta.architecture}`{backbone}. Input: raw 8-bit images of any size "
        f"(DICOM: rescaled and windowed{window} first); rescaling and resizing to "
        f"{height}x{width} happen inside the model. Trained in {meta.train_seconds}s "
        f"({meta.precision_policy})."
    )


def _interval(v: dict) -> str:
    return f"{v['value']:.4f} (95% CI {v['low']:.4f}-{v['high']:.4f})"


def _discrimination_section(test: dict, val: dict) -> str:
    rows = {
        name: {"ROC-AUC (95% CI)": _interval(v), "positives": v["positives"]}
        for name, v in test["roc_auc"].items()
    }
    rows["macro"] = {"ROC-AUC (95% CI)": _interval(test["macro_roc_auc"])}
    return (
        metrics_table(rows, ["ROC-AUC (95% CI)", "positives"])
        + f"\n\nAccuracy at the operating point: test {test['accuracy']:.4f}, "
        f"validation {val['accuracy']:.4f}."
    )


def _operating_point_section(meta: Meta, test: dict, val: dict) -> str:
    point = meta.operating_point
    rates = {
        f"{name} ({split})": values
        for split, part in (("test", test), ("validation", val))
        for name, values in part["operating_point"].items()
    }
    thresholds = ", ".join(f"{n} >= {t:.4f}" for n, t in point.thresholds.items())
    chosen = (
        f"Chosen on validation for {point.metric} >= {point.target:g}: {thresholds} "
        "(on calibrated probabilities; saved in model_meta.json).\n\n"
        if point.thresholds
        else "Multi-class: the most probable class is the decision.\n\n"
    )
    return chosen + metrics_table(rates, ["threshold", "sensitivity", "specificity", "ppv", "npv"])


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


def train_summary(meta: Meta, seconds: float, digest: str, run: RunDir) -> str:
    """What train prints when it is done."""
    return (
        f"train: finished in {seconds:.0f}s; temperature {meta.temperature:.3f} "
        + (
            f"(fit {meta.temperature_fitted:.3f} kept at 1: no ECE gain) "
            if meta.temperature_kept_one
            else ""
        )
        + f"(validation ECE {meta.val_ece_before:.4f} -> {meta.val_ece_after:.4f}); "
        f"weights sha256 {digest}; model -> {run.model_path}"
    )


def evaluate_summary(report: dict, run: RunDir) -> str:
    """What evaluate prints: test ROC-AUC, accuracy, ECE and the rates at the operating point."""
    test = report["test"]
    auc = test["macro_roc_auc"]
    rates = ", ".join(
        f"{n}: sensitivity {v['sensitivity']:.3f} specificity {v['specificity']:.3f}"
        for n, v in test["operating_point"].items()
    )
    return (
        f"evaluate: test macro ROC-AUC {auc['value']:.4f} (95% CI {auc['low']:.4f}-"
        f"{auc['high']:.4f}), accuracy {test['accuracy']:.4f}, ECE {test['ece_before']:.4f} -> "
        f"{test['ece_after']:.4f} after temperature scaling, {rates} on "
        f"{test['examples']:,} images; plots -> {run.path / 'plots'}"
        + (f"\nevaluate: {tta_line(report['tta'])}" if "tta" in report else "")
    )
