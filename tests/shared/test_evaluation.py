import numpy as np
import pytest

from shared import evaluation as ev


def test_cost_threshold_on_hand_example():
    y = np.array([1, 0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # Flag >= 0.7: catches both frauds with one false alarm: cost 1 * fp.
    threshold, cost = ev.cost_threshold(y, score, fn_cost=10.0, fp_cost=1.0)
    assert threshold == pytest.approx(0.7)
    assert cost == pytest.approx(1.0)
    # False alarms dearer than misses: flag only the top score.
    threshold, cost = ev.cost_threshold(y, score, fn_cost=10.0, fp_cost=20.0)
    assert threshold == pytest.approx(0.9)
    assert cost == pytest.approx(10.0)
    # Per-row costs: the second fraud is cheap to miss.
    threshold, cost = ev.cost_threshold(y, score, fn_cost=np.array([10, 0, 0.5, 0, 0]), fp_cost=1.0)
    assert threshold == pytest.approx(0.9)
    assert cost == pytest.approx(0.5)


def test_cost_threshold_may_flag_nothing():
    y = np.array([0, 0, 1])
    threshold, cost = ev.cost_threshold(y, np.array([0.9, 0.8, 0.1]), fn_cost=1.0, fp_cost=100.0)
    assert threshold > 0.9 and cost == 1.0


def test_cost_threshold_respects_ties():
    y = np.array([1, 0, 0])
    threshold, _ = ev.cost_threshold(y, np.array([0.5, 0.5, 0.1]), fn_cost=10.0, fp_cost=1.0)
    assert threshold == 0.5  # cannot separate the tied pair: flags both


def test_recall_at_budget_and_report():
    y = np.array([1] * 2 + [0] * 198)
    score = np.linspace(1, 0, 200)
    assert ev.recall_at_budget(y, score, 0.005) == 0.5  # top 1 row
    assert ev.recall_at_budget(y, score, 0.01) == 1.0  # top 2 rows
    report = ev.binary_report(y, score, threshold=score[1], fn_cost=100.0, fp_cost=1.0)
    assert report["auprc"] == pytest.approx(1.0)
    assert report["confusion"] == {"tp": 2, "fp": 0, "fn": 0, "tn": 198}
    assert report["expected_cost"] == 0.0
    assert report["recall_at_top_0.5pct"] == 0.5


def test_ece_detects_miscalibration():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    y = rng.uniform(0, 1, 20000) < p
    assert ev.expected_calibration_error(y, p) < 0.02
    assert ev.expected_calibration_error(y, np.clip(p * 0.5, 0, 1)) > 0.2


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 300), 0, 1)
    paths = [
        ev.plot_roc({"m": (y, s)}, tmp_path / "roc.png"),
        ev.plot_precision_recall({"m": (y, s)}, tmp_path / "pr.png"),
        ev.plot_calibration({"m": (y, s)}, tmp_path / "cal.png"),
        ev.plot_confusion_matrix([[5, 1], [2, 3]], ["a", "b"], tmp_path / "cm.png"),
        ev.plot_cost_curve(y, s, 10.0, 1.0, 0.5, tmp_path / "cost.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classification_report_counts_and_top_k():
    y = np.array([0, 1, 2, 2])
    prob = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]]
    )  # 2 of 4 right; the 4th has its true class third, the 2nd has it second
    report = ev.classification_report(y, prob, ["a", "b", "c"], top_k=2)
    assert report["examples"] == 4 and report["accuracy"] == 0.5
    assert report["top2_accuracy"] == 0.75
    assert report["per_class"]["c"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_threshold_for_target_sensitivity_and_specificity():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    score = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.5, 0.2, 0.1, 0.95, 0.4])
    t = ev.threshold_for_target(y, score, "sensitivity", 0.8)  # 4 of the 5 positives
    assert t == pytest.approx(0.7)
    rates = ev.sensitivity_specificity(y, score, t)
    assert rates["sensitivity"] == pytest.approx(0.8) and rates["specificity"] == pytest.approx(1.0)
    assert ev.threshold_for_target(y, score, "sensitivity", 1.0) == pytest.approx(0.3)
    t = ev.threshold_for_target(y, score, "specificity", 0.8)  # 4 of 5 negatives below
    rates = ev.sensitivity_specificity(y, score, t)
    assert 0.5 < t <= 0.6 and rates["specificity"] == pytest.approx(0.8)
    assert rates["sensitivity"] == pytest.approx(0.8) and rates["confusion"]["fp"] == 1
    with pytest.raises(ValueError, match="Received: metric='recall'"):
        ev.threshold_for_target(y, score, "recall", 0.9)


def test_bootstrap_interval_of_roc_auc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    score = y + rng.normal(0, 1.0, 400)
    value, low, high = ev.bootstrap_interval(ev.roc_auc, (y, score), n_boot=300, seed=1)
    assert low < value < high and 0.7 < value < 0.85 and high - low < 0.15
    assert ev.bootstrap_interval(ev.roc_auc, (y, score), n_boot=300, seed=1) == (value, low, high)
    assert np.isnan(ev.roc_auc(np.ones(5), np.arange(5)))
    _, low, high = ev.bootstrap_interval(ev.roc_auc, (y, score), n_boot=0)
    assert np.isnan(low) and np.isnan(high)
    onehot = np.eye(3)[rng.integers(0, 3, 300)]
    assert ev.macro_roc_auc(onehot, onehot + rng.normal(0, 0.1, onehot.shape)) > 0.99


def test_plot_reliability(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.random(500)
    y = (rng.random(500) < prob).astype(int)
    path = ev.plot_reliability({"model": (y, prob), "sharp": (y, prob**3)}, tmp_path / "r.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_bootstrap_over_groups_resamples_whole_patients():
    # 20 patients of 10 images each whose images agree: resampling images treats 200 as
    # independent and gives a narrower interval than the 20 patients support.
    rng = np.random.default_rng(0)
    per_patient = rng.normal(0.5, 0.2, 20)
    values = np.repeat(per_patient, 10)
    patients = np.repeat([f"p{i}" for i in range(20)], 10)
    _, low_rows, high_rows = ev.bootstrap_interval(np.mean, (values,), 400, seed=0)
    _, low, high = ev.bootstrap_interval(np.mean, (values,), 400, seed=0, groups=patients)
    assert (high - low) > 2.5 * (high_rows - low_rows)
    # Unknown ids ('') are rows of their own: all unknown is the row bootstrap.
    unknown = np.full(200, "")
    rows = ev.bootstrap_interval(np.mean, (values,), 400, seed=0, groups=unknown)
    assert rows == ev.bootstrap_interval(np.mean, (values,), 400, seed=0)
    assert ev.patients_known(patients) and not ev.patients_known(unknown)
    with pytest.raises(ValueError, match="one group per row"):
        ev.bootstrap_interval(np.mean, (values,), 10, groups=patients[:5])


def test_history_plot_leaves_a_diverging_first_epoch_off_the_loss_scale(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    spiked = pd.DataFrame({"loss": [40.0, 0.9, 0.7, 0.6], "val_loss": [35.0, 1.0, 0.8, 0.75]})
    _, ax = plt.subplots()
    ax.plot(range(4), spiked["loss"])
    assert ev._clip_first_epoch(ax, spiked)
    low, high = ax.get_ylim()
    assert high < 1.2 and low > 0.4  # the later epochs fill the axes
    calm = pd.DataFrame({"loss": [1.2, 0.9, 0.7, 0.6]})
    assert not ev._clip_first_epoch(plt.subplots()[1], calm)
    # converging: the first epoch is 5x the last ones but no spike above the second
    converging = pd.DataFrame(
        {"loss": [0.67, 0.59, 0.2, 0.14], "val_loss": [0.61, 0.58, 0.15, 0.12]}
    )
    assert not ev._clip_first_epoch(plt.subplots()[1], converging)
    plt.close("all")
    history = pd.DataFrame(
        {"epoch": range(4), "loss": spiked["loss"], "val_loss": spiked["val_loss"]}
        | {"accuracy": [0.3, 0.6, 0.7, 0.8], "val_accuracy": [0.3, 0.5, 0.6, 0.7]}
    )
    history.to_csv(tmp_path / "history.csv", index=False)
    written = ev.plot_history(tmp_path / "history.csv", tmp_path / "h.png", ("loss", "accuracy"))
    assert written.stat().st_size > 0


def test_roc_plot_marks_the_operating_point(tmp_path):
    y = np.array([0, 0, 1, 1, 0, 1])
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    points = {"model": (0.0, 2 / 3, "operating point")}
    assert ev.plot_roc({"model": (y, score)}, tmp_path / "roc.png", points=points).exists()
