"""Reading transactions in either layout, checking them, building features and time-ordered splits."""

import dataclasses
import re
import sys

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from apps.fraud.config import DataConfig
from apps.fraud.features import FeatureBuilder, FeatureSpec
from shared.io import DataError, read_table
from shared.scoring import Column, InputSchema

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Columns:
    """The roles of a file's columns after resolving the config against the header."""

    label: str
    id: str | None
    timestamp: str | None
    timestamp_unit: str
    entity: str | None
    amount: str | None
    numeric: list[str]  # raw numeric feature columns (the amount is turned into log_amount)
    categorical: list[str]

    def schema(self) -> InputSchema:
        """What a file to score must contain (everything but the label)."""
        columns = []
        if self.id:
            columns.append(Column(self.id, "id"))
        if self.timestamp:
            columns.append(
                Column(
                    self.timestamp, "datetime" if self.timestamp_unit == "datetime" else "numeric"
                )
            )
        if self.entity:
            columns.append(Column(self.entity, "categorical"))
        if self.amount:
            columns.append(Column(self.amount, "numeric"))
        columns += [Column(c, "numeric") for c in self.numeric]
        columns += [Column(c, "categorical") for c in self.categorical]
        return InputSchema(columns=columns, id_column=self.id)

    def feature_spec(self, windows: list[str]) -> FeatureSpec:
        return FeatureSpec(
            self.timestamp, self.timestamp_unit, self.amount, self.entity, list(windows)
        )


def resolve_columns(config: DataConfig, header: list[str], dtypes: dict | None = None) -> Columns:
    """Match the configured column roles to a file's header; infer feature columns if not listed."""
    config = config.resolved()
    source = config.path
    special = {
        "label": config.label,
        "id": config.id,
        "timestamp": config.timestamp,
        "entity": config.entity,
        "amount": config.amount,
    }
    for role, name in special.items():
        if name and name not in header:
            hint = "" if role == "label" else f"; set data.{role}=null if the file has none"
            raise DataError(
                f"{source}: data.{role} column {name!r} not found (columns: {', '.join(header[:12])}{' ...' if len(header) > 12 else ''}){hint}"
            )
    taken = {n for n in special.values() if n} | set(config.exclude)
    for role in ("numeric", "categorical"):
        for name in getattr(config, role) or []:
            if name not in header:
                raise DataError(
                    f"{source}: data.{role} lists {name!r}, which is not a column of the file"
                )
    rest = [c for c in header if c not in taken]
    dtypes = dtypes or {}
    if config.numeric is None:
        numeric = [
            c
            for c in rest
            if pd.api.types.is_numeric_dtype(dtypes.get(c, object))
            and c not in (config.categorical or [])
        ]
    else:
        numeric = list(config.numeric)
    if config.categorical is None:
        categorical = [c for c in rest if c not in numeric]
    else:
        categorical = list(config.categorical)
    return Columns(
        config.label,
        config.id,
        config.timestamp,
        config.timestamp_unit,
        config.entity,
        config.amount,
        numeric,
        categorical,
    )


def load_transactions(config: DataConfig) -> tuple[pd.DataFrame, Columns, pd.DataFrame]:
    """Read the whole training file; return typed good rows, the column roles, and rejected rows.

    Rows with a missing label, an unparseable value or a duplicated id are not trained on; they
    are returned with the reason so the caller writes them out rather than dropping them silently.
    """
    raw = read_table(config.path)
    if raw.empty:
        raise DataError(f"{config.path}: no rows to train on")
    columns = resolve_columns(config, list(raw.columns), dict(raw.dtypes))
    schema = columns.schema()
    typed, reasons = schema.validate(raw)
    label = pd.to_numeric(raw[columns.label], errors="coerce")
    bad_label = ~label.isin([0, 1])
    reasons = reasons.where(
        ~bad_label,
        reasons + np.where(reasons == "", "", "; ") + f"{columns.label}: expected 0 or 1",
    )
    if columns.id:
        duplicated = raw[columns.id].duplicated(keep="first") & (reasons == "")
        reasons = reasons.where(~duplicated, "duplicate id")
    good = reasons == ""
    rejects = raw[~good].copy()
    rejects.insert(0, "reason", reasons[~good])
    typed = typed[good].copy()
    typed[columns.label] = label[good].astype(np.int8)
    if good.sum() == 0:
        raise DataError(f"{config.path}: every row was rejected; first reason: {reasons.iloc[0]}")
    if typed[columns.label].nunique() < 2:
        raise DataError(
            f"{config.path}: the label {columns.label!r} has a single class; fraud training needs both"
        )
    return typed, columns, rejects


def add_features(typed: pd.DataFrame, columns: Columns, windows: list[str]) -> pd.DataFrame:
    """Typed rows plus engineered features, in time order when there is a timestamp."""
    if columns.timestamp:
        typed = typed.sort_values(columns.timestamp, kind="stable")
    features = FeatureBuilder(columns.feature_spec(windows)).transform(typed)
    return pd.concat([typed, features], axis=1)


def split(
    frame: pd.DataFrame, columns: Columns, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """'train'/'val'/'test' per row: by time when there is a timestamp (test latest), else stratified."""
    n = len(frame)
    if columns.timestamp:
        # `frame` is in time order: earliest rows train, latest rows test.
        n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
        labels = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
        return pd.Series(labels, index=frame.index)
    y = frame[columns.label]
    stratify = y if y.value_counts().min() >= 3 else None
    rest, test = train_test_split(
        frame.index, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    stratify_rest = y[rest] if stratify is not None else None
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        random_state=seed,
        stratify=stratify_rest,
    )
    labels = pd.Series("train", index=frame.index)
    labels[val], labels[test] = "val", "test"
    return labels


def feature_columns(columns: Columns, windows: list[str]) -> tuple[list[str], list[str]]:
    """The model's numeric and categorical inputs."""
    numeric = list(columns.numeric) + columns.feature_spec(windows).feature_names()
    return numeric, list(columns.categorical)


def input_name(column: str) -> str:
    """A column name that is safe as a Keras input and SavedModel signature key."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", column)
    return name if re.match(r"[A-Za-z]", name) else f"c_{name}"


def model_inputs(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, np.ndarray]:
    """Column arrays keyed by input name: float32 numerics, string categoricals, each (n, 1)."""
    arrays = {input_name(c): frame[c].to_numpy(np.float32).reshape(-1, 1) for c in numeric}
    for c in categorical:
        arrays[input_name(c)] = frame[c].astype(str).to_numpy(dtype=object).reshape(-1, 1)
    return arrays


def report_rejects(rejects: pd.DataFrame, where: str) -> None:
    if len(rejects):
        top = rejects["reason"].str.split(";").str[0].value_counts().head(3)
        summary = ", ".join(f"{count} x {reason}" for reason, count in top.items())
        print(
            f"{len(rejects):,} rows rejected before training ({summary}) -> {where}",
            file=sys.stderr,
        )
