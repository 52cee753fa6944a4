"""The fraud app end to end on the smoke config, through the command line a user types: what
only this app has (its models, thresholds, leaderboard and scores); the common contract is in
test_contract.py."""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from apps.fraud.baselines import BLEND, blend
from apps.fraud.data import preprocess
from apps.fraud.model import Meta, load_model, predict_rows
from apps.fraud.pipeline import select_model
from apps.fraud.sample import simulate_creditcard
from shared.run import RunDir
from tests.apps.fraud.conftest import SMOKE, cli, generic_frame, write_statlog_german
from tests.apps.fraud.test_export import served_in_fresh_process


def latest(root) -> Path:
    return (root / "runs" / "fraud" / "latest").resolve()


def test_run_holds_every_models_metrics_plots_and_card(trained):
    root, _ = trained
    run = latest(root)
    assert (run / "model.keras").is_file() and (run / "baseline_scores.npz").is_file()
    for name in ["logistic_regression", "hist_gradient_boosting", "isolation_forest"]:
        assert (run / "baselines" / f"{name}.skops").read_bytes()[:2] == b"PK"  # a zip, no pickle
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    for plot in [
        "precision_recall",
        "roc",
        "calibration",
        "confusion_matrix",
        "cost_curve",
        "history",
    ]:
        assert (run / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {
        "network",
        "autoencoder",
        "logistic_regression",
        "hist_gradient_boosting",
        "isolation_forest",
        "blend",
    }
    for model in metrics["test"].values():
        assert 0.0 <= model["auprc"] <= 1.0
        assert {
            "roc_auc",
            "precision",
            "recall",
            "f1",
            "expected_cost",
            "recall_at_top_0.5pct",
            "recall_at_top_1pct",
        } <= set(model)
    history = pd.read_csv(run / "history.csv")
    assert set(history["network"]) == {"network", "autoencoder"}
    card = (run / "model_card.md").read_text()
    assert "Operating point" in card and "Intended use" in card and "auprc" in card
    env = json.loads((run / "environment.json").read_text())
    assert env["versions"]["tensorflow"].startswith("2.21")


def validation_scores(run: Path, meta: Meta, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every model's validation scores as train computed them: the saved networks on the saved
    preprocessor's outputs, and the baselines' scores train saved."""
    scorer = load_model(RunDir(run))
    features = preprocess(
        scorer.get_layer("preprocessor"), rows, meta.numeric_inputs, meta.categorical_inputs
    )
    layers = {"network": "classifier", "autoencoder": "autoencoder"}
    scores = {n: predict_rows(scorer.get_layer(layers[n]), features, 8192) for n in meta.networks}
    saved = np.load(run / "baseline_scores.npz")
    scores |= {name: saved[f"{name}__val"] for name in meta.baselines}
    if meta.blend_weight is not None:
        scores[BLEND] = blend(
            meta.blend_weight, scores["network"], scores["hist_gradient_boosting"]
        )
    return scores


def test_threshold_saved_is_the_cost_minimiser_on_validation(trained):
    root, _ = trained
    run = latest(root)
    meta = Meta.read(RunDir(run))
    assert meta.threshold_rule == "cost"  # the sample has amounts: a miss costs its amount
    assert meta.threshold == meta.thresholds[meta.decision_model]
    frame = pd.read_parquet(Path(meta.prepared) / "frame.parquet")
    rows = frame[frame.split == "val"]
    y = rows[meta.label].to_numpy().astype(bool)
    missed = rows["amount"].to_numpy(np.float64)  # a missed fraud costs its amount
    fp_cost = meta.costs["fp_cost"]

    def cost(scores, threshold) -> float:
        flagged = scores >= threshold
        return float(missed[y & ~flagged].sum() + fp_cost * (~y & flagged).sum())

    scores = validation_scores(run, meta, rows)
    assert set(scores) == set(meta.thresholds)
    for name, s in scores.items():
        # Every distinct flag set: flag each score and above, or flag nothing.
        best = min(cost(s, t) for t in [*np.unique(s), np.inf])
        assert cost(s, meta.thresholds[name]) == pytest.approx(best, rel=1e-9), name
    point = json.loads((run / "metrics.json").read_text())["operating_point"]
    assert point["optimises"].startswith("minimises expected cost on validation")
    assert 0.0 < point["flagged_fraction"]["validation"] < 0.5


def test_the_run_ships_the_best_validation_auprc_of_network_boosting_blend_and_linear(trained):
    root, _ = trained
    run = latest(root)
    meta = Meta.read(RunDir(run))
    frame = pd.read_parquet(Path(meta.prepared) / "frame.parquet")
    rows = frame[frame.split == "val"]
    scores = validation_scores(run, meta, rows)
    y = rows[meta.label].to_numpy()
    from apps.fraud.metrics import auprc

    candidates = ["network", "hist_gradient_boosting", BLEND, "logistic_regression"]
    best = max(candidates, key=lambda n: auprc(y, scores[n]))
    assert meta.decision_model == best
    assert meta.validation_auprc[best] == pytest.approx(auprc(y, scores[best]), abs=1e-6)
    # The blend weight is the best of the grid on validation, between the two models alone.
    assert 0 < meta.blend_weight < 1


def test_model_selection_breaks_ties_in_candidate_order_and_skips_nan():
    assert select_model({"network": 0.5, "hist_gradient_boosting": 0.5, "blend": 0.4}) == (
        "network"
    )
    assert select_model({"network": float("nan"), "logistic_regression": 0.2}) == (
        "logistic_regression"
    )
    assert select_model({"autoencoder": 0.3, "isolation_forest": 0.9}) == "autoencoder"


def test_leaderboard_puts_both_networks_beside_the_baselines_and_the_blend(trained):
    root, _ = trained
    run = latest(root)
    metrics = json.loads((run / "metrics.json").read_text())
    board = metrics["leaderboard"]["detection"]
    assert board["metric"] == "auprc" and board["history_column"] == "val_auprc"
    assert board["selected"] == metrics["decision_model"]
    models = board["models"]
    assert {n: m["kind"] for n, m in models.items()} == {
        "network": "network",
        "autoencoder": "network",
        "logistic_regression": "baseline",
        "hist_gradient_boosting": "baseline",
        "isolation_forest": "baseline",
        "blend": "blend",
    }
    for name, entry in models.items():
        assert entry["status"] == "ok" and entry["train_seconds"] > 0
        assert (
            set(entry["test"])
            == set(entry["validation"])
            == {
                "auprc",
                "roc_auc",
                "recall_at_top_0.5pct",
                "recall_at_top_1pct",
            }
        )
        assert entry["test"]["auprc"] == metrics["test"][name]["auprc"]
        assert ("time_to_baseline_s" in entry) == (entry["kind"] == "network")
    # The per-epoch validation AUPRC is scikit-learn's average precision, the baselines' units.
    history = pd.read_csv(run / "history-network.csv")
    assert history["val_auprc"].between(0, 1).all()
    assert "Leaderboard (AUPRC)" in (run / "model_card.md").read_text()


def test_the_test_split_evaluate_wrote_is_in_the_scoring_layout(trained):
    root, _ = trained
    run = latest(root)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_input"] == "test_split.csv"
    test_rows = pd.read_csv(run / "test_split.csv")
    assert len(test_rows) == metrics["data"]["splits"]["test"]["rows"]
    assert "is_fraud" not in test_rows and "split" not in test_rows


def test_scores_keep_the_ids_and_flag_at_the_saved_threshold(trained, tmp_path):
    root, sets = trained
    sample = pd.read_parquet(root / "smoke.parquet").tail(300)
    path = tmp_path / "new.csv"
    sample.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    assert cli("score", *sets, "--input", str(path), "--output", str(out)) == 0
    scores = pd.read_csv(out)
    assert (
        len(scores) == 300
        and scores["transaction_id"].tolist() == sample["transaction_id"].tolist()
    )
    assert scores["fraud_probability"].between(0, 1).all() and (scores["anomaly_score"] >= 0).all()
    assert np.isfinite(scores["risk_score"]).all()
    assert pd.read_csv(tmp_path / "scores.rejects.csv").empty
    meta = Meta.read(RunDir(latest(root)))
    flagged = scores[meta.decision_output] >= meta.threshold
    near = np.isclose(scores[meta.decision_output], meta.threshold, atol=1e-6)
    assert ((scores["decision"] == "flag") == flagged)[~near].all()


BAD_ROWS = [
    ("amount", "abc", "amount: not a number ('abc')"),
    ("amount", "", "amount: missing value"),
    ("amount", "nan", "amount: missing value"),
    ("amount", "inf", "amount: not finite (inf)"),
    ("timestamp", "yesterday", "timestamp: not a timestamp ('yesterday')"),
]


def test_score_bad_rows_land_in_rejects_with_reasons(trained, tmp_path):
    root, sets = trained
    sample = pd.read_parquet(root / "smoke.parquet").head(40).astype(str)
    for i, (column, value, _) in enumerate(BAD_ROWS):
        sample.loc[i, column] = value
    sample.loc[len(BAD_ROWS), "transaction_id"] = sample.loc[
        len(BAD_ROWS) + 1, "transaction_id"
    ]  # duplicated id
    sample.loc[30, "merchant_category"] = "BADBYTE"
    sample["extra_column"] = "ignored"
    path = tmp_path / "bad.csv"
    sample.to_csv(path, index=False)
    raw = path.read_bytes().replace(b"BADBYTE", b"caf\xe9", 1)  # one non-UTF-8 byte
    path.write_bytes(raw)
    assert cli("score", *sets, "--input", str(path), "--output", str(tmp_path / "o.csv")) == 0
    out = pd.read_csv(tmp_path / "o.csv")
    rejects = pd.read_csv(tmp_path / "o.rejects.csv", keep_default_na=False)
    assert len(out) + len(rejects) == 40
    assert sorted(out["row"].tolist() + rejects["row"].tolist()) == list(range(1, 41))
    reasons = rejects.set_index("row")["reason"]
    for i, (_, _, reason) in enumerate(BAD_ROWS):
        assert reasons[i + 1] == reason
    # Row 6 copied row 7's id: row 6 comes first, so row 7 is the duplicate.
    assert reasons[7] == f"duplicate id '{sample.loc[6, 'transaction_id']}' (first seen at row 6)"
    assert reasons[31] == "merchant_category: contains bytes that are not valid UTF-8"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (
            b"transaction_id,timestamp\nT1,2026-01-01\n",
            "missing required column(s): card_id, amount",
        ),
    ],
)
def test_score_file_errors_are_one_line(trained, tmp_path, capsys, content, message):
    _, sets = trained
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    assert cli("score", *sets, "--input", str(path), "--output", str(tmp_path / "o.csv")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "o.csv").exists()


def test_score_header_only(trained, tmp_path, capsys):
    _, sets = trained
    path = tmp_path / "in.csv"
    path.write_text(
        "transaction_id,timestamp,card_id,amount,merchant_id,merchant_category,country,channel\n"
    )
    assert cli("score", *sets, "--input", str(path), "--output", str(tmp_path / "o.csv")) == 0
    assert "0 rows read: 0 scored" in capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "o.csv").columns) == [
        "row",
        "transaction_id",
        "fraud_probability",
        "anomaly_score",
        "risk_score",
        "decision",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "error: train.epochs: must be >= 1, got 0"),
        (
            "data.layout=excel",
            "error: data.layout: expected one of 'generic', 'creditcard', got 'excel'",
        ),
        ("model.hiden_units=[4]", "error: unknown key model.hiden_units"),
        ("evaluate.fp_cost=cheap", "error: evaluate.fp_cost: expected a number, got 'cheap'"),
    ],
)
def test_bad_config_fails_before_work(tmp_path, capsys, override, message):
    assert cli("train", "--config", SMOKE, "--set", f"run.root={tmp_path}", "--set", override) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not any(tmp_path.iterdir())


def test_creditcard_layout_end_to_end(tmp_path):
    path = tmp_path / "creditcard.csv"
    simulate_creditcard(3000, fraud_rate=0.02, seed=3).to_csv(path, index=False)
    sets = [
        "--config",
        "apps/fraud/configs/creditcard.yaml",
        "--set",
        f"data.path={path}",
        "--set",
        f"run.root={tmp_path / 'runs'}",
        "--set",
        "train.epochs=6",
        "--set",
        "train.batch_size=64",
        "--set",
        "train.patience=0",
        "--set",
        "model.autoencoder_epochs=1",
        "--set",
        "train.verbose=0",
        "--set",
        "model.residual_blocks=1",
        "--set",
        "model.block_width=16",
    ]
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    metrics = json.loads((tmp_path / "runs" / "fraud" / "latest" / "metrics.json").read_text())
    assert metrics["data"]["split_by"] == "time"
    assert metrics["test"]["network"]["roc_auc"] > 0.8  # the simulated fraud is separable
    to_score = pd.read_csv(path).drop(columns=["Class"]).head(50)
    to_score.to_csv(tmp_path / "new.csv", index=False)
    assert cli("score", *sets, "--input", str(tmp_path / "new.csv")) == 0
    scored = pd.read_csv(tmp_path / "new.scored.csv")
    assert len(scored) == 50
    # No per-card history in this layout: the export computes log_amount and the hour itself,
    # so it takes exactly the raw columns of the file, and serves the shipped model's score.
    export = tmp_path / "export"
    assert cli("export", *sets, "--output", str(export)) == 0
    recipe = json.loads((export / "assets.extra" / "serving.json").read_text())
    assert recipe["engineered_inputs"] == [] and recipe["inputs"].startswith("raw columns")
    served = served_in_fresh_process(export, tmp_path / "new.csv", tmp_path)
    np.testing.assert_allclose(served, scored["risk_score"], atol=2e-6)


def test_mixed_precision_xla_and_focal_loss_train_on_cpu(tmp_path, swap_in_float32_twin):
    sets = [
        "--config",
        SMOKE,
        "--set",
        f"run.root={tmp_path / 'runs'}",
        "--set",
        f"data.path={tmp_path / 's.parquet'}",
        "--set",
        "model.loss=focal",
        "--set",
        "train.mixed_precision=true",
        "--set",
        "train.xla=true",
    ]
    try:
        assert cli("train", *sets) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = tmp_path / "runs" / "fraud" / "latest"
    meta = Meta.read(RunDir(run))
    assert meta.precision_policy == "mixed_bfloat16" and meta.xla_compiled
    assert np.isfinite(meta.threshold)
    # Mixed-precision probabilities agree with float32 math on the same weights within 0.02
    # (bfloat16 keeps about 3 significant digits).
    sample, out = "datasets/fraud/score_sample.csv", {}
    for name in ("mixed", "float32"):
        out[name] = tmp_path / f"{name}.csv"
        assert cli("score", *sets, "--input", sample, "--output", str(out[name])) == 0
        if name == "mixed":
            swap_in_float32_twin(run / "model.keras")
    mixed, exact = (pd.read_csv(out[n])["fraud_probability"] for n in ("mixed", "float32"))
    assert len(mixed) > 100 and not np.array_equal(mixed, exact)
    np.testing.assert_allclose(mixed, exact, atol=0.02)


# ---------------------------------------------------------------------------------------------
# Training that cannot end silently broken


def overrides(*items: str) -> list[str]:
    """`--set item` for every item."""
    return [arg for item in items for arg in ("--set", item)]


# The residual network's layer norms keep it finite even at a learning rate of 1000; the plain
# MLP is driven to non-finite weights there, which is what these tests need to happen.
PLAIN_MLP = ("model.residual_blocks=0", "model.numeric_embedding=none", "model.hidden_units=[16]")


def smoke_sets(tmp_path, *items):
    run_root, data = f"run.root={tmp_path / 'runs'}", f"data.path={tmp_path / 's.parquet'}"
    return ["--config", SMOKE, *overrides(run_root, data, *items)]


def test_a_diverging_network_is_failed_and_a_baseline_ships_without_a_blend(tmp_path, capsys):
    sets = smoke_sets(
        tmp_path, *PLAIN_MLP, "train.learning_rate=1000", "model.autoencoder_learning_rate=0.002"
    )
    assert cli("train", *sets) == 0
    out = capsys.readouterr().out
    assert "train: network diverged:" in out and "at epoch 1 (learning rate 1e+03)" in out
    assert "network failed and is not used; the run ships " in out
    assert cli("evaluate", *sets) == 0
    run = tmp_path / "runs" / "fraud" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    shipped = metrics["decision_model"]
    assert shipped in ("hist_gradient_boosting", "logistic_regression")
    assert set(metrics["test"]) == {
        "autoencoder",
        "logistic_regression",
        "hist_gradient_boosting",
        "isolation_forest",
    }
    entry = metrics["leaderboard"]["detection"]["models"]["network"]
    assert entry["status"] == "failed" and "diverged" in entry["reason"]
    assert metrics["leaderboard"]["detection"]["selected"] == shipped
    assert "`network` **failed**" in (run / "model_card.md").read_text()
    # The failed network is not in the scorer: no probability from it, decisions from the
    # shipped baseline's risk score.
    out = tmp_path / "scores.csv"
    assert (
        cli("score", *sets, "--input", "datasets/fraud/score_sample.csv", "--output", str(out)) == 0
    )
    scores = pd.read_csv(out)
    assert "fraud_probability" not in scores and np.isfinite(scores["anomaly_score"]).all()
    threshold = Meta.read(RunDir(run)).threshold
    near = np.isclose(scores["risk_score"], threshold, atol=1e-6)
    assert ((scores["decision"] == "flag") == (scores["risk_score"] >= threshold))[~near].all()


def test_every_network_diverging_fails_the_run(tmp_path, capsys):
    assert cli("train", *smoke_sets(tmp_path, *PLAIN_MLP, "train.learning_rate=1000")) == 1
    captured = capsys.readouterr()
    assert "train: network diverged:" in captured.out
    assert "train: autoencoder diverged:" in captured.out
    error = captured.err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: every network failed")
    runs = tmp_path / "runs" / "fraud"
    assert not (runs / "latest").exists()
    (run,) = [p for p in runs.iterdir() if p.name != "prepared"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and set(metrics["failed_networks"]) == {
        "network",
        "autoencoder",
    }


# ---------------------------------------------------------------------------------------------
# Real layouts end to end


def test_credit_table_without_amount_gets_an_f1_threshold_and_flagged_fractions(tmp_path, capsys):
    path = tmp_path / "german.data"
    write_statlog_german(path, n=300)
    sets = ["--config", "apps/fraud/configs/german_credit.yaml"] + overrides(
        f"data.path={path}",
        f"run.root={tmp_path / 'runs'}",
        "data.amount=null",
        "evaluate.threshold_rule=auto",
        "evaluate.fn_cost=null",
        "train.epochs=3",
        "model.autoencoder_epochs=1",
        "train.verbose=0",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("evaluate: ships")]
    assert "maximises F1 on validation (no costs given" in line
    assert re.search(r"it flags \d+\.\d% of validation and \d+\.\d% of test rows", line)
    run = tmp_path / "runs" / "fraud" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    point = metrics["operating_point"]
    assert point["rule"] == "f1"
    assert (
        0 < point["flagged_fraction"]["test"] < 1
        and 0 < point["flagged_fraction"]["validation"] < 1
    )
    assert "expected_cost" not in metrics["test"]["network"]
    assert metrics["data"]["split_by"] == "stratified"
    card = (run / "model_card.md").read_text()
    assert "maximises F1 on validation" in card and "of test rows" in card
    test_rows = pd.read_csv(run / "test_split.csv")
    assert test_rows["checking_account"].str.match(r"A1\d").all() and "class" not in test_rows
    assert cli("score", *sets, "--input", str(run / "test_split.csv")) == 0
    assert len(pd.read_csv(run / "test_split.scored.csv")) == len(test_rows)


def test_german_credit_config_minimises_the_documented_5_to_1_cost(tmp_path):
    from apps.fraud.config import Config
    from apps.fraud.metrics import threshold_rule, threshold_text
    from apps.fraud.pipeline import prepare
    from shared.config import load_config

    path = tmp_path / "german.data"
    write_statlog_german(path, n=200)
    config = load_config(
        Config,
        "apps/fraud/configs/german_credit.yaml",
        [f"data.path={path}", f"run.root={tmp_path / 'runs'}"],
    )
    prepared = prepare(config)
    assert prepared.frame["split"].value_counts().to_dict() == {"train": 120, "val": 40, "test": 40}
    assert threshold_rule(config.evaluate, prepared.columns) == "cost"
    assert threshold_text("cost", config.evaluate, prepared.columns) == (
        "minimises expected cost on validation (missed positive: 5; false alarm: 1)"
    )


def test_f1_threshold_is_the_best_cut_on_validation():
    from apps.fraud.metrics import f1_threshold

    y = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    assert f1_threshold(y, scores) == 0.3  # flag the top four: F1 = 6 / 7, the best cut
    assert f1_threshold(np.zeros(3), np.array([0.1, 0.5, 0.2])) > 0.5  # no positive: flag none


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.split_column=fold"],
            "data.split_column 'fold' not found",
        ),
        (
            ["data.split_by=timestamp", "data.test_period=2031"],
            "data.test_period=2031: no row has 'timestamp' in or after it",
        ),
        (
            ["data.amount=null", "evaluate.threshold_rule=cost"],
            "evaluate.threshold_rule=cost needs the cost of a missed positive",
        ),
    ],
)
def test_bad_split_or_cost_settings_are_one_line_before_any_run(
    tmp_path, capsys, overrides, message
):
    assert cli("train", *smoke_sets(tmp_path, *overrides)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and message in error[0]
    assert not (tmp_path / "runs" / "fraud").exists() or [
        p.name for p in (tmp_path / "runs" / "fraud").iterdir()
    ] == ["prepared"]


def test_unknown_value_in_a_split_column_is_one_line(tmp_path, capsys):
    path = tmp_path / "tx.csv"
    generic_frame(40).assign(fold=["train", "dev", "test", "later"] * 10).to_csv(path, index=False)
    sets = overrides(
        f"run.root={tmp_path / 'runs'}",
        "data.source=file",
        f"data.path={path}",
        "data.label=fraud",
        "data.id=tx",
        "data.timestamp=when",
        "data.entity=customer",
        "data.amount=value",
        "data.split_column=fold",
    )
    assert cli("prepare", *sets) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "unknown split value(s) 'later'" in error[0]
