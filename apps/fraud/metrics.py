"""What the fraud app measures and decides with: AUPRC, the cost of a missed positive, the
decision threshold chosen on validation (minimum expected cost or best F1), and the test and
validation report with its leaderboard."""

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from apps.fraud import baselines as sk
from apps.fraud.config import Config, EvaluateConfig
from apps.fraud.data import Columns
from apps.fraud.model import NETWORKS, Meta
from shared import evaluation as ev
from shared import leaderboard as lb
from shared import training
from shared.config import ConfigError
from shared.run import RunDir


def auprc(y, scores) -> float:
    """Average precision (the AUPRC evaluate reports); NaN for one class or non-finite scores."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if not 0 < y.sum() < len(y) or not np.isfinite(scores).all():
        return float("nan")
    return float(average_precision_score(y, scores))


def fn_costs(config: Config, columns: Columns, rows):
    """What a missed positive costs, per row: its amount, or the configured constant (None:
    no cost given)."""
    if config.evaluate.fn_cost_from_amount and columns.amount:
        return rows[columns.amount].to_numpy(np.float64)
    return config.evaluate.fn_cost


def threshold_rule(evaluate: EvaluateConfig, columns: Columns) -> str:
    """`cost` or `f1`: what the decision threshold optimises on validation."""
    known = evaluate.costs_known(columns.amount)
    if evaluate.threshold_rule == "cost" and not known:
        raise ConfigError(
            "evaluate.threshold_rule=cost needs the cost of a missed positive: set "
            "evaluate.fn_cost, or an amount column with evaluate.fn_cost_from_amount=true"
        )
    if evaluate.threshold_rule == "auto":
        return "cost" if known else "f1"
    return evaluate.threshold_rule


def threshold_text(rule: str, evaluate: EvaluateConfig, columns: Columns) -> str:
    """What the threshold optimises, in words."""
    if rule == "cost":
        missed = (
            "its amount"
            if evaluate.fn_cost_from_amount and columns.amount
            else f"{evaluate.fn_cost:g}"
        )
        return (
            f"minimises expected cost on validation (missed positive: {missed}; "
            f"false alarm: {evaluate.fp_cost:g})"
        )
    if evaluate.costs_known(columns.amount):
        return "maximises F1 on validation"
    return (
        "maximises F1 on validation (no costs given; set evaluate.fn_cost and "
        "evaluate.fp_cost to minimise expected cost)"
    )


def choose_threshold(rule: str, y, scores, fn_cost, fp_cost: float) -> float:
    """Flag when score >= the threshold that minimises cost or maximises F1 on (y, scores)."""
    if rule == "cost":
        return ev.cost_threshold(y, scores, fn_cost, fp_cost)[0]
    return f1_threshold(y, scores)


def f1_threshold(y, scores) -> float:
    """The threshold with the highest F1 (flag when score >= it); above every score if no
    row is positive."""
    y, scores = np.asarray(y).astype(int), np.asarray(scores, dtype=np.float64)
    if y.sum() == 0 or not np.isfinite(scores).all():
        return float(np.nextafter(scores.max(), np.inf)) if len(scores) else 1.0
    precision, recall, cuts = precision_recall_curve(y, scores)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=precision + recall > 0,
    )[:-1]  # the last point (recall 0) has no threshold
    return float(cuts[int(np.argmax(f1))])


def binary_report(y, scores, threshold: float, fn_cost, costs: EvaluateConfig) -> dict:
    """ev.binary_report plus the flagged fraction; without costs, no expected cost."""
    known = fn_cost is not None
    report = ev.binary_report(
        y,
        scores,
        threshold,
        fn_cost if known else 0.0,
        costs.fp_cost if known else 0.0,
        costs.alert_budgets,
    )
    if not known:
        del report["expected_cost"], report["cost_per_1000_rows"]
    c = report["confusion"]
    report["flagged_fraction"] = (c["tp"] + c["fp"]) / max(1, report["rows"])
    return report


def evaluation_report(
    meta: Meta, labels: dict, scores: dict, costs_per_row: dict, costs: EvaluateConfig, columns
) -> dict:
    """metrics.json without its leaderboard and data blocks: every model's test and validation
    report at its own threshold, the costs used and the decision model's operating point."""
    decision = meta.decision_model
    report = {
        "primary_metric": "auprc",
        "decision_model": decision,
        "failed_networks": meta.failed_networks,
        "test": {},
        "validation": {},
    }
    for split, key in (("test", "test"), ("val", "validation")):
        for name in scores["test"]:
            report[key][name] = binary_report(
                labels[split],
                scores[split][name],
                meta.thresholds[name],
                costs_per_row[split],
                costs,
            )
    report["costs"] = {
        "fn_cost": "transaction amount"
        if costs.fn_cost_from_amount and columns.amount
        else costs.fn_cost,
        "fp_cost": costs.fp_cost if costs_per_row["val"] is not None else None,
    }
    report["operating_point"] = operating_point(meta, report)
    report["anomaly_detectors"] = {
        name: versus_random(labels["test"], report["test"][name]["auprc"])
        for name in ("autoencoder", "isolation_forest")
        if name in report["test"]
    }
    report["credit_risk"] = {
        name: credit_risk(labels["test"], scores["test"][name])
        for name in scores["test"]
        if name in PROBABILITIES
    }
    return report


def versus_random(y, auprc_value: float) -> dict:
    """An unsupervised detector's test AUPRC against a random ranking's (the positive rate),
    with the verdict in words: a detector that does not beat it is said to, with why."""
    rate = float(np.mean(y))
    beats = bool(np.isfinite(auprc_value) and auprc_value > rate)
    verdict = (
        f"beats random (AUPRC {auprc_value:.4f} against the positive rate {rate:.4f})"
        if beats
        else f"does NOT beat random (AUPRC {auprc_value:.4f} against the positive rate "
        f"{rate:.4f}): on this table the positives are not outliers of the negative rows, so "
        "how unusual a row is does not rank them; use the supervised models"
    )
    return {"auprc": auprc_value, "random_auprc": rate, "beats_random": beats, "verdict": verdict}


PROBABILITIES = ("network", "hist_gradient_boosting", "logistic_regression", "blend")  # the
# models whose score is a probability (of fraud, of default), so Brier and calibration apply


def credit_risk(y, probability) -> dict:
    """What credit teams report for a probability of default: Brier score, the KS statistic
    (largest gap between the score distributions of defaulters and non-defaulters), Gini
    (2 AUC - 1), and the mean predicted PD beside the observed default rate."""
    y, p = np.asarray(y).astype(int), np.asarray(probability, np.float64)
    if not 0 < y.sum() < len(y) or not np.isfinite(p).all():
        return {"brier": float("nan"), "ks": float("nan"), "gini": float("nan")}
    fpr, tpr, _ = roc_curve(y, p)
    return {
        "brier": float(brier_score_loss(y, p)),
        "ks": float(np.max(tpr - fpr)),
        "gini": float(2 * roc_auc_score(y, p) - 1),
        "mean_pd": float(p.mean()),
        "observed_rate": float(y.mean()),
    }


def operating_point(meta: Meta, report: dict) -> dict:
    """The shipped model's threshold, what it flags and costs on validation and test, and a
    drift warning when the flagged fractions differ by more than 2x."""
    decision = meta.decision_model
    val, test = report["validation"][decision], report["test"][decision]
    point = {
        "model": decision,
        "output": meta.decision_output,
        "threshold": meta.threshold,
        "rule": meta.threshold_rule,
        "optimises": meta.threshold_optimises,
        "flagged_fraction": {
            "validation": val["flagged_fraction"],
            "test": test["flagged_fraction"],
        },
    }
    if "expected_cost" in val:
        point["expected_cost"] = {"validation": val["expected_cost"], "test": test["expected_cost"]}
        point["cost_per_1000_rows"] = {
            "validation": val["cost_per_1000_rows"],
            "test": test["cost_per_1000_rows"],
        }
    point["drift"] = drift_warning(val["flagged_fraction"], test["flagged_fraction"])
    return point


def drift_warning(validation: float, test: float) -> str | None:
    """A line when the test flagged fraction is over 2x (or under half) the validation one:
    the score distribution moved, so the threshold chosen on validation no longer means the
    same; None otherwise."""
    low, high = sorted((validation, test))
    if high == 0 or (low > 0 and high / low <= 2.0):
        return None
    ratio = "inf" if low == 0 else f"{high / low:.1f}"
    return (
        f"drift: the threshold flags {test:.1%} of test rows against {validation:.1%} of "
        f"validation rows ({ratio}x); the score distribution moved, re-fit the threshold on "
        "recent labelled rows"
    )


def leaderboard(run: RunDir, meta: Meta, report: dict) -> dict:
    """Both networks (failed ones with the reason) beside the baselines and the blend, on
    AUPRC; `selected` is the model the run ships."""
    entries = {}

    budgets = [k for k in report["test"][meta.decision_model] if k.startswith("recall_at_top_")]

    def metrics(split: str, name: str) -> dict:
        return {m: report[split][name][m] for m in ("auprc", "roc_auc", *budgets)}

    for name in NETWORKS:
        summary = training.fit_summary(run, name) or {}
        if name in meta.failed_networks:
            entries[name] = lb.model_entry(
                lb.NETWORK,
                train_seconds=summary.get("seconds"),
                status="failed",
                reason=meta.failed_networks[name],
            )
        else:
            entries[name] = lb.model_entry(
                lb.NETWORK,
                metrics("test", name),
                metrics("validation", name),
                summary.get("seconds"),
                history=run.path / f"history-{name}.csv",
            )
    for name in meta.baselines:
        entries[name] = lb.model_entry(
            lb.BASELINE,
            metrics("test", name),
            metrics("validation", name),
            meta.baseline_seconds.get(name),
        )
    if sk.BLEND in report["test"]:
        seconds = (entries["network"].get("train_seconds") or 0) + meta.baseline_seconds.get(
            "hist_gradient_boosting", 0
        )
        entries[sk.BLEND] = lb.model_entry(
            lb.BLEND, metrics("test", sk.BLEND), metrics("validation", sk.BLEND), seconds
        )
    return lb.build("auprc", True, entries, meta.decision_model, history_column="val_auprc")
