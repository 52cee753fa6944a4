"""Reading tables as published (headers or not, any separator, Parquet), checking them, building
features and the splits: a given split column, a time split on any date, year or time column,
or a stratified one; then the arrays the networks take, and what prepare records."""

import dataclasses
import re
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split

from apps.fraud.config import DataConfig
from apps.fraud.features import FeatureBuilder, FeatureSpec
from shared.config import ConfigError
from shared.io import DataError, check_fields, read_table
from shared.scoring import Column, InputSchema
from shared.splits import SPLITS, split_names

UNNAMED = re.compile(r"^(Unnamed: \d+|__index_level_\d+__)?$")  # pandas' names for a saved index
YEARS = (1000, 9999)  # whole numbers in this range, in a datetime column, are years


@dataclasses.dataclass
class Columns:
    """The roles of a file's columns after resolving the config against the header."""

    label: str
    id: str | None
    timestamp: str | None
    timestamp_unit: str  # datetime, seconds or year
    entity: str | None
    amount: str | None
    numeric: list[str]  # raw numeric feature columns (the amount is turned into log_amount)
    categorical: list[str]
    split_column: str | None = None  # the given split of every row
    split_by: str | None = None  # the column whose order splits train, validation and test

    def schema(self) -> InputSchema:
        """What a file to score must contain (everything but the label and the split)."""
        columns = []
        if self.id:
            columns.append(Column(self.id, "id"))
        if self.timestamp:
            kind = "datetime" if self.timestamp_unit == "datetime" else "numeric"
            columns.append(Column(self.timestamp, kind))
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


@dataclasses.dataclass
class Prepared:
    """What `prepare` hands to the other steps."""

    frame: pd.DataFrame  # typed rows + features + a `split` column, in time order
    columns: Columns  # the roles of the file's columns
    folder: Path  # the prepared-data cache folder (frame.parquet, prepare.json, rejects.csv)


def resolve_columns(
    config: DataConfig, header: list[str], dtypes: dict | None = None, unit: str | None = None
) -> Columns:
    """Match the configured column roles to a file's header; infer feature columns if not listed.

    `unit` is the timestamp unit read from the data (`timestamp_unit` of the config if None).
    """
    config = config.resolved()
    split_by = _split_by(config)
    special = {
        "label": config.label,
        "id": config.id,
        "timestamp": config.timestamp,
        "entity": config.entity,
        "amount": config.amount,
        "split_column": config.split_column,
        "split_by": split_by,
    }
    _check_roles(config, header, special)
    taken = {n for n in special.values() if n} | set(config.exclude)
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
        unit or config.timestamp_unit,
        config.entity,
        config.amount,
        numeric,
        categorical,
        config.split_column,
        split_by,
    )


def _check_roles(config: DataConfig, header: list[str], special: dict) -> None:
    """Every named role's column is in the header, and no feature list names another role's."""
    source = config.path
    for role, name in special.items():
        if name and name not in header:
            split_role = role in ("split_column", "split_by")
            what = f"data.{role} {name!r}" if split_role else f"data.{role} column {name!r}"
            hint = (
                ""
                if split_role or role == "label"
                else (f"; set data.{role}=null if the file has none")
            )
            shown = ", ".join(header[:12]) + (" ..." if len(header) > 12 else "")
            raise DataError(f"{source}: {what} not found (columns: {shown}){hint}")
    taken = {n for n in special.values() if n} - set(config.exclude)
    for role in ("numeric", "categorical"):
        for name in getattr(config, role) or []:
            if name not in header:
                raise DataError(
                    f"{source}: data.{role} lists {name!r}, which is not a column of the file"
                )
            if name in taken:
                raise DataError(
                    f"{source}: data.{role} lists {name!r}, which is the label, split or "
                    "another role's column"
                )


def _split_by(config: DataConfig) -> str | None:
    """The column a time split orders by: data.split_by, else the timestamp; None: no time split."""
    if config.split_column or config.split == "stratified":
        return None
    return config.split_by or config.timestamp


def read_rows(config: DataConfig) -> pd.DataFrame:
    """The training file as published: with or without a header, comma, tab or whitespace
    separated, or Parquet. Unnamed columns (a saved pandas row index) are dropped with a note:
    a row index can encode the label (a file sorted by class) and must never be a feature."""
    path = Path(config.path)
    if not path.exists():
        raise DataError(f"{path}: no such file (data.path)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a CSV, text or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in (".parquet", ".pq"):
        if config.names is not None:
            raise DataError(f"{path}: data.names is for text files without a header row")
        raw = read_table(path)
    else:
        raw = _read_text(path, config)
    return _drop_unnamed(raw, config.resolved(), path)


def _read_text(path: Path, config: DataConfig) -> pd.DataFrame:
    separator = {
        "auto": "\t" if path.suffix.lower() in (".tsv", ".txt") else ",",
        "whitespace": r"\s+",
    }.get(config.separator, config.separator)
    if separator != r"\s+":
        check_fields(path, separator)  # pandas would pad, cut or shift a ragged row silently
    # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name.
    # index_col=False: leading fields beyond the header's are never read as a row index.
    options = {"sep": separator, "encoding": "utf-8-sig", "encoding_errors": "replace"}
    options |= {"index_col": False} | ({"header": None} if config.names is not None else {})
    try:
        raw = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: no columns to read (empty file)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed file ({str(exc).strip().splitlines()[0]})") from exc
    if config.names is None:
        return raw
    if raw.shape[1] != len(config.names):
        raise DataError(
            f"{path}: data.names lists {len(config.names)} columns but the file's rows have "
            f"{raw.shape[1]} fields (data.separator={config.separator!r})"
        )
    if [str(v).strip() for v in raw.iloc[0]] == list(config.names):
        raise DataError(f"{path}: the first line is a header; leave data.names unset")
    raw.columns = list(config.names)
    return raw


def _drop_unnamed(raw: pd.DataFrame, config: DataConfig, path: Path) -> pd.DataFrame:
    named = {config.label, config.id, config.timestamp, config.entity, config.amount}
    unnamed = [
        c
        for c in raw.columns
        if UNNAMED.match(str(c)) and c not in named | set(config.numeric or [])
    ]
    if unnamed:
        shown = ", ".join(map(repr, unnamed))
        print(
            f"note: {path}: dropped {len(unnamed)} unnamed column(s) ({shown}): a saved row "
            "index is never a feature",
            file=sys.stderr,
        )
    return raw.drop(columns=unnamed)


def load_transactions(config: DataConfig) -> tuple[pd.DataFrame, Columns, pd.DataFrame]:
    """Read the whole training file; return typed good rows, the column roles, and rejected rows.

    Rows with a label that is neither class, an unparseable value, a duplicated id or a split
    value that is not a time are not trained on; they are returned with the reason so the
    caller writes them out rather than dropping them silently. An unknown value in the split
    column stops with one line: the row would otherwise leak into, or vanish from, a split.
    """
    raw = read_rows(config)
    if raw.empty:
        raise DataError(f"{config.path}: no rows to train on")
    resolved = config.resolved()
    unit = _timestamp_unit(resolved, raw)
    columns = resolve_columns(config, list(raw.columns), dict(raw.dtypes), unit)
    typed, reasons = columns.schema().validate(raw)
    label = _label(raw[columns.label], resolved.positive_label, resolved.negative_label)
    reasons = _add_reason(
        reasons,
        label < 0,
        f"{columns.label}: expected {resolved.negative_label} or {resolved.positive_label}",
    )
    if columns.split_column:
        typed[columns.split_column] = split_names(
            raw[columns.split_column].to_numpy(),
            f"{config.path}: data.split_column {columns.split_column!r}",
            resolved.dev_split,
        )
    if columns.split_by and columns.split_by != columns.timestamp:
        typed[columns.split_by], bad = _order_values(raw[columns.split_by])
        reasons = _add_reason(reasons, bad, f"{columns.split_by}: not a date or a number")
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
            f"{config.path}: the label {columns.label!r} has a single class; training needs "
            f"both {resolved.positive_label} (positive) and {resolved.negative_label}"
        )
    return typed, columns, rejects


def _label(values: pd.Series, positive: str, negative: str) -> pd.Series:
    """1 for the positive label value, 0 for the negative one, -1 for anything else.

    Values compare as text and, where both are numbers, as numbers (`1.0` is `1`).
    """
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")

    def matches(value: str) -> pd.Series:
        hit = text == value.strip()
        try:
            return hit | (numbers == float(value))
        except ValueError:
            return hit

    return pd.Series(
        np.select([matches(positive), matches(negative)], [1, 0], -1), index=values.index
    )


def _add_reason(reasons: pd.Series, mask, reason: str) -> pd.Series:
    mask = pd.Series(np.asarray(mask, bool), index=reasons.index)
    joined = reasons + np.where(reasons == "", "", "; ") + reason
    return reasons.where(~mask, joined)


def _timestamp_unit(config: DataConfig, raw: pd.DataFrame) -> str:
    """The configured unit, except that a datetime column holding whole years is read as years
    (pandas would read 2019 as 2019 nanoseconds after 1970, and hour-of-day of a year is noise)."""
    if not config.timestamp or config.timestamp_unit != "datetime":
        return config.timestamp_unit
    if config.timestamp in raw and _is_years(raw[config.timestamp]):
        print(
            f"note: data.timestamp {config.timestamp!r} holds whole years: used for order and "
            "splits only, no calendar or history features",
            file=sys.stderr,
        )
        return "year"
    return config.timestamp_unit


def _is_years(values: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    numbers = values.dropna().to_numpy(np.float64)
    return bool(
        len(numbers)
        and np.all(numbers == np.round(numbers))
        and numbers.min() >= YEARS[0]
        and numbers.max() <= YEARS[1]
    )


def _order_values(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A split column's values as numbers (years, seconds) or timestamps, and which failed."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype(np.float64)
        return numbers, ~np.isfinite(numbers)
    stamps = utc_times(values.astype(str).str.strip())
    return stamps, stamps.isna()


def utc_times(text: pd.Series) -> pd.Series:
    """ISO 8601 times as naive UTC: one with an offset (`+01:00`, `Z`) is converted, one
    without is taken as it is, so a file that mixes zones orders correctly; NaT where not a
    time."""
    return pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)


def add_features(typed: pd.DataFrame, columns: Columns, windows: list[str]) -> pd.DataFrame:
    """Typed rows plus engineered features, in time order when there is a timestamp."""
    if columns.timestamp:
        typed = typed.sort_values(columns.timestamp, kind="stable")
    features = FeatureBuilder(columns.feature_spec(windows)).transform(typed)
    return pd.concat([typed, features], axis=1)


def split(frame: pd.DataFrame, columns: Columns, config: DataConfig, seed: int) -> pd.Series:
    """'train'/'val'/'test' per row: as the split column says; else by time order of
    `columns.split_by` (the test set latest: from data.test_period on, or the latest
    data.test_fraction); else stratified at random. Every split must have rows."""
    if columns.split_column:
        labels = frame[columns.split_column].astype(str)
        where = f"data.split_column {columns.split_column!r}"
    elif columns.split_by:
        labels = _time_split(frame[columns.split_by], columns.split_by, config)
        where = f"the time split on {columns.split_by!r}"
    else:
        labels = _stratified_split(frame[columns.label], config, seed)
        where = "the stratified split"
    empty = [s for s in SPLITS if not (labels == s).any()]
    if empty:
        named = {"train": "training", "val": "validation", "test": "test"}
        raise DataError(
            f"{config.path}: {where} leaves no {' and no '.join(named[s] for s in empty)} rows"
        )
    return labels


def _time_split(values: pd.Series, column: str, config: DataConfig) -> pd.Series:
    labels = pd.Series("train", index=values.index, dtype=object)
    everything = pd.Series(True, index=values.index)
    if config.test_period is None:
        test = _latest(values, everything, round(len(values) * config.test_fraction))
    else:
        test = values >= _period_start(config.test_period, values, column, "test_period")
        if not test.any():
            raise DataError(
                f"{config.path}: data.test_period={config.test_period}: no row has "
                f"{column!r} in or after it ({column} runs from {_shown(values.min())} to "
                f"{_shown(values.max())})"
            )
    if config.val_period is None:
        val = _latest(values, ~test, round(len(values) * config.val_fraction))
    else:
        val = (values >= _period_start(config.val_period, values, column, "val_period")) & ~test
    labels[val], labels[test] = "val", "test"
    return labels


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _latest(values: pd.Series, among: pd.Series, count: int) -> pd.Series:
    """The latest `count` rows `among`, by `values` (ties in file order)."""
    order = values[among].sort_values(kind="stable").index
    chosen = pd.Series(False, index=values.index)
    chosen[order[max(0, len(order) - count) :]] = True
    return chosen


def _period_start(text: str, values: pd.Series, column: str, key: str):
    """Where a named period starts, in the units of the split column."""
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            start = pd.Timestamp(text)
            zone = values.dt.tz
            return start.tz_localize(zone) if zone is not None and start.tz is None else start
        return float(text)
    except ValueError as exc:
        kind = (
            "a date such as 2019 or 2019-06-15"
            if pd.api.types.is_datetime64_any_dtype(values)
            else "a number (the column is numeric)"
        )
        raise ConfigError(f"data.{key}: expected {kind} for {column!r}, got {text!r}") from exc


def _stratified_split(y: pd.Series, config: DataConfig, seed: int) -> pd.Series:
    stratify = y if y.value_counts().min() >= 3 else None
    rest, test = train_test_split(
        y.index, test_size=config.test_fraction, random_state=seed, stratify=stratify
    )
    stratify_rest = y[rest] if stratify is not None else None
    train, val = train_test_split(
        rest,
        test_size=config.val_fraction / (1 - config.test_fraction),
        random_state=seed,
        stratify=stratify_rest,
    )
    labels = pd.Series("train", index=y.index, dtype=object)
    labels[val], labels[test] = "val", "test"
    return labels


def split_description(columns: Columns, config: DataConfig, seed: int) -> str:
    """One line for prepare.json and the model card: how the rows were split."""
    if columns.split_column:
        return f"by the split column {columns.split_column!r} (dev/val as {config.dev_split})"
    if columns.split_by:
        if config.test_period is None:
            test = f"test the latest {config.test_fraction:.0%}"
        else:
            test = f"test from {config.test_period} on"
        val = (
            f"validation from {config.val_period}"
            if config.val_period
            else f"validation the latest {config.val_fraction:.0%} before it"
        )
        return f"by time on {columns.split_by!r}: {test}, {val}"
    return (
        f"stratified at random (seed {seed}): validation {config.val_fraction:.0%}, "
        f"test {config.test_fraction:.0%}"
    )


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


def split_kind(columns: Columns) -> str:
    """How the rows were split: by a `column`, by `time`, or `stratified` at random."""
    if columns.split_column:
        return "column"
    return "time" if columns.split_by else "stratified"


def prepare_summary(
    frame: pd.DataFrame, columns: Columns, rejects: pd.DataFrame, config: DataConfig, seed: int
) -> dict:
    """prepare.json: the source, column roles, row and reject counts, and each split's rows and
    positives (and time range, for a time split)."""
    counts = frame.groupby("split")[columns.label].agg(["size", "sum"])
    info = {
        "source": str(Path(config.path)),
        "columns": dataclasses.asdict(columns),
        "rows": int(len(frame)),
        "rejected_rows": int(len(rejects)),
        "splits": {
            s: {"rows": int(counts.loc[s, "size"]), "fraud": int(counts.loc[s, "sum"])}
            for s in SPLITS
        },
        "split_by": split_kind(columns),
        "split": split_description(columns, config, seed),
    }
    if columns.split_by:
        info["time_ranges"] = {
            s: [
                str(frame.loc[frame.split == s, columns.split_by].min()),
                str(frame.loc[frame.split == s, columns.split_by].max()),
            ]
            for s in SPLITS
        }
    return info


def vocabulary(values: pd.Series, limit: int) -> list[str]:
    """The `limit` most frequent values of a categorical column, sorted."""
    counts = values.astype(str).value_counts()
    return sorted(counts.index[:limit].tolist())


def preprocess(
    preprocessor: keras.Model, rows: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, np.ndarray]:
    """Run the preprocessor once over a split (parallel map in tf.data) and keep the tensors."""
    arrays = model_inputs(rows, numeric, categorical)
    dataset = (
        tf.data.Dataset.from_tensor_slices(arrays)
        .batch(16384)
        .map(lambda x: preprocessor(x, training=False), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    batches = list(dataset.as_numpy_iterator())
    if not batches:
        return {
            name: np.zeros((0,) + tuple(t.shape[1:]), dtype=t.dtype)
            for name, t in preprocessor.output.items()
        }
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
