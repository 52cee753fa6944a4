"""The fraud app's sample data: a seeded simulator of card transactions with injected fraud,
written for this project.

`simulate_transactions` simulates one card per customer over a period of days: customers with
their own activity rate, amount level, category preferences, favourite merchants and home
country; merchants with a category, a country and power-law popularity; daily and weekly
cycles. Fraud is injected on the same cards from three patterns (card-testing bursts, account
takeover, compromised merchants), then a share of the labels is flipped to mimic missed and
mistaken chargebacks. The result is the app's "generic layout".

`simulate_creditcard` writes a stand-in for the public European-cardholder credit-card file
(Time, V1..V28, Amount, Class) with PCA-like components in which fraud is shifted.

Everything is vectorised with numpy and drawn from one seeded generator, so the same config
gives the same frame. `write_sample` is what `prepare` calls: it writes the sample once per
simulator config.
"""

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shared.config import ConfigError, to_dict
from shared.io import generated_is_current, record_generated, write_table

# name, share of legit spending, share of merchants, median amount, log-sd of amount,
# P(pos), P(online), P(atm), weekend factor
_CATEGORY_TABLE = [
    ("grocery", 0.22, 0.16, 38.0, 0.60, 0.94, 0.06, 0.00, 1.25),
    ("restaurant", 0.18, 0.18, 26.0, 0.60, 0.85, 0.15, 0.00, 1.40),
    ("fuel", 0.10, 0.07, 45.0, 0.40, 0.98, 0.02, 0.00, 0.90),
    ("travel", 0.02, 0.05, 310.0, 0.80, 0.15, 0.85, 0.00, 1.20),
    ("electronics", 0.03, 0.06, 180.0, 0.90, 0.45, 0.55, 0.00, 1.30),
    ("clothing", 0.07, 0.10, 60.0, 0.70, 0.60, 0.40, 0.00, 1.40),
    ("digital_goods", 0.08, 0.07, 11.0, 0.70, 0.00, 1.00, 0.00, 1.15),
    ("entertainment", 0.06, 0.07, 32.0, 0.60, 0.55, 0.45, 0.00, 1.60),
    ("health", 0.05, 0.07, 42.0, 0.80, 0.85, 0.15, 0.00, 0.70),
    ("utilities", 0.05, 0.03, 95.0, 0.50, 0.05, 0.95, 0.00, 0.40),
    ("jewelry", 0.01, 0.03, 240.0, 0.90, 0.80, 0.20, 0.00, 1.30),
    ("gift_cards", 0.02, 0.03, 45.0, 0.50, 0.55, 0.45, 0.00, 1.20),
    ("cash", 0.06, 0.05, 80.0, 0.60, 0.05, 0.00, 0.95, 1.10),
]
CATEGORIES = [row[0] for row in _CATEGORY_TABLE]
CHANNELS = ["pos", "online", "atm"]
_CAT = {name: i for i, name in enumerate(CATEGORIES)}
_SPEND_SHARE = np.array([row[1] for row in _CATEGORY_TABLE])
_MERCHANT_SHARE = np.array([row[2] for row in _CATEGORY_TABLE])
_MEDIAN = np.array([row[3] for row in _CATEGORY_TABLE])
_SIGMA = np.array([row[4] for row in _CATEGORY_TABLE])
_CHANNEL_P = np.array([row[5:8] for row in _CATEGORY_TABLE])
_WEEKEND = np.array([row[8] for row in _CATEGORY_TABLE])
_ONLINE = CHANNELS.index("online")
_POS = CHANNELS.index("pos")
_ATM = CHANNELS.index("atm")

# Home countries of customers (and of most merchants); the first is the domestic market.
_HOME = ["US", "CA", "GB", "MX", "DE", "FR", "IN", "BR", "ES", "NL"]
_HOME_P = np.array([0.86, 0.03, 0.025, 0.025, 0.015, 0.015, 0.01, 0.01, 0.005, 0.005])
# Where fraudsters operate from: partly outside the customers' countries.
_FRAUD_ORIGIN = ["RU", "NG", "RO", "UA", "VN", "ID", "CN", "BR", "GB", "MX"]
COUNTRIES = _HOME + [c for c in _FRAUD_ORIGIN if c not in _HOME]
_FRAUD_ORIGIN_IDX = np.array([COUNTRIES.index(c) for c in _FRAUD_ORIGIN])

# Relative transactions per hour of day: quiet nights, lunch and evening peaks.
_HOUR_BASE = np.array(
    [0.15, 0.08, 0.05, 0.04, 0.05, 0.10, 0.30, 0.60, 0.90, 1.00, 1.10, 1.40]
    + [1.90, 1.70, 1.20, 1.10, 1.20, 1.50, 1.90, 2.00, 1.70, 1.20, 0.80, 0.40]
)
# (hours, factor) bumps on the base cycle for categories with their own rhythm.
_HOUR_BUMPS = {
    "restaurant": [(range(6, 11), 0.4), (range(11, 14), 2.0), (range(18, 22), 1.8)],
    "fuel": [(range(7, 10), 1.6), (range(16, 19), 1.4)],
    "digital_goods": [(range(19, 24), 1.8), (range(0, 2), 1.8)],
    "entertainment": [(range(19, 24), 1.8), (range(0, 2), 1.8)],
    "utilities": [(range(9, 18), 1.3)],
}
# Account takeovers and card testing happen more at night, when the owner is asleep.
_HOUR_NIGHT = _HOUR_BASE + np.array([1.2] * 6 + [0.0] * 17 + [0.6])

# Categories a taken-over account is drained through, their weights and median amounts.
_ATO_CATS = np.array([_CAT["electronics"], _CAT["jewelry"], _CAT["gift_cards"], _CAT["travel"]])
_ATO_P = np.array([0.4, 0.25, 0.25, 0.1])
_ATO_MEDIAN_BY_CAT = _MEDIAN * 4  # far above the usual amount, whatever the category
_ATO_MEDIAN_BY_CAT[_ATO_CATS] = [900.0, 1200.0, 300.0, 800.0]

# Share of the injected fraud rows per pattern: card testing, account takeover, merchants.
_PATTERN_SHARE = (0.2, 0.45, 0.35)


@dataclasses.dataclass
class SimulatorConfig:
    """Size, period, fraud level and seed of the simulated transactions."""

    n_customers: int = 3000  # cards simulated (one card per customer)
    n_merchants: int = 600  # merchants, power-law popularity
    days: int = 60  # length of the simulated period in days
    start: str = "2026-01-01"  # first day (ISO date)
    fraud_rate: float = 0.005  # target share of rows labelled fraud (0.001 - 0.01)
    label_noise: float = 0.05  # share of fraud labels flipped to 0; label_noise/100 of legit to 1
    seed: int = 0  # same seed, same transactions


def _check(name: str, value, ok: bool, bounds: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {bounds}. Received: {name}={value!r}")


def _validate(config: SimulatorConfig) -> np.datetime64:
    _check("n_customers", config.n_customers, config.n_customers >= 1, ">= 1")
    _check("n_merchants", config.n_merchants, config.n_merchants >= 10, ">= 10")
    _check("days", config.days, config.days >= 1, ">= 1")
    _check("fraud_rate", config.fraud_rate, 0 < config.fraud_rate <= 0.05, "in (0, 0.05]")
    _check("label_noise", config.label_noise, 0 <= config.label_noise < 0.5, "in [0, 0.5)")
    try:
        start = pd.Timestamp(config.start)
    except (TypeError, ValueError):
        start = pd.NaT
    _check("start", config.start, start is not pd.NaT, "an ISO date such as 2026-01-01")
    return np.datetime64(start.normalize().to_datetime64(), "s")


def _hour_profile(category: str) -> np.ndarray:
    weights = _HOUR_BASE.copy()
    for hours, factor in _HOUR_BUMPS.get(category, []):
        weights[list(hours)] *= factor
    return weights / weights.sum()


def _pick(rng: np.random.Generator, p: np.ndarray, size: int | None = None) -> np.ndarray:
    """Vectorised categorical draw: `size` draws from weights `p`, or one per row of a 2-D `p`."""
    cum = np.cumsum(p, axis=-1)
    cum = cum / cum[..., -1:]
    if cum.ndim == 1:
        return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), len(cum) - 1)
    u = rng.random(len(cum))
    return np.minimum((u[:, None] >= cum).sum(axis=1), cum.shape[1] - 1)


def _merchants(rng: np.random.Generator, n: int) -> dict:
    # The first merchants cover the categories in order of spending, so none is left empty
    # (as long as there are enough merchants); the rest follow the merchant shares.
    order = np.argsort(-_SPEND_SHARE, kind="stable")
    first = order[: min(n, len(CATEGORIES))]
    rest = rng.choice(
        len(CATEGORIES), size=n - len(first), p=_MERCHANT_SHARE / _MERCHANT_SHARE.sum()
    )
    category = np.concatenate([first, rest])
    # Merchants are mostly domestic; travel merchants are more often abroad.
    abroad = rng.random(n) < np.where(category == _CAT["travel"], 0.45, 0.1)
    foreign = 1 + rng.choice(len(_HOME) - 1, size=n, p=_HOME_P[1:] / _HOME_P[1:].sum())
    country = np.where(abroad, foreign, 0)
    # Zipf-like popularity over a random ranking: a few merchants get most of the traffic.
    popularity = 1.0 / (1.0 + rng.permutation(n)) ** 1.05
    by_category = [np.flatnonzero(category == k) for k in range(len(CATEGORIES))]
    return {
        "category": category,
        "country": country,
        "popularity": popularity,
        "by_category": by_category,
    }


def _draw_merchants(
    rng: np.random.Generator,
    merchants: dict,
    cats: np.ndarray,
    home: np.ndarray | None = None,
    boost: float = 30.0,
) -> np.ndarray:
    """A merchant per row of the wanted category, weighted by popularity.

    With `home`, merchants in the customer's home country get `boost` times the weight (less
    for travel), so people mostly shop where they live. Categories without merchants fall back
    to all merchants.
    """
    out = np.empty(len(cats), dtype=np.int64)
    home = np.zeros(len(cats), dtype=np.int64) if home is None else home
    key = cats * len(COUNTRIES) + home
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    for group, rows in zip(keys, np.split(order, starts[1:]), strict=True):
        k, country = divmod(int(group), len(COUNTRIES))
        cands = merchants["by_category"][k]
        if len(cands) == 0:
            cands = np.arange(len(merchants["category"]))
        weight = merchants["popularity"][cands]
        if boost != 1.0:
            factor = 3.0 if k == _CAT["travel"] else boost
            weight = weight * np.where(merchants["country"][cands] == country, factor, 1.0)
        out[rows] = rng.choice(cands, size=len(rows), p=weight / weight.sum())
    return out


def _days_and_seconds(
    rng: np.random.Generator, cats: np.ndarray, days: int, weekday0: int
) -> np.ndarray:
    """Second of the period for each row: day by category's weekly cycle, hour by daily cycle."""
    seconds = np.empty(len(cats), dtype=np.int64)
    weekend = ((weekday0 + np.arange(days)) % 7) >= 5
    for k in np.unique(cats):
        rows = np.flatnonzero(cats == k)
        day_p = np.where(weekend, _WEEKEND[k], 1.0)
        day = rng.choice(days, size=len(rows), p=day_p / day_p.sum())
        hour = rng.choice(24, size=len(rows), p=_hour_profile(CATEGORIES[k]))
        seconds[rows] = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=len(rows))
    return seconds


def _amounts(
    rng: np.random.Generator,
    cats: np.ndarray,
    offset: np.ndarray | float,
    median: np.ndarray | None = None,
    sigma_scale: np.ndarray | float = 1.0,
) -> np.ndarray:
    median = _MEDIAN[cats] if median is None else median
    log_amount = (
        np.log(median) + offset + _SIGMA[cats] * sigma_scale * rng.standard_normal(len(cats))
    )
    amount = np.exp(log_amount)
    # ATM withdrawals come in notes of 20.
    atm = cats == _CAT["cash"]
    amount[atm] = np.maximum(20.0, np.round(amount[atm] / 20.0) * 20.0)
    return np.maximum(0.5, np.round(amount, 2))


def _channels(rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
    return _pick(rng, _CHANNEL_P[cats])


def _legit(
    rng: np.random.Generator, config: SimulatorConfig, merchants: dict, weekday0: int
) -> tuple[dict, np.ndarray]:
    n_c = config.n_customers
    home = _pick(rng, _HOME_P, size=n_c)
    rate = rng.gamma(2.0, 0.85, size=n_c)  # transactions per day, mean 1.7
    level = rng.normal(0.0, 0.4, size=n_c)  # customer's log-amount offset
    spread = rng.uniform(0.7, 1.3, size=n_c)  # customer's amount variability
    available = np.array([len(m) > 0 for m in merchants["by_category"]])
    alpha = 20.0 * _SPEND_SHARE * available + 1e-9
    prefs = rng.dirichlet(alpha, size=n_c) * available
    # Favourite merchant per customer and category: repeat visits to the same shops.
    favourite = np.stack(
        [_draw_merchants(rng, merchants, np.full(n_c, k), home) for k in range(len(CATEGORIES))],
        axis=1,
    )

    counts = rng.poisson(rate * config.days)
    cust = np.repeat(np.arange(n_c), counts)
    cats = _pick(rng, prefs[cust])
    drawn = _draw_merchants(rng, merchants, cats, home[cust])
    merchant = np.where(rng.random(len(cust)) < 0.5, favourite[cust, cats], drawn)
    cats = merchants["category"][merchant]
    seconds = _days_and_seconds(rng, cats, config.days, weekday0)
    amount = _amounts(rng, cats, level[cust], sigma_scale=spread[cust])
    channel = _channels(rng, cats)
    part = {"seconds": seconds, "customer": cust, "merchant": merchant, "amount": amount}
    part.update(channel=channel, origin=home[cust])
    return part, home


def _foreign_origin(rng: np.random.Generator, home: np.ndarray, p_foreign: float) -> np.ndarray:
    """Fraudster's country: often abroad (not the card's home), otherwise the home country."""
    pick = _FRAUD_ORIGIN_IDX[rng.integers(0, len(_FRAUD_ORIGIN_IDX), size=len(home))]
    # Re-draw once where the "foreign" pick equals home; a rare leftover stays home.
    again = _FRAUD_ORIGIN_IDX[rng.integers(0, len(_FRAUD_ORIGIN_IDX), size=len(home))]
    pick = np.where(pick == home, again, pick)
    return np.where(rng.random(len(home)) < p_foreign, pick, home)


def _event_start(rng: np.random.Generator, n: int, period: int) -> np.ndarray:
    day = rng.integers(0, max(1, period // 86400), size=n)
    hour = rng.choice(24, size=n, p=_HOUR_NIGHT / _HOUR_NIGHT.sum())
    return day * 86400 + hour * 3600 + rng.integers(0, 3600, size=n)


def _cards(rng: np.random.Generator, n_customers: int, n: int) -> np.ndarray:
    """Distinct cards while there are enough, so events spread over many customers."""
    return rng.choice(n_customers, size=n, replace=n > n_customers)


def _card_testing(
    rng: np.random.Generator, n_rows: int, home: np.ndarray, merchants: dict, period: int
) -> dict:
    """Bursts of tiny online charges at a digital-goods merchant, to check a stolen card works."""
    n_bursts = max(1, int(round(n_rows / 6.5)))
    sizes = rng.integers(3, 11, size=n_bursts)
    cards = _cards(rng, len(home), n_bursts)
    start = _event_start(rng, n_bursts, period)
    merchant = _draw_merchants(rng, merchants, np.full(n_bursts, _CAT["digital_goods"]), boost=1.0)
    origin = _foreign_origin(rng, home[cards], 0.75)
    burst = np.repeat(np.arange(n_bursts), sizes)
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    # 5 s to 2 min between the charges of a burst, counted from the burst's first charge.
    gaps = rng.integers(5, 120, size=len(burst))
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[first][burst]
    part = {"seconds": start[burst] + offset, "customer": cards[burst], "merchant": merchant[burst]}
    part.update(amount=np.round(rng.uniform(0.5, 5.0, size=len(burst)), 2))
    part.update(channel=np.full(len(burst), _ONLINE), origin=origin[burst])
    return part


def _account_takeover(
    rng: np.random.Generator, n_rows: int, home: np.ndarray, merchants: dict, period: int
) -> dict:
    """From a moment on, a few large purchases in resale-friendly categories, mostly online."""
    n_events = max(1, int(round(n_rows / 5.0)))
    sizes = rng.integers(2, 9, size=n_events)
    cards = _cards(rng, len(home), n_events)
    start = _event_start(rng, n_events, period)
    duration = rng.uniform(1.0, 48.0, size=n_events) * 3600
    origin = _foreign_origin(rng, home[cards], 0.65)
    event = np.repeat(np.arange(n_events), sizes)
    offset = rng.uniform(0.0, 1.0, size=len(event)) * duration[event]
    offset[np.r_[0, np.cumsum(sizes)[:-1]]] = 0.0  # the takeover starts with a purchase
    which = _pick(rng, _ATO_P, size=len(event))
    merchant = _draw_merchants(rng, merchants, _ATO_CATS[which], boost=1.0)
    cats = merchants["category"][merchant]
    amount = _amounts(rng, cats, 0.0, median=_ATO_MEDIAN_BY_CAT[cats], sigma_scale=0.6)
    channel = np.where(rng.random(len(event)) < 0.8, _ONLINE, _POS)
    part = {"seconds": start[event] + offset.astype(np.int64), "customer": cards[event]}
    part.update(merchant=merchant, amount=amount, channel=channel, origin=origin[event])
    return part


def _compromised_merchants(
    rng: np.random.Generator, n_rows: int, home: np.ndarray, merchants: dict, days: int
) -> dict:
    """A few merchants through which stolen cards are charged during a window of days."""
    n_rows = max(1, n_rows)
    # Everyday shops (skimmers, breached tills), kept apart from the other patterns' categories.
    excluded = [_CAT["cash"], _CAT["utilities"], _CAT["digital_goods"], *_ATO_CATS]
    cands = np.flatnonzero(~np.isin(merchants["category"], excluded))
    if len(cands) == 0:
        cands = np.arange(len(merchants["category"]))
    weight = merchants["popularity"][cands]
    n_bad = int(min(len(cands), np.clip(np.ceil(n_rows / 80), 1, 6)))
    bad = rng.choice(cands, size=n_bad, replace=False, p=weight / weight.sum())
    length = np.minimum(rng.integers(3, 11, size=n_bad), days)
    first = rng.integers(0, days - length + 1)
    which = rng.integers(0, n_bad, size=n_rows)
    merchant = bad[which]
    cats = merchants["category"][merchant]
    day = first[which] + (rng.random(n_rows) * length[which]).astype(np.int64)
    seconds = _days_and_seconds(rng, cats, 1, 0) + day * 86400
    amount = _amounts(rng, cats, 0.5, sigma_scale=0.8)  # about 1.6x the usual amount
    part = {"seconds": seconds, "customer": rng.integers(0, len(home), size=n_rows)}
    part.update(merchant=merchant, amount=amount, channel=_channels(rng, cats))
    part.update(origin=merchants["country"][merchant])
    return part


def _flip(rng: np.random.Generator, labels: np.ndarray, rows: np.ndarray, share: float) -> None:
    count = int(round(share * len(rows)))
    if count:
        labels[rng.choice(rows, size=count, replace=False)] ^= 1


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    width = max(width, len(str(int(numbers.max()) if len(numbers) else 0)))
    return np.char.add(prefix, np.char.zfill(numbers.astype("U"), width))


def simulate_transactions(config: SimulatorConfig) -> pd.DataFrame:
    """Simulate card transactions in the generic layout, sorted by time.

    Columns: transaction_id, timestamp (ISO seconds), card_id, amount, merchant_id,
    merchant_category, country (ISO-2), channel (pos/online/atm), is_fraud (0/1).
    """
    start = _validate(config)
    rng = np.random.default_rng(config.seed)
    weekday0 = int((start.astype("datetime64[D]").astype(np.int64) + 3) % 7)  # Monday = 0
    period = config.days * 86400
    merchants = _merchants(rng, config.n_merchants)
    legit, home = _legit(rng, config, merchants, weekday0)

    # Inject enough fraud that, after label noise, about fraud_rate of the rows read as fraud.
    noise, legit_noise = config.label_noise, config.label_noise / 100
    true_rate = (config.fraud_rate - legit_noise) / (1 - noise - legit_noise)
    true_rate = max(true_rate, config.fraud_rate / 2)
    n_legit = len(legit["seconds"])
    n_fraud = max(3, int(round(true_rate * n_legit / (1 - true_rate))))
    n_test = int(round(_PATTERN_SHARE[0] * n_fraud))
    n_ato = int(round(_PATTERN_SHARE[1] * n_fraud))
    parts = [
        legit,
        _card_testing(rng, n_test, home, merchants, period),
        _account_takeover(rng, n_ato, home, merchants, period),
        _compromised_merchants(rng, n_fraud - n_test - n_ato, home, merchants, config.days),
    ]
    data = {key: np.concatenate([p[key] for p in parts]) for key in legit}
    truth = np.concatenate([np.full(len(p["seconds"]), int(i > 0)) for i, p in enumerate(parts)])
    data["seconds"] = np.clip(data["seconds"], 0, period - 1)

    labels = truth.astype(np.int64)
    _flip(rng, labels, np.flatnonzero(truth == 1), noise)
    _flip(rng, labels, np.flatnonzero(truth == 0), legit_noise)

    order = np.argsort(data["seconds"], kind="stable")
    data = {key: value[order] for key, value in data.items()}
    labels = labels[order]
    merchant = data["merchant"]
    # Card-present rows happen at the merchant; online rows where the buyer is.
    country = np.where(data["channel"] == _ONLINE, data["origin"], merchants["country"][merchant])
    n = len(order)
    return pd.DataFrame(
        {
            "transaction_id": _ids("T", np.arange(1, n + 1), 8),
            "timestamp": np.datetime_as_string(start + data["seconds"], unit="s"),
            "card_id": _ids("C", data["customer"], 6),
            "amount": data["amount"].astype(np.float64),
            "merchant_id": _ids("M", merchant, 4),
            "merchant_category": np.array(CATEGORIES)[merchants["category"][merchant]],
            "country": np.array(COUNTRIES)[country],
            "channel": np.array(CHANNELS)[data["channel"]],
            "is_fraud": labels,
        }
    )


# Components in which fraud is shifted (in standard deviations), as in the public data set.
_CC_SHIFT = {1: -2.0, 2: 1.5, 3: -3.5, 4: 2.5, 7: -1.5, 9: -1.5, 10: -3.5, 11: 2.5}
_CC_SHIFT |= {12: -4.0, 14: -4.5, 16: -2.5, 17: -4.0, 18: -1.0}


def simulate_creditcard(n_rows: int, fraud_rate: float = 0.005, seed: int = 0) -> pd.DataFrame:
    """Simulate the public credit-card fraud layout: Time, V1..V28, Amount, Class.

    Legit rows have roughly standard normal components; fraud rows are shifted in several of
    them by a per-row severity, so they separate well but not perfectly. Time spans about two
    days with a daily cycle and starts at 0.
    """
    _check("n_rows", n_rows, n_rows >= 1, ">= 1")
    _check("fraud_rate", fraud_rate, 0 < fraud_rate <= 0.05, "in (0, 0.05]")
    rng = np.random.default_rng(seed)
    n_fraud = int(round(fraud_rate * n_rows))
    if n_rows >= 2:
        n_fraud = max(n_fraud, 1)  # both classes whenever there is room for them
    label = np.zeros(n_rows, dtype=np.int64)
    label[rng.choice(n_rows, size=n_fraud, replace=False)] = 1
    fraud = label == 1

    # Two days; fraud is spread more evenly over the day than legit spending.
    legit_hours = np.tile(_HOUR_BASE, 2)
    fraud_hours = np.tile(_HOUR_NIGHT + 1.0, 2)
    hour = np.where(
        fraud,
        _pick(rng, fraud_hours, size=n_rows),
        _pick(rng, legit_hours, size=n_rows),
    )
    seconds = hour * 3600 + rng.integers(0, 3600, size=n_rows)

    # Legit amounts: lognormal around 22 with a few zero-amount checks; fraud: many tiny
    # test charges and some large ones.
    amount = np.exp(rng.normal(np.log(22.0), 1.4, size=n_rows))
    amount[rng.random(n_rows) < 0.006] = 0.0
    tiny = rng.random(n_rows) < 0.5
    fraud_amount = np.where(
        tiny, rng.uniform(0.0, 3.0, n_rows), np.exp(rng.normal(4.6, 1.2, n_rows))
    )
    amount = np.round(np.where(fraud, fraud_amount, amount), 2)

    # PCA-like components: variance falling with the index, a little tied to the amount.
    scale = np.linspace(1.3, 0.6, 28)
    v = rng.standard_normal((n_rows, 28)) * scale
    z_amount = (np.log1p(amount) - 3.0) / 1.4
    v[:, 6] += 0.3 * z_amount
    v[:, 19] += 0.4 * z_amount
    severity = rng.uniform(0.05, 1.0, size=n_rows) * fraud
    for index, shift in _CC_SHIFT.items():
        v[:, index - 1] += severity * shift * scale[index - 1]
    v[fraud] *= 1.3  # fraud is also more spread out

    order = np.argsort(seconds, kind="stable")
    seconds = seconds[order]
    frame = pd.DataFrame(v[order], columns=[f"V{i}" for i in range(1, 29)])
    frame.insert(0, "Time", (seconds - seconds[0]).astype(np.float64))
    frame["Amount"] = amount[order]
    frame["Class"] = label[order]
    return frame


def write_sample(path: str | Path, config: SimulatorConfig) -> None:
    """Write `simulate_transactions(config)` to `path` unless the same sample is already there."""
    path = Path(path)
    wanted = to_dict(config)
    if generated_is_current(path, wanted):
        return
    start = time.perf_counter()
    try:
        frame = simulate_transactions(config)
    except ValueError as exc:
        raise ConfigError(f"data.simulator: {exc}") from exc
    write_table(path, frame)
    record_generated(path, wanted)
    print(
        f"prepare: simulated {len(frame):,} transactions ({frame['is_fraud'].mean():.2%} "
        f"fraud) -> {path} in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
