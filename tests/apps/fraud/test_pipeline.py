"""The fraud app end to end on the smoke config, through the command line a user types."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps.fraud.simulate import simulate_creditcard
from shared.cli import main
from shared.run import RunDir

SMOKE = "apps/fraud/configs/smoke.yaml"


def cli(*args):
    return main(["fraud", *args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fraud")
    sets = [
        "--config",
        SMOKE,
        "--set",
        f"run.root={root / 'runs'}",
        "--set",
        f"data.path={root / 'smoke.parquet'}",
    ]
    assert cli("prepare", *sets) == 0
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    return root, sets


def test_run_folder_has_every_artifact(trained):
    root, _ = trained
    run = root / "runs" / "fraud" / "latest"
    for name in [
        "config.yaml",
        "environment.json",
        "metrics.json",
        "history.csv",
        "model.keras",
        "model_meta.json",
        "model_card.md",
        "FINISHED",
    ]:
        assert (run / name).is_file(), name
    assert (run / "saved_model" / "saved_model.pb").is_file()
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


def test_threshold_saved_is_the_cost_minimiser_on_validation(trained):
    root, _ = trained
    meta = json.loads((root / "runs" / "fraud" / "latest" / "model_meta.json").read_text())
    assert 0.0 < meta["threshold"] <= 1.0
    assert meta["threshold"] == meta["thresholds"]["network"]


def test_score_sample_and_parity_with_saved_model(trained, tmp_path):
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
    assert scores["decision"].isin(["flag", "pass"]).all()
    assert scores["fraud_probability"].between(0, 1).all() and (scores["anomaly_score"] >= 0).all()
    assert pd.read_csv(tmp_path / "scores.rejects.csv").empty

    # The exported SavedModel and the reloaded .keras model give the same numbers.
    run = RunDir.locate("fraud", None, str(root / "runs"))
    meta = json.loads(run.meta_path.read_text())
    model = keras.saving.load_model(run.model_path, safe_mode=True)
    from apps.fraud.pipeline import TransactionScorer

    scorer = TransactionScorer(run, batch_size=128)
    assert set(model.input) == set(scorer.model.input)
    exported = tf.saved_model.load(str(run.saved_model_path))
    from shared.scoring import InputSchema

    typed, _ = InputSchema.from_dict(meta["schema"]).validate(
        pd.read_csv(path, dtype=str, keep_default_na=False)
    )
    frame = pd.concat(
        [typed, scorer.features.__class__(scorer.features.spec).transform(typed)], axis=1
    )
    from apps.fraud.data import model_inputs

    arrays = model_inputs(frame, meta["numeric_inputs"], meta["categorical_inputs"])
    served = exported.serve({k: tf.constant(v) for k, v in arrays.items()})
    np.testing.assert_allclose(
        served["fraud_probability"].numpy(), scores["fraud_probability"], atol=2e-6
    )
    np.testing.assert_allclose(
        served["anomaly_score"].numpy(), scores["anomaly_score"], rtol=1e-4, atol=2e-6
    )


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


def test_missing_run_is_one_line(tmp_path, capsys):
    assert cli("evaluate", "--set", f"run.root={tmp_path}") == 2
    assert "no trained run found" in capsys.readouterr().err


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
        "model.hidden_units=[16]",
    ]
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    metrics = json.loads((tmp_path / "runs" / "fraud" / "latest" / "metrics.json").read_text())
    assert metrics["data"]["split_by"] == "time"
    assert metrics["test"]["network"]["roc_auc"] > 0.8  # the simulated fraud is separable
    to_score = pd.read_csv(path).drop(columns=["Class"]).head(50)
    to_score.to_csv(tmp_path / "new.csv", index=False)
    assert cli("score", *sets, "--input", str(tmp_path / "new.csv")) == 0
    assert len(pd.read_csv(tmp_path / "new.scored.csv")) == 50


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
    meta = json.loads((run / "model_meta.json").read_text())
    assert meta["precision_policy"] == "mixed_bfloat16" and meta["xla_compiled"]
    assert np.isfinite(meta["threshold"])
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
