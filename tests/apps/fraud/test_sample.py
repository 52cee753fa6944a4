import numpy as np
import pandas as pd
import pytest

from apps.fraud.sample import SimulatorConfig, simulate_creditcard, simulate_transactions

COLUMNS = [
    "transaction_id",
    "timestamp",
    "card_id",
    "amount",
    "merchant_id",
    "merchant_category",
    "country",
    "channel",
    "is_fraud",
]
SMALL = dict(n_customers=400, days=20, fraud_rate=0.01)


@pytest.fixture(scope="module")
def frame():
    return simulate_transactions(SimulatorConfig(**SMALL))


@pytest.fixture(scope="module")
def clean():
    """The small config without label noise, so labels show the injected patterns exactly."""
    return simulate_transactions(SimulatorConfig(**SMALL, label_noise=0.0))


def burst_rows(frame):
    """Rows of card-testing bursts: tiny online digital-goods charges minutes apart on a card."""
    small = frame[
        (frame.amount <= 5.0)
        & (frame.channel == "online")
        & (frame.merchant_category == "digital_goods")
    ]
    small = small.assign(t=pd.to_datetime(small.timestamp)).sort_values(["card_id", "t"])
    gap = small.groupby("card_id").t.diff().dt.total_seconds()
    near = gap <= 180
    in_burst = near | near.groupby(small.card_id).shift(-1, fill_value=False)
    return small[in_burst]


def test_layout_and_dtypes(frame):
    assert list(frame.columns) == COLUMNS
    for column in COLUMNS[:3] + COLUMNS[4:8]:
        assert pd.api.types.is_string_dtype(frame[column]), column
    assert frame.amount.dtype == np.float64
    assert pd.api.types.is_integer_dtype(frame.is_fraud)
    assert set(frame.is_fraud.unique()) == {0, 1}
    assert (frame.amount > 0).all()
    assert np.allclose(frame.amount, frame.amount.round(2))
    assert set(frame.channel) <= {"pos", "online", "atm"}
    assert 8 <= frame.merchant_category.nunique() <= 16
    assert frame.country.str.fullmatch(r"[A-Z]{2}").all()
    assert (frame.country == "US").mean() > 0.8
    assert frame.card_id.str.fullmatch(r"C\d{6}").all()
    assert frame.merchant_id.str.fullmatch(r"M\d{4}").all()
    assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_ids_unique_and_time_sorted(frame):
    assert frame.transaction_id.is_unique
    assert frame.transaction_id.iloc[0] == "T00000001"
    times = pd.to_datetime(frame.timestamp, format="%Y-%m-%dT%H:%M:%S")
    assert times.is_monotonic_increasing
    assert times.min() >= pd.Timestamp("2026-01-01")
    assert times.max() < pd.Timestamp("2026-01-21")
    # Daily cycle: nights are quiet next to the lunch and evening peaks.
    hours = times.dt.hour
    assert hours.isin(range(1, 5)).mean() < 0.03
    assert hours.isin([12, 13, 18, 19]).mean() > 0.2


def test_fraud_share_close_to_rate(frame, clean):
    rate = SMALL["fraud_rate"]
    for sample in (frame, clean):
        assert rate / 1.5 <= sample.is_fraud.mean() <= rate * 1.5


def test_fraud_is_on_existing_cards(clean):
    fraud_cards = set(clean.card_id[clean.is_fraud == 1])
    legit_cards = set(clean.card_id[clean.is_fraud == 0])
    assert len(fraud_cards) > 10
    assert len(fraud_cards & legit_cards) >= 0.9 * len(fraud_cards)


def test_card_testing_bursts(clean):
    bursts = burst_rows(clean)
    assert len(bursts) >= 3
    assert bursts.is_fraud.mean() > 0.9
    assert (bursts.groupby("card_id").size() >= 3).any()
    fraud = clean[clean.is_fraud == 1]
    assert bursts.is_fraud.sum() >= 0.1 * len(fraud)


def test_account_takeover(clean):
    fraud = clean[clean.is_fraud == 1]
    takeover = fraud[
        fraud.merchant_category.isin(["electronics", "jewelry", "gift_cards", "travel"])
        & (fraud.amount > 150)
    ]
    assert len(takeover) >= 0.2 * len(fraud)
    assert (takeover.channel == "online").mean() > 0.6
    assert (takeover.country != "US").mean() > 0.3
    # Much larger than what the same cards usually spend.
    usual = clean[(clean.is_fraud == 0) & clean.card_id.isin(takeover.card_id)].amount.median()
    assert takeover.amount.median() > 5 * usual


def test_compromised_merchants(clean):
    fraud = clean[clean.is_fraud == 1]
    per_merchant = fraud.groupby("merchant_id").card_id.agg(["size", "nunique"])
    per_merchant = per_merchant.drop(index=burst_rows(clean).merchant_id, errors="ignore")
    worst = per_merchant.sort_values("size").iloc[-1]
    # Many fraud rows on many different cards at one merchant, within a window of days.
    assert worst["size"] >= 10 and worst["nunique"] >= 8
    rows = clean[clean.merchant_id == worst.name]
    days = pd.to_datetime(rows.timestamp[rows.is_fraud == 1]).dt.normalize()
    assert (days.max() - days.min()).days <= 10
    # Moderately higher amounts than the category usually sees.
    category = clean.merchant_category == rows.merchant_category.iloc[0]
    usual = clean.amount[category & (clean.is_fraud == 0)].median()
    assert usual < rows.amount[rows.is_fraud == 1].median() < 5 * usual


def test_label_noise_flips_some_fraud_labels():
    noisy = simulate_transactions(SimulatorConfig(**SMALL | dict(label_noise=0.3)))
    bursts = burst_rows(noisy)
    assert 0.3 < bursts.is_fraud.mean() < 0.95
    rate = SMALL["fraud_rate"]
    assert rate / 1.5 <= noisy.is_fraud.mean() <= rate * 1.5


def test_same_seed_same_frame_other_seed_differs():
    config = SimulatorConfig(n_customers=60, days=5, seed=3)
    first = simulate_transactions(config)
    pd.testing.assert_frame_equal(first, simulate_transactions(config))
    other = simulate_transactions(SimulatorConfig(n_customers=60, days=5, seed=4))
    assert not first.equals(other)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("fraud_rate", 0.2, r"fraud_rate must be in \(0, 0.05\]. Received: fraud_rate=0.2"),
        ("fraud_rate", 0.0, r"fraud_rate must be in \(0, 0.05\]"),
        ("label_noise", 0.5, r"label_noise must be in \[0, 0.5\). Received: label_noise=0.5"),
        ("n_customers", 0, r"n_customers must be >= 1. Received: n_customers=0"),
        ("n_merchants", 9, r"n_merchants must be >= 10"),
        ("days", 0, r"days must be >= 1"),
        ("start", "someday", r"start must be an ISO date"),
    ],
)
def test_invalid_config_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        simulate_transactions(SimulatorConfig(**{field: value}))


def test_creditcard_layout():
    frame = simulate_creditcard(20000, fraud_rate=0.01, seed=1)
    assert list(frame.columns) == ["Time"] + [f"V{i}" for i in range(1, 29)] + ["Amount", "Class"]
    assert len(frame) == 20000
    assert (frame.drop(columns="Class").dtypes == np.float64).all()
    assert pd.api.types.is_integer_dtype(frame.Class)
    assert frame.Class.mean() == pytest.approx(0.01, rel=0.05)
    assert frame.Time.is_monotonic_increasing and frame.Time.iloc[0] == 0.0
    assert frame.Time.iloc[-1] <= 2 * 86400
    assert (frame.Amount >= 0).all()
    legit, fraud = frame[frame.Class == 0], frame[frame.Class == 1]
    assert abs(legit.V14.mean()) < 0.1 and 0.5 < legit.V14.std() < 1.5
    assert fraud.V14.mean() < -1.5 and fraud.V4.mean() > 1.0
    pd.testing.assert_frame_equal(frame, simulate_creditcard(20000, fraud_rate=0.01, seed=1))


def test_creditcard_validation():
    with pytest.raises(ValueError, match=r"n_rows must be >= 1. Received: n_rows=0"):
        simulate_creditcard(0)
    with pytest.raises(ValueError, match=r"fraud_rate must be in \(0, 0.05\]"):
        simulate_creditcard(100, fraud_rate=0.2)
