"""Leak-free transaction features: per-entity history over trailing windows, and the calendar.

Every history feature of a row uses only rows of the same entity strictly before it in time
(file order breaks ties), so no future row leaks into a feature. Training and scoring call
the same `FeatureBuilder`; when scoring in chunks, the builder carries each entity's recent
rows from one chunk to the next.
"""

import dataclasses

import numpy as np
import pandas as pd

SECONDS_SHIFT = 34  # entity code << 34 keeps every entity's timestamps apart (2^34 s ~ 544 years)
NO_PREVIOUS_S = 30 * 86400.0  # "time since previous" for an entity's first row: a month


@dataclasses.dataclass
class FeatureSpec:
    """Which columns carry time, amount and entity, and the history windows; saved with the
    model."""

    timestamp: str | None  # column with the time of the transaction
    timestamp_unit: str  # "datetime" (parsed), "seconds" (numeric offsets) or "year" (no clock)
    amount: str | None  # column with the transaction amount
    entity: str | None  # card or customer column whose history is tracked
    windows: list[str]  # trailing windows such as "1h", "24h", "7d"

    @property
    def window_seconds(self) -> list[float]:
        return [pd.Timedelta(w).total_seconds() for w in self.windows]

    @property
    def has_clock(self) -> bool:
        """Whether the timestamp has a time of day: a year has none, so no calendar features."""
        return bool(self.timestamp) and self.timestamp_unit != "year"

    @property
    def has_history(self) -> bool:
        return bool(self.entity and self.has_clock and self.amount and self.windows)

    def feature_names(self) -> list[str]:
        names = []
        if self.amount:
            names.append("log_amount")
        if self.has_clock:
            names += ["hour_sin", "hour_cos"]
            if self.timestamp_unit == "datetime":
                names += ["weekday_sin", "weekday_cos", "is_weekend"]
        if self.has_history:
            for window in self.windows:
                names += [f"count_{window}", f"log_sum_{window}"]
            names += ["amount_vs_usual", "amount_z_usual", "log_seconds_since_previous"]
        return names


class FeatureBuilder:
    """Adds the engineered columns to typed rows; keeps per-entity state between chunks."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.carry_ = None  # recent (entity, seconds, log amount) rows from earlier chunks

    def transform(self, rows: pd.DataFrame) -> pd.DataFrame:
        spec = self.spec
        out = {}
        seconds = _seconds(rows[spec.timestamp], spec.timestamp_unit) if spec.has_clock else None
        log_amount = (
            np.log1p(np.clip(rows[spec.amount].to_numpy(np.float64), 0, None))
            if spec.amount
            else None
        )
        if spec.amount:
            out["log_amount"] = log_amount
        if spec.has_clock:
            hours = (seconds % 86400.0) / 3600.0
            out["hour_sin"], out["hour_cos"] = (
                np.sin(2 * np.pi * hours / 24),
                np.cos(2 * np.pi * hours / 24),
            )
            if spec.timestamp_unit == "datetime":
                weekday = _naive_utc(rows[spec.timestamp]).dt.dayofweek.to_numpy()
                out["weekday_sin"] = np.sin(2 * np.pi * weekday / 7)
                out["weekday_cos"] = np.cos(2 * np.pi * weekday / 7)
                out["is_weekend"] = (weekday >= 5).astype(np.float64)
        if spec.has_history:
            out.update(self._history(rows[spec.entity].astype(str).to_numpy(), seconds, log_amount))
        return pd.DataFrame(out, index=rows.index)

    def _history(self, entity: np.ndarray, seconds: np.ndarray, log_amount: np.ndarray) -> dict:
        n_new = len(entity)
        if self.carry_ is not None:
            entity = np.concatenate([self.carry_[0], entity])
            seconds = np.concatenate([self.carry_[1], seconds])
            log_amount = np.concatenate([self.carry_[2], log_amount])
        codes, _ = pd.factorize(entity)
        key = (codes.astype(np.int64) << SECONDS_SHIFT) + np.floor(seconds).astype(np.int64)
        order = np.argsort(key, kind="stable")  # by entity, then time, then file order
        k = key[order]
        amount = log_amount[order]
        cum = np.r_[0.0, np.cumsum(amount)]
        cum_sq = np.r_[0.0, np.cumsum(amount**2)]
        position = np.arange(len(k))
        sorted_out = {}
        raw_amount = np.expm1(amount)
        cum_raw = np.r_[0.0, np.cumsum(raw_amount)]
        for window, width in zip(self.spec.windows, self.spec.window_seconds, strict=True):
            start = np.searchsorted(k, k - int(width), side="left")  # first row inside the window
            count = position - start  # rows strictly before this one, same entity, inside window
            sorted_out[f"count_{window}"] = count.astype(np.float64)
            sorted_out[f"log_sum_{window}"] = np.log1p(cum_raw[position] - cum_raw[start])
        # "Usual" spending: mean and spread of the entity's log amounts over the longest window.
        count = sorted_out[f"count_{self.spec.windows[int(np.argmax(self.spec.window_seconds))]}"]
        start = position - count.astype(np.int64)
        total = cum[position] - cum[start]
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        var = (
            np.divide(
                cum_sq[position] - cum_sq[start], count, out=np.zeros_like(total), where=count > 0
            )
            - mean**2
        )
        std = np.sqrt(np.clip(var, 0, None))
        has_usual = count > 0
        sorted_out["amount_vs_usual"] = np.where(has_usual, amount - mean, 0.0)
        sorted_out["amount_z_usual"] = np.where(has_usual, (amount - mean) / (std + 0.25), 0.0)
        same_entity_before = np.r_[False, (k[1:] >> SECONDS_SHIFT) == (k[:-1] >> SECONDS_SHIFT)]
        sorted_seconds = seconds[order]
        gap = np.where(
            same_entity_before, sorted_seconds - np.r_[0.0, sorted_seconds[:-1]], NO_PREVIOUS_S
        )
        sorted_out["log_seconds_since_previous"] = np.log1p(np.clip(gap, 0, None))

        self.carry_ = self._next_carry(entity, seconds, log_amount)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        n_carry = len(entity) - n_new
        return {name: values[inverse][n_carry:] for name, values in sorted_out.items()}

    def _next_carry(self, entity, seconds, log_amount):
        if len(seconds) == 0:
            return self.carry_
        keep = seconds >= seconds.max() - max(self.spec.window_seconds)
        return entity[keep], seconds[keep], log_amount[keep]


def _seconds(values: pd.Series, unit: str) -> np.ndarray:
    if unit == "seconds":
        return values.to_numpy(np.float64)
    stamps = _naive_utc(values)
    return (stamps - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy(np.float64)


def _naive_utc(values: pd.Series) -> pd.Series:
    """Times on one clock: zoned ones (a Parquet column with a time zone) converted to UTC,
    naive ones as they are (the scoring schema reads a file's times this way)."""
    stamps = pd.to_datetime(values)
    return stamps.dt.tz_convert("UTC").dt.tz_localize(None) if stamps.dt.tz is not None else stamps
