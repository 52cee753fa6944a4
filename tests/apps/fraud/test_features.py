import numpy as np
import pandas as pd
import pytest

from apps.fraud.features import FeatureBuilder, FeatureSpec

SPEC = FeatureSpec(
    timestamp="ts", timestamp_unit="datetime", amount="amount", entity="card", windows=["1h", "1D"]
)


def frame(rows):
    df = pd.DataFrame(rows, columns=["card", "ts", "amount"])
    df["ts"] = pd.to_datetime(df["ts"])
    return df


ROWS = [
    ("a", "2026-01-05 10:00", 10.0),
    ("b", "2026-01-05 10:10", 99.0),
    ("a", "2026-01-05 10:30", 20.0),
    ("a", "2026-01-05 12:00", 30.0),
    ("a", "2026-01-06 11:00", 40.0),
]


def test_history_uses_only_earlier_rows_of_the_same_entity():
    out = FeatureBuilder(SPEC).transform(frame(ROWS))
    assert out["count_1h"].tolist() == [0, 0, 1, 0, 0]
    assert out["count_1D"].tolist() == [
        0,
        0,
        1,
        2,
        1,
    ]  # row 5: only 12:00 the day before is within 24h
    assert out["log_sum_1D"].iloc[3] == pytest.approx(np.log1p(30.0))
    assert out["log_seconds_since_previous"].iloc[2] == pytest.approx(np.log1p(1800))
    assert out["amount_vs_usual"].iloc[0] == 0.0  # no history: no deviation
    assert out["amount_vs_usual"].iloc[2] == pytest.approx(np.log1p(20) - np.log1p(10))
    assert out["is_weekend"].tolist() == [0, 0, 0, 0, 0]  # 5-6 Jan 2026: Monday, Tuesday
    assert list(out.columns) == SPEC.feature_names()


def test_future_rows_do_not_change_past_features():
    full = FeatureBuilder(SPEC).transform(frame(ROWS))
    past = FeatureBuilder(SPEC).transform(frame(ROWS[:3]))
    pd.testing.assert_frame_equal(full.iloc[:3], past)


def test_chunked_transform_equals_one_pass():
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {
            "card": rng.choice(list("abcdefg"), n),
            "ts": pd.Timestamp("2026-01-01")
            + pd.to_timedelta(np.sort(rng.uniform(0, 5 * 86400, n)), unit="s"),
            "amount": rng.lognormal(3, 1, n),
        }
    )
    whole = FeatureBuilder(SPEC).transform(df)
    builder = FeatureBuilder(SPEC)
    parts = pd.concat([builder.transform(df.iloc[i : i + 37]) for i in range(0, n, 37)])
    pd.testing.assert_frame_equal(whole, parts)


def test_seconds_layout_has_no_weekday():
    spec = FeatureSpec(
        timestamp="Time", timestamp_unit="seconds", amount="Amount", entity=None, windows=["1h"]
    )
    out = FeatureBuilder(spec).transform(
        pd.DataFrame({"Time": [0.0, 3600 * 13.5], "Amount": [0.0, 5.0]})
    )
    assert list(out.columns) == ["log_amount", "hour_sin", "hour_cos"]
    assert out["hour_cos"].iloc[1] == pytest.approx(np.cos(2 * np.pi * 13.5 / 24))
