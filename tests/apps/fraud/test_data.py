import numpy as np
import pandas as pd
import pytest

from apps.fraud.config import DataConfig
from apps.fraud.data import load_transactions, resolve_columns, split
from shared.io import DataError


def generic_frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tx": [f"t{i}" for i in range(n)],
            "when": pd.date_range("2026-01-01", periods=n, freq="37min").strftime(
                "%Y-%m-%dT%H:%M:%S"
            ),
            "customer": rng.choice(["c1", "c2", "c3"], n),
            "value": rng.lognormal(3, 1, n).round(2),
            "shop_type": rng.choice(["food", "travel"], n),
            "risk_score": rng.normal(size=n),
            "fraud": (np.arange(n) % 10 == 0).astype(int),
        }
    )


def config_for(path, **overrides):
    base = dict(
        source="file",
        path=str(path),
        label="fraud",
        id="tx",
        timestamp="when",
        entity="customer",
        amount="value",
    )
    base.update(overrides)
    return DataConfig(**base)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generic_layout_infers_feature_columns(tmp_path, suffix):
    path = tmp_path / f"tx{suffix}"
    frame = generic_frame()
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    typed, columns, rejects = load_transactions(config_for(path))
    assert columns.numeric == ["risk_score"]
    assert columns.categorical == ["shop_type"]
    assert len(typed) == 60 and rejects.empty
    assert typed["fraud"].tolist() == frame["fraud"].tolist()


def test_bad_training_rows_are_returned_with_reasons(tmp_path):
    frame = generic_frame().astype(str)
    frame.loc[3, "value"] = "lots"
    frame.loc[5, "fraud"] = "maybe"
    frame.loc[7, "tx"] = "t0"
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    typed, _, rejects = load_transactions(config_for(path))
    assert len(typed) + len(rejects) == 60
    assert rejects["reason"].tolist() == [
        "value: not a number ('lots')",
        "fraud: expected 0 or 1",
        "duplicate id",
    ]


def test_missing_configured_column_is_one_clear_error(tmp_path):
    path = tmp_path / "tx.csv"
    generic_frame().drop(columns=["customer"]).to_csv(path, index=False)
    with pytest.raises(
        DataError, match="data.entity column 'customer' not found.*set data.entity=null"
    ):
        load_transactions(config_for(path))


def test_single_class_label_is_refused(tmp_path):
    path = tmp_path / "tx.csv"
    generic_frame().assign(fraud=0).to_csv(path, index=False)
    with pytest.raises(DataError, match="single class"):
        load_transactions(config_for(path))


def test_creditcard_layout(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "Time": np.arange(40.0) * 100,
            **{f"V{i}": rng.normal(size=40) for i in range(1, 29)},
            "Amount": rng.uniform(0, 50, 40),
            "Class": [0, 1] * 20,
        }
    )
    path = tmp_path / "creditcard.csv"
    frame.to_csv(path, index=False)
    typed, columns, _ = load_transactions(
        DataConfig(source="file", path=str(path), layout="creditcard")
    )
    assert columns.label == "Class" and columns.timestamp == "Time" and columns.entity is None
    assert columns.numeric == [f"V{i}" for i in range(1, 29)]
    assert [c.name for c in columns.schema().columns][:2] == ["Time", "Amount"]
    with pytest.raises(DataError, match="data.amount column 'Amount' not found"):
        resolve_columns(DataConfig(layout="creditcard", path="x.csv"), ["Time", "V1", "Class"])


def test_time_split_puts_latest_rows_in_test():
    frame = generic_frame(100)
    columns = resolve_columns(config_for("x.csv"), list(frame.columns), dict(frame.dtypes))
    labels = split(frame, columns, 0.2, 0.1, seed=0)
    assert labels.tolist() == ["train"] * 70 + ["val"] * 20 + ["test"] * 10


def test_stratified_split_without_timestamp():
    frame = generic_frame(200)
    columns = resolve_columns(
        config_for("x.csv", timestamp=None), list(frame.columns), dict(frame.dtypes)
    )
    labels = split(frame, columns, 0.2, 0.2, seed=0)
    assert labels.value_counts().to_dict() == {"train": 120, "val": 40, "test": 40}
    assert frame.groupby(labels)["fraud"].sum().to_dict() == {"test": 4, "train": 12, "val": 4}
