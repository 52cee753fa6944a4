import pandas as pd
import pytest

from shared import leaderboard as lb


def history(values, seconds=10.0):
    return pd.DataFrame({"val_accuracy": values, "train_seconds": [seconds] * len(values)})


def board(net_history):
    models = {
        "net": lb.model_entry(
            "network", {"accuracy": 0.8}, {"accuracy": 0.79}, 30.0, history=net_history
        ),
        "weak": lb.model_entry("baseline", {"accuracy": 0.6}, {"accuracy": 0.6}, 1.0),
        "strong": lb.model_entry("baseline", {"accuracy": 0.85}, {"accuracy": 0.75}, 2.0),
        "broken": lb.model_entry("network", status="failed", reason="diverged at epoch 1"),
    }
    return lb.build("accuracy", True, models, selected="net", history_column="val_accuracy")


def test_time_to_baseline_sums_training_seconds_to_the_first_epoch_at_the_best_baseline():
    block = board(history([0.5, 0.74, 0.76, 0.79]))
    assert block["best_baseline"] == "strong"  # best on validation, not on test
    assert block["models"]["net"]["time_to_baseline_s"] == 30.0  # third epoch reaches 0.75


def test_a_network_that_never_reaches_the_baseline_has_no_time_to_it():
    block = board(history([0.5, 0.6]))
    assert block["models"]["net"]["time_to_baseline_s"] is None
    assert "never" in lb.to_markdown(block)


def test_losing_to_the_baseline_on_test_is_reported_not_hidden():
    block = board(history([0.8]))
    assert block["models"]["net"]["beats_baseline_on_test"] is False
    text = lb.to_markdown(block)
    assert "`net` does **not** beat the best baseline (`strong`)" in text
    assert "`broken` **failed**: diverged at epoch 1" in text


def test_lower_is_better_metrics_pick_the_lowest_baseline_and_time():
    models = {
        "mf": lb.model_entry(
            "network",
            {"rmse": 0.85},
            {"rmse": 0.86},
            5.0,
            history=pd.DataFrame({"val_rmse": [1.2, 0.9, 0.86], "train_seconds": [1, 2, 3]}),
        ),
        "bias": lb.model_entry("baseline", {"rmse": 0.9}, {"rmse": 0.91}, 0.1),
    }
    block = lb.build("rmse", False, models, selected="mf", history_column="val_rmse")
    assert block["models"]["mf"]["time_to_baseline_s"] == 3.0
    assert block["models"]["mf"]["beats_baseline_on_test"] is True


def test_model_entry_checks_its_kind():
    with pytest.raises(ValueError, match="Received: kind='model'"):
        lb.model_entry("model")


def test_baseline_entries_keep_the_named_metrics_and_the_fit_time():
    fitted = {
        "logreg": {
            "test": {"accuracy": 0.8, "macro_f1": 0.7, "examples": 10},
            "validation": {"accuracy": 0.75, "macro_f1": 0.6, "examples": 5},
            "fit_seconds": 1.234,
        }
    }
    entries = lb.baseline_entries(fitted, ("accuracy", "macro_f1"))
    assert entries["logreg"]["kind"] == lb.BASELINE
    assert entries["logreg"]["test"] == {"accuracy": 0.8, "macro_f1": 0.7}
    assert entries["logreg"]["validation"] == {"accuracy": 0.75, "macro_f1": 0.6}
    assert entries["logreg"]["train_seconds"] == 1.23
    assert lb.baseline_entries(fitted)["logreg"]["test"]["examples"] == 10


def test_a_blend_is_compared_with_the_best_baseline_but_has_no_time_to_baseline():
    models = {
        "blend": lb.model_entry("blend", {"accuracy": 0.9}, {"accuracy": 0.8}, 0.5),
        "base": lb.model_entry("baseline", {"accuracy": 0.85}, {"accuracy": 0.75}, 2.0),
    }
    block = lb.build("accuracy", True, models, selected="blend", history_column="val_accuracy")
    assert block["models"]["blend"]["beats_baseline_on_test"] is True
    assert "time_to_baseline_s" not in block["models"]["blend"]
    assert "blend (blend, selected)" in lb.to_markdown(block)
