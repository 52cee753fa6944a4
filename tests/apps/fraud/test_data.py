import numpy as np
import pandas as pd
import pytest

from apps.fraud.config import DataConfig
from apps.fraud.data import add_features, load_transactions, resolve_columns, split
from shared.config import ConfigError, from_dict
from shared.io import DataError
from tests.apps.fraud.conftest import (
    STATLOG_CODES,
    STATLOG_NAMES,
    generic_frame,
    write_creditcard_sample,
    write_statlog_german,
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
    config = config_for("x.csv", val_fraction=0.2, test_fraction=0.1)
    columns = resolve_columns(config, list(frame.columns), dict(frame.dtypes))
    labels = split(frame, columns, config, seed=0)
    assert labels.tolist() == ["train"] * 70 + ["val"] * 20 + ["test"] * 10


def test_stratified_split_without_timestamp():
    frame = generic_frame(200)
    config = config_for("x.csv", timestamp=None, val_fraction=0.2, test_fraction=0.2)
    columns = resolve_columns(config, list(frame.columns), dict(frame.dtypes))
    labels = split(frame, columns, config, seed=0)
    assert labels.value_counts().to_dict() == {"train": 120, "val": 40, "test": 40}
    assert frame.groupby(labels)["fraud"].sum().to_dict() == {"test": 4, "train": 12, "val": 4}


# ---------------------------------------------------------------------------------------------
# Real layouts: the credit-card sample as re-saved by pandas, Statlog German credit as UCI
# publishes it, a split column, and a year column.


@pytest.mark.parametrize("layout", ["creditcard", "generic"])
def test_unnamed_leading_index_column_is_dropped_and_never_a_feature(tmp_path, capsys, layout):
    path = tmp_path / "creditcard_sample.csv"
    frame = write_creditcard_sample(path)
    generic = dict(label="Class", id=None, timestamp="Time", timestamp_unit="seconds")
    config = DataConfig(
        source="file",
        path=str(path),
        layout=layout,
        **(generic | {"entity": None, "amount": "Amount"} if layout == "generic" else {}),
    )
    typed, columns, rejects = load_transactions(config)
    assert "Unnamed: 0" not in typed.columns and rejects.empty
    assert columns.numeric == [f"V{i}" for i in range(1, 29)]
    assert "Unnamed: 0" not in columns.schema().names
    assert typed["Class"].tolist() == frame["Class"].tolist()
    err = capsys.readouterr().err
    assert "dropped 1 unnamed column(s) ('Unnamed: 0'): a saved row index is never a feature" in err


def statlog_config(path, **overrides):
    base = dict(
        source="file",
        path=str(path),
        names=STATLOG_NAMES,
        separator="whitespace",
        label="class",
        positive_label="2",
        negative_label="1",
        id=None,
        timestamp=None,
        entity=None,
        amount=None,
    )
    return DataConfig(**(base | overrides))


def test_headerless_whitespace_file_with_configured_names_and_positive_label(tmp_path):
    path = tmp_path / "german.data"
    written = write_statlog_german(path)
    assert path.read_text().splitlines()[0].split(" ")[0].startswith("A1")
    typed, columns, rejects = load_transactions(statlog_config(path))
    assert rejects.empty and len(typed) == 240
    assert len(columns.numeric) == 7 and len(columns.categorical) == 13
    assert set(columns.categorical) == set(STATLOG_CODES)
    assert typed["class"].tolist() == (written["class"] == 2).astype(int).tolist()  # bad = 1
    assert typed["checking"].str.match(r"A1\d").all()


def test_headerless_file_bad_input(tmp_path):
    path = tmp_path / "german.data"
    write_statlog_german(path, n=40)
    lines = path.read_text().splitlines()
    lines[3] = lines[3][: -len("1")] + "3"  # a class that is neither 1 nor 2
    path.write_text("\n".join(lines) + "\n")
    _, _, rejects = load_transactions(statlog_config(path))
    assert rejects["reason"].tolist() == ["class: expected 1 or 2"]
    with pytest.raises(DataError, match="data.names lists 20 columns but the file's rows have 21"):
        load_transactions(statlog_config(path, names=STATLOG_NAMES[:-2] + ["class"]))
    path.write_text(" ".join(STATLOG_NAMES) + "\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match="the first line is a header; leave data.names unset"):
        load_transactions(statlog_config(path))


def with_split_column(tmp_path, values):
    frame = generic_frame(len(values)).assign(fold=values)
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("dev_split", "values", "expected"),
    [
        ("validation", ["train", "train", "dev", " Test"], ["train", "train", "val", "test"]),
        ("test", ["train", "Validation", "train", "dev"], ["train", "val", "train", "test"]),
    ],
)
def test_split_column_gives_each_rows_split(tmp_path, dev_split, values, expected):
    path = with_split_column(tmp_path, values * 10)
    config = config_for(path, split_column="fold", dev_split=dev_split)
    typed, columns, _ = load_transactions(config)
    assert split(typed, columns, config, seed=0).tolist() == expected * 10
    assert "fold" not in columns.numeric + columns.categorical + columns.schema().names


def test_split_column_without_validation_rows_is_one_line(tmp_path):
    path = with_split_column(tmp_path, ["train", "test"] * 10)
    config = config_for(path, split_column="fold")
    typed, columns, _ = load_transactions(config)
    with pytest.raises(DataError, match="data.split_column 'fold' leaves no validation rows"):
        split(typed, columns, config, seed=0)


def test_unknown_split_value_is_one_line(tmp_path):
    path = with_split_column(tmp_path, ["train", "valid", "holdout", "test"] * 10)
    with pytest.raises(DataError, match=r"unknown split value\(s\) 'holdout'; expected train"):
        load_transactions(config_for(path, split_column="fold"))


def year_frame(n=120):
    """A credit-default table: one row per loan, the year it was granted, no amount or time."""
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "loan": [f"L{i}" for i in range(n)],
            "year": np.repeat(np.arange(2014, 2020), n // 6),
            "income": rng.lognormal(10, 0.5, n).round(),
            "grade": rng.choice(list("ABCD"), n),
            "default": (rng.uniform(size=n) < 0.3).astype(int),
        }
    )


def year_config(path, **overrides):
    base = dict(
        source="file",
        path=str(path),
        label="default",
        id="loan",
        timestamp=None,
        entity=None,
        amount=None,
        split_by="year",
        test_period="2019",
    )
    return DataConfig(**(base | overrides))


def test_year_column_split_with_a_named_test_period(tmp_path):
    path = tmp_path / "loans.csv"
    frame = year_frame()
    frame.to_csv(path, index=False)
    config = year_config(path, val_period="2018")
    typed, columns, _ = load_transactions(config)
    labels = split(typed, columns, config, seed=0)
    by_year = pd.crosstab(typed["year"], labels)
    assert by_year.to_dict("index")[2019] == {"test": 20, "train": 0, "val": 0}
    assert by_year.to_dict("index")[2018] == {"test": 0, "train": 0, "val": 20}
    assert set(typed.loc[labels == "train", "year"]) == {2014, 2015, 2016, 2017}
    # The year orders the split; it is never a feature, and there is no clock to featurise.
    assert columns.numeric == ["income"] and columns.categorical == ["grade"]
    assert columns.feature_spec(["1h"]).feature_names() == []
    # Without a validation period, validation is the latest rows before the test period.
    config = year_config(path, val_fraction=0.2)
    labels = split(typed, columns, config, seed=0)
    assert (labels == "val").sum() == 24
    assert typed.loc[labels == "val", "year"].min() >= 2017


def test_a_year_timestamp_is_never_turned_into_hour_of_day(tmp_path, capsys):
    path = tmp_path / "loans.csv"
    year_frame().to_csv(path, index=False)
    config = year_config(path, timestamp="year", split_by=None)
    typed, columns, _ = load_transactions(config)
    assert columns.timestamp_unit == "year"
    assert "holds whole years" in capsys.readouterr().err
    features = add_features(typed, columns, ["1h", "24h"])
    assert not {"hour_sin", "hour_cos", "weekday_sin", "is_weekend"} & set(features.columns)
    assert columns.feature_spec(["1h"]).feature_names() == []
    labels = split(features, columns, config, seed=0)
    assert set(features.loc[labels == "test", "year"]) == {2019}


def test_date_column_split_from_a_named_month(tmp_path):
    frame = generic_frame(90).assign(
        booked=pd.date_range("2025-11-01", periods=90, freq="D").strftime("%Y-%m-%d")
    )
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    config = config_for(path, split_by="booked", test_period="2026-01")
    typed, columns, _ = load_transactions(config)
    labels = split(typed, columns, config, seed=0)
    assert typed.loc[labels == "test", "booked"].min() == pd.Timestamp("2026-01-01")
    assert (labels == "test").sum() == 29 and "booked" not in columns.schema().names


def test_test_period_absent_from_the_data_is_one_line(tmp_path):
    path = tmp_path / "loans.csv"
    year_frame().to_csv(path, index=False)
    config = year_config(path, test_period="2030")
    typed, columns, _ = load_transactions(config)
    with pytest.raises(
        DataError,
        match=r"data.test_period=2030: no row has 'year' in or after it \(year runs "
        r"from 2014 to 2019\)",
    ):
        split(typed, columns, config, seed=0)
    with pytest.raises(ConfigError, match="data.test_period: expected a number .* got 'soon'"):
        split(typed, columns, year_config(path, test_period="soon"), seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split": "time", "timestamp": None}, "a time split .* needs a time column"),
        ({"test_period": "2019", "timestamp": None}, "a time split .* needs a time column"),
        ({"split_column": "fold", "split": "time"}, "data.split_column='fold' gives every row"),
        ({"val_period": "2019"}, "data.val_period needs data.test_period"),
        ({"separator": "::"}, "data.separator: expected auto, whitespace or one character"),
        ({"names": ["a", "a"]}, "data.names: expected distinct, non-empty column names"),
        ({"positive_label": "1", "negative_label": " 1"}, "must differ"),
    ],
)
def test_inconsistent_reading_and_split_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(DataConfig, overrides)
