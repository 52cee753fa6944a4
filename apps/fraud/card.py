"""The fraud run's model card and the summary evaluate prints."""

from apps.fraud.model import Meta
from shared import leaderboard as lb
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir

CARD_TITLE = "Fraud detector: model card"
CREDIT_COLUMNS = ["brier", "ks", "gini", "mean_pd", "observed_rate"]


def budget_keys(metrics: dict) -> list[str]:
    """The recall-at-alert-budget keys of a binary report, in the configured order."""
    return [k for k in metrics if k.startswith("recall_at_top_")]


def print_summary(report: dict) -> None:
    """The test metrics of every model as a table, failed networks, then the operating point."""
    first = next(iter(report["test"].values()))
    budgets = budget_keys(first)
    names = [f"recall@{k.removeprefix('recall_at_top_').removesuffix('pct')}%" for k in budgets]
    print(
        f"{'model (test)':<24}{'AUPRC':>8}{'ROC-AUC':>9}"
        + "".join(f"{n:>13}" for n in names)
        + f"{'precision':>11}{'recall':>8}{'flagged':>9}{'cost':>12}"
    )
    for name, m in report["test"].items():
        cost = f"{m['expected_cost']:>12,.0f}" if "expected_cost" in m else f"{'-':>12}"
        print(
            f"{name:<24}{m['auprc']:>8.4f}{m['roc_auc']:>9.4f}"
            + "".join(f"{m[k]:>13.3f}" for k in budgets)
            + f"{m['precision']:>11.3f}{m['recall']:>8.3f}{m['flagged_fraction']:>9.1%}{cost}"
        )
    for name, reason in report["failed_networks"].items():
        print(f"{name:<24}failed: {reason}")
    point = report["operating_point"]
    print(f"evaluate: {operating_text(point)}", flush=True)
    if point.get("drift"):
        print(f"evaluate: warning: {point['drift']}", flush=True)
    for name, check in report.get("anomaly_detectors", {}).items():
        print(f"evaluate: {name} (unsupervised) {check['verdict']}", flush=True)
    for name, risk in report.get("credit_risk", {}).items():
        print(
            f"evaluate: {name} as a probability (test): Brier {risk['brier']:.4f}, "
            f"KS {risk['ks']:.3f}, Gini {risk['gini']:.3f}",
            flush=True,
        )


def operating_text(point: dict) -> str:
    """The shipped model's threshold, flagged fraction and expected cost, validation and test."""
    flagged = point["flagged_fraction"]
    text = (
        f"ships {point['model']}; threshold {point['threshold']:.4g} on its {point['output']} "
        f"{point['optimises']}; it flags {flagged['validation']:.1%} of validation and "
        f"{flagged['test']:.1%} of test rows"
    )
    if "expected_cost" in point:
        cost, per = point["expected_cost"], point["cost_per_1000_rows"]
        text += (
            f"; expected cost {cost['validation']:,.0f} on validation, {cost['test']:,.0f} on "
            f"test ({per['validation']:,.1f} and {per['test']:,.1f} per 1,000 rows)"
        )
    return text


def write_card(run: RunDir, meta: Meta, report: dict) -> None:
    """The run's model card: use, data, models, leaderboard, metrics, operating point, limits."""
    data, point = report["data"], report["operating_point"]
    splits = ", ".join(
        f"{s}: {v['rows']:,} rows, {v['fraud']:,} positive" for s, v in data["splits"].items()
    )
    columns = ["auprc", "roc_auc", *budget_keys(report["test"][point["model"]])]
    columns += ["precision", "recall", "f1", "flagged_fraction"]
    if "expected_cost" in report["test"][point["model"]]:
        columns.append("expected_cost")
    failed = "".join(
        f"\n- `{name}` **failed** and is not used: {reason}"
        for name, reason in report["failed_networks"].items()
    )
    write_model_card(
        run.card_path,
        CARD_TITLE,
        {
            "Intended use": "Ranks rows (card transactions, credit applications) by the risk of "
            "the positive class (fraud, default) for review queues, and flags those at or above "
            "a threshold chosen on validation. Decision support for analysts, not an automatic "
            "block or refusal without review.",
            "Data": f"Source `{data['source']}`; {data['rows']:,} rows after checks "
            f"({data['rejected_rows']:,} rejected, listed in the prepare folder's rejects.csv). "
            f"Split {data['split']}: {splits}.",
            "Model": "A supervised residual MLP over numeric columns with periodic or "
            "piecewise-linear embeddings and learned embeddings for categorical columns "
            "(`fraud_probability`), an autoencoder trained on negative rows only "
            "(`anomaly_score`, reconstruction error), scikit-learn baselines (logistic "
            "regression, histogram gradient boosting, Isolation Forest) and a blend of the "
            "network and gradient boosting with its weight fitted on validation"
            f"{_blend_weight(meta)}. Normalisation and category lookups are inside the saved "
            "model; per-entity history and calendar features are computed by the app's "
            f"feature builder with windows {', '.join(meta.feature_spec['windows'])}. The run "
            f"ships `{point['model']}`, the best validation AUPRC among the network, gradient "
            f"boosting, the blend and logistic regression.{failed}",
            "Leaderboard (AUPRC)": lb.to_markdown(report["leaderboard"]["detection"])
            + "\n\nTraining seconds of the baselines are their fit times; time to baseline is "
            "the training time until a network's validation AUPRC first matched the best "
            "baseline's.",
            "Metrics (test)": metrics_table(report["test"], columns)
            + "\n\nAUPRC is the primary metric (positives are rare, so ROC-AUC flatters every "
            "model).",
            "Operating point": f"Flag when `{point['output']}` >= {point['threshold']:.4g}: "
            f"{operating_text(point)}."
            + (f"\n\n**Warning**: {point['drift']}." if point.get("drift") else ""),
            "Anomaly detectors (test)": _anomaly_text(report),
            "Credit risk (test)": _credit_text(report),
            "Limits": "History features see only the rows in the file being scored (plus "
            "earlier chunks of it); score files in time order for them to be right. "
            "Performance drifts as fraud and default patterns change: re-fit the threshold on "
            "recent labelled data. The sample data is simulated; figures on it say nothing "
            "about real portfolios.",
        },
    )


def _blend_weight(meta: Meta) -> str:
    if meta.blend_weight is None:
        return " (no blend in this run)"
    return f" (network weight {meta.blend_weight:g})"


def _anomaly_text(report: dict) -> str:
    checks = report.get("anomaly_detectors", {})
    return "\n".join(f"- `{n}` {c['verdict']}." for n, c in checks.items()) or "None trained."


def _credit_text(report: dict) -> str:
    return metrics_table(report.get("credit_risk", {}), CREDIT_COLUMNS) + (
        "\n\nEach probability model's score read as a probability of the positive class "
        "(of default, for credit): Brier score (lower is better), KS statistic and Gini "
        "(2 AUC - 1), mean predicted probability beside the observed rate; calibration.png "
        "plots the calibration curve. Class weights raise the network's probabilities, so "
        "compare its mean PD with the observed rate before reading it as a PD."
    )
