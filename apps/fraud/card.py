"""The fraud run's model card and the summary evaluate prints."""

from apps.fraud.model import Meta
from shared import leaderboard as lb
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir

CARD_TITLE = "Fraud detector: model card"


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
    print(
        f"evaluate: threshold {point['threshold']:.4g} on {point['model']}'s {point['output']} "
        f"{point['optimises']}; it flags {point['flagged_fraction']['validation']:.1%} of "
        f"validation and {point['flagged_fraction']['test']:.1%} of test rows",
        flush=True,
    )


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
    flagged = point["flagged_fraction"]
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
            "Model": "A supervised MLP with embeddings for categorical columns "
            "(`fraud_probability`) and an autoencoder trained on negative rows only "
            "(`anomaly_score`, reconstruction error). Normalisation and category lookups are "
            "inside the saved model; per-entity history and calendar features are computed by "
            "the app's feature builder with windows "
            f"{', '.join(meta.feature_spec['windows'])}. The decision model is "
            f"`{point['model']}`, the trained network with the best validation AUPRC.{failed}",
            "Leaderboard (AUPRC)": lb.to_markdown(report["leaderboard"]["detection"])
            + "\n\nTraining seconds of the baselines are their fit times; time to baseline is "
            "the training time until a network's validation AUPRC first matched the best "
            "baseline's.",
            "Metrics (test)": metrics_table(report["test"], columns)
            + "\n\nAUPRC is the primary metric (positives are rare, so ROC-AUC flatters every "
            "model).",
            "Operating point": f"Flag when `{point['output']}` >= {point['threshold']:.4g}: "
            f"the threshold {point['optimises']}. It flags {flagged['validation']:.1%} of "
            f"validation rows and {flagged['test']:.1%} of test rows.",
            "Limits": "History features see only the rows in the file being scored (plus "
            "earlier chunks of it); score files in time order for them to be right. "
            "Performance drifts as fraud and default patterns change: re-fit the threshold on "
            "recent labelled data. The sample data is simulated; figures on it say nothing "
            "about real portfolios.",
        },
    )
