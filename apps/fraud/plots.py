"""The fraud run's plots: precision-recall, ROC, calibration, the decision model's confusion
matrix and cost curve, and the training history."""

from apps.fraud.config import EvaluateConfig
from apps.fraud.metrics import PROBABILITIES
from apps.fraud.model import Meta
from shared import evaluation as ev
from shared.run import RunDir


def plot_run(
    run: RunDir,
    meta: Meta,
    report: dict,
    labels: dict,
    scores: dict,
    fn_costs: dict,
    costs: EvaluateConfig,
) -> None:
    """Every plot of a run into its plots/ folder; the cost curve only when costs are known."""
    plots = run.subdir("plots")
    y, s = labels["test"], scores["test"]
    ev.plot_precision_recall(
        {n: (y, s[n]) for n in s}, plots / "precision_recall.png", "Precision-recall (test)"
    )
    ev.plot_roc({n: (y, s[n]) for n in s}, plots / "roc.png", "ROC (test)")
    ev.plot_calibration(
        {n: (y, s[n]) for n in s if n in PROBABILITIES},
        plots / "calibration.png",
        title="Calibration (test)",
    )
    decision = meta.decision_model
    c = report["test"][decision]["confusion"]
    ev.plot_confusion_matrix(
        [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
        ["negative", "positive"],
        plots / "confusion_matrix.png",
        f"{decision} at threshold {meta.threshold:.3g} (test)",
    )
    if fn_costs["val"] is not None:
        ev.plot_cost_curve(
            labels["val"],
            scores["val"][decision],
            fn_costs["val"],
            costs.fp_cost,
            meta.threshold,
            plots / "cost_curve.png",
            f"{decision}: total cost by threshold (validation)",
        )
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "auprc"))
