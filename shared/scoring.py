"""The batch-scoring engine: chunked input, row-level validation, atomic outputs and rejects.

Every input row lands in exactly one of two files: the outputs, or the rejects with the reason.
The schema that rows are checked against is saved with the model at training time.
"""

import contextlib
import csv
import dataclasses
import functools
import os
import secrets
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from shared.io import (
    ROW_PROBLEMS,
    DataError,
    count_table_rows,
    iter_table_chunks,
    read_table_header,
    row_problems,
)

KINDS = ("numeric", "categorical", "datetime", "id")
REPLACEMENT_CHAR = "\ufffd"  # what undecodable bytes become when the file is read


@dataclasses.dataclass
class Column:
    name: str  # column name in the input file
    kind: str  # one of KINDS


@dataclasses.dataclass
class InputSchema:
    """The columns a model needs, with their kinds; saved with the model as a plain dict."""

    columns: list[Column]
    id_column: str | None = None

    def __post_init__(self):
        for column in self.columns:
            if column.kind not in KINDS:
                raise ValueError(
                    f"column kind must be one of {KINDS}. Received: kind={column.kind!r}"
                )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSchema":
        return cls(columns=[Column(**c) for c in data["columns"]], id_column=data.get("id_column"))

    def check_header(self, header: list[str], source: str) -> list[str]:
        """Raise one DataError naming every missing column; return the extra ones."""
        missing = [name for name in self.names if name not in header]
        if missing:
            raise DataError(f"{source}: missing required column(s): {', '.join(missing)}")
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError(
                f"{source}: duplicated column name(s): {', '.join(map(str, duplicated))}"
            )
        return [h for h in header if h not in self.names]

    def validate(self, chunk: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """Typed values for the schema's columns, and a reason per row ('' for a good row).

        A row's reason lists its columns' problems in schema order ("amount: missing value;
        when: not a timestamp ('soon')"). The messages are built for the rows that have the
        problem only: on a server's few rows, building them for every row cost more than the
        checks themselves."""
        reasons = np.full(len(chunk), "", dtype=object)
        typed = {}
        for column in self.columns:
            parse = _PARSERS[column.kind]
            typed[column.name], problems = parse(chunk[column.name])
            prefix = f"{column.name}: "
            for mask, message in problems:
                at = np.flatnonzero(mask)
                if not len(at):
                    continue
                texts = message(at) if callable(message) else [message] * len(at)
                reasons[at] = [
                    f"{before}{prefix}{text}; "
                    for before, text in zip(reasons[at], texts, strict=True)
                ]
        bad = np.flatnonzero(reasons != "")
        reasons[bad] = [reason.rstrip("; ") for reason in reasons[bad]]
        return pd.DataFrame(typed, index=chunk.index), pd.Series(
            reasons, index=chunk.index, dtype=object
        )


# A parser returns the typed column and its problems: (mask, message) pairs, the message a str
# or, where it quotes the value, `message(positions) -> the messages of the rows at positions`.


def _as_text(values: pd.Series) -> pd.Series:
    if values.dtype == _TEXT and not values.hasnans:
        return values.str.strip()  # already text: what the round trip below gives back
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        return values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return values.astype(str)


_TEXT = pd.StringDtype(na_value=np.nan)  # the text columns `iter_table_chunks` reads


def _quoted(values: pd.Series) -> pd.Series:
    return "'" + values.astype(str).str.slice(0, 40) + "'"


def _quoting(text: pd.Series, before: str, quote: bool = True):
    """`message(positions)`: `before`, the row's text (quoted and cut at 40, or whole), ')'."""

    def message(at: np.ndarray) -> list[str]:
        some = text.iloc[at]
        return list(before + (_quoted(some) if quote else some) + ")")

    return message


def _bad_bytes(text: pd.Series) -> tuple[np.ndarray, str]:
    mask = text.str.contains(REPLACEMENT_CHAR, regex=False).to_numpy(bool)
    return mask, "contains bytes that are not valid UTF-8"


def _parse_numeric(values: pd.Series):
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype(np.float64)
        missing = numbers.isna().to_numpy()
        infinite = np.isinf(numbers.to_numpy())
        problems = [
            (missing, "missing value"),
            (infinite, lambda at: list("not finite (" + numbers.iloc[at].astype(str) + ")")),
        ]
        return numbers.where(~(missing | infinite), 0.0), problems
    text = _as_text(values)
    numbers = pd.to_numeric(text, errors="coerce").astype(np.float64)
    unparsed = numbers.isna().to_numpy()
    infinite = np.isinf(numbers.to_numpy())
    # Empty text, a missing-value word and undecodable bytes never parse as a number: they
    # are looked for among the rows that did not parse only.
    empty, nan_literal, bad_bytes = (np.zeros(len(text), bool) for _ in range(3))
    if unparsed.any():
        rest = text[unparsed]
        empty[unparsed] = (rest == "").to_numpy(bool)
        nan_literal[unparsed] = rest.str.lower().isin(_MISSING_WORDS).to_numpy(bool)
        bad_bytes[unparsed] = _bad_bytes(rest)[0]
    not_number = unparsed & ~empty & ~nan_literal
    problems = [
        (empty | nan_literal, "missing value"),
        (not_number & ~bad_bytes, _quoting(text, "not a number (")),
        (infinite, _quoting(text, "not finite (", quote=False)),
        (bad_bytes, "contains bytes that are not valid UTF-8"),
    ]
    return numbers.where(~(unparsed | infinite), 0.0), problems


_MISSING_WORDS = ["nan", "na", "n/a", "null", "none"]


def _parse_categorical(values: pd.Series):
    # A missing or new category is legitimate: the model's lookup maps it to the unknown bucket.
    text = _as_text(values)
    return text, [_bad_bytes(text)]


def _parse_datetime(values: pd.Series):
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values
        if stamps.dt.tz is not None:  # a zoned Parquet column: naive UTC, as text is read
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        bad = stamps.isna()
        return stamps.where(~bad, pd.Timestamp(0)), [(bad.to_numpy(), "missing timestamp")]
    text = _as_text(values)
    # utc=True: a time with an offset (+01:00, Z) is converted to UTC, and a file that mixes
    # offsets parses (pandas refuses it otherwise); a time without one is taken as it is.
    stamps = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    stamps = stamps.dt.tz_localize(None)
    bad = stamps.isna().to_numpy()
    empty = np.zeros(len(text), bool)
    if bad.any():
        empty[bad] = (text[bad] == "").to_numpy(bool)
    problems = [
        (empty, "missing timestamp"),
        (bad & ~empty, _quoting(text, "not a timestamp (")),
    ]
    return stamps.where(~bad, pd.Timestamp(0)), problems


def _parse_id(values: pd.Series):
    text = _as_text(values)
    return text, [((text == "").to_numpy(bool), "missing id"), _bad_bytes(text)]


_PARSERS = {
    "numeric": _parse_numeric,
    "categorical": _parse_categorical,
    "datetime": _parse_datetime,
    "id": _parse_id,
}


@dataclasses.dataclass
class ScoreCounts:
    rows: int = 0
    scored: int = 0
    rejected: int = 0


class Progress:
    """Throttled progress lines on stderr for long work: done of the total, the rate and the
    time left (a total marked `estimated` is printed with a ~)."""

    def __init__(
        self,
        label: str,
        every_s: float = 5.0,
        enabled: bool = True,
        total: int | None = None,
        unit: str = "rows",
        estimated: bool = False,
    ):
        self.label, self.every_s, self.enabled = label, every_s, enabled
        self.total, self.unit, self.estimated = total, unit, estimated
        self.start = self.last = time.perf_counter()

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if self.enabled and (force or now - self.last >= self.every_s):
            print(self.line(done, now - self.start), file=sys.stderr, flush=True)
            self.last = now

    def line(self, done: int, elapsed: float) -> str:
        rate = done / max(elapsed, 1e-9)
        speed = f"{rate:,.1f}" if rate < 10 else f"{rate:,.0f}"
        text = f"{self.label}: {done:,}"
        if self.total:
            total = max(self.total, done)  # an estimate may fall short of the rows read
            left = (total - done) / rate if rate > 0 else float("inf")
            mark = "~" if self.estimated and done < total else ""
            text += f" / {mark}{total:,} {self.unit} ({100 * done / total:.0f}%"
            text += f", {speed} {self.unit}/s, ETA {_duration(left)})"
        else:
            text += f" {self.unit} ({speed} {self.unit}/s, {_duration(elapsed)} so far)"
        return text


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return (
        f"{minutes} min {seconds:02d} s"
        if minutes < 60
        else f"{minutes // 60} h {minutes % 60:02d} min"
    )


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    rejects_path: str | Path,
    schema: InputSchema,
    predict: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame],
    output_columns: list[str],
    chunk_rows: int = 100_000,
    progress: bool = True,
) -> ScoreCounts:
    """Score `input_path` chunk by chunk with `predict(typed_rows, raw_rows) -> outputs`.

    Rows failing validation, malformed lines, and rows duplicating an earlier id go to the
    rejects with the reason. Both files are written to temporaries and renamed together at the
    end (`atomic_outputs`), so a failure or SIGTERM leaves nothing half-written behind.
    """
    source = str(input_path)
    extra = schema.check_header(read_table_header(input_path), source)
    if extra:
        print(
            f"note: ignoring {len(extra)} column(s) the model does not use: "
            f"{', '.join(map(str, extra[:10]))}" + (" ..." if len(extra) > 10 else ""),
            file=sys.stderr,
        )
    counts = ScoreCounts()
    seen_ids: dict[str, int] = {}
    total = count_table_rows(input_path) if progress else None
    meter = Progress(
        f"scoring {Path(source).name}",
        enabled=progress,
        total=total,
        estimated=not str(source).lower().endswith((".parquet", ".pq")),
    )
    with atomic_outputs(output_path, rejects_path) as (out, rej):
        out_header = rej_header = True
        for chunk in iter_table_chunks(input_path, chunk_rows):
            chunk.index = pd.RangeIndex(counts.rows + 1, counts.rows + 1 + len(chunk), name="row")
            result, reasons = _score_chunk(chunk, schema, predict, seen_ids)
            if result is not None:
                result.to_csv(out, index=False, header=out_header)
                out_header = False
                counts.scored += len(result)
            bad = reasons != ""
            if bad.any():
                rejected = chunk[bad].astype(str)
                rejected.insert(0, "reason", reasons[bad])
                rejected.to_csv(rej, index=True, header=rej_header)
                rej_header = False
                counts.rejected += int(bad.sum())
            counts.rows += len(chunk)
            meter.update(counts.rows)
            stop_point()
        if out_header:  # header-only or fully rejected input: still write a readable header
            pd.DataFrame(columns=output_columns).to_csv(out, index=False)
        if rej_header:
            pd.DataFrame(columns=["row", "reason", *schema.names]).to_csv(rej, index=False)
    meter.update(counts.rows, force=counts.rows > 0)
    return counts


def _score_chunk(chunk: pd.DataFrame, schema: InputSchema, predict, seen_ids: dict):
    """(outputs of the chunk's good rows, or None when it has none; a reason per row, '' for a
    row scored): a failed check, a malformed line, a repeated id or a non-finite output."""
    typed, reasons = _checked(chunk, schema)
    if schema.id_column:
        reasons = _mark_duplicates(typed[schema.id_column], reasons, seen_ids)
    return _predict_good(typed, chunk, reasons, predict)


def _checked(chunk: pd.DataFrame, schema: InputSchema) -> tuple[pd.DataFrame, pd.Series]:
    """The chunk's typed values and a reason per row: its checks, or its line's malformation
    (a blank or ragged line: its cells are not its own)."""
    typed, reasons = schema.validate(chunk)
    if ROW_PROBLEMS not in chunk.attrs:  # no malformed line: nothing to put first
        return typed, reasons
    malformed = row_problems(chunk)
    return typed, reasons.where(malformed == "", malformed)


def _predict_good(typed: pd.DataFrame, raw: pd.DataFrame, reasons: pd.Series, predict):
    """`predict` on the rows without a reason; a non-finite output becomes its row's reason."""
    good = reasons == ""
    if not good.any():
        return None, reasons
    # All good: the frames themselves, not copies of them (a copy costs ms on a few rows).
    result = predict(typed, raw) if good.all() else predict(typed[good], raw[good])
    if len(result) != int(good.sum()):
        raise RuntimeError("predict returned a different number of rows than it was given")
    finite, why = finite_outputs(result)
    if not finite.all():  # a model output that is not a number never ships
        reasons = reasons.copy()
        reasons.loc[typed.index[good.to_numpy()][~finite]] = why[~finite]
        result = result[finite]
    return result, reasons


def rows_frame(rows: list[dict], schema: InputSchema, source: str = "the rows") -> pd.DataFrame:
    """In-memory rows (JSON objects: column -> value) as `iter_table_chunks` gives a CSV's:
    every value as its text ('' for null), so `score_rows` checks them as `score` checks a
    file. A value that is a list or an object is no cell: its row is rejected with the reason.
    A column the schema needs and no row has is one DataError, as a file's header would be."""
    columns = list(dict.fromkeys(name for row in rows for name in row))
    schema.check_header(columns, source)
    cells, why = [], np.full(len(rows), "", dtype=object)
    for n, row in enumerate(rows):
        values = []
        for name in columns:
            value = row.get(name)
            if isinstance(value, list | dict):
                why[n] = why[n] or f"{name}: a JSON {type(value).__name__}, not a value"
                value = None
            values.append("" if value is None else str(value))
        cells.append(values)
    frame = pd.DataFrame(cells, columns=columns, dtype=str)
    bad = np.flatnonzero(why != "")
    if len(bad):
        frame.attrs[ROW_PROBLEMS] = (bad, bad + 1, why[bad])
    return frame


def rows_groups_frame(
    requests: list[list[dict]], schema: InputSchema, source: str = "the rows"
) -> tuple[pd.DataFrame, np.ndarray, dict[int, DataError]]:
    """Several requests' rows as one frame: `rows_frame` of each request, joined end to end
    (`join_groups`), built in one pass. The frame has the schema's columns (a request's other
    columns are only looked at for nested values). A request missing a column the schema
    needs is its DataError (by its position in `requests`) and has no rows in the frame.
    Returns (the frame, rows numbered 1..N; the group bounds; the errors)."""
    errors, kept = {}, []
    for n, rows in enumerate(requests):
        columns = list(dict.fromkeys(name for row in rows for name in row))
        try:
            schema.check_header(columns, source)
        except DataError as exc:
            errors[n] = exc
            rows = []
        kept.append((rows, columns))
    bounds = np.cumsum([0, *(len(rows) for rows, _ in kept)])
    flat = [row for rows, _ in kept for row in rows]
    where, lines, why = [], [], []  # joined positions, lines in their request, reasons
    for k, (rows, columns) in enumerate(kept):
        for n, row in enumerate(rows):
            if any(isinstance(value, list | dict) for value in row.values()):
                # The first nested value in the request's column order, as `rows_frame` says.
                name = next(c for c in columns if isinstance(row.get(c), list | dict))
                where.append(bounds[k] + n)
                lines.append(n + 1)
                why.append(f"{name}: a JSON {type(row[name]).__name__}, not a value")
    cells = {
        name: [
            "" if value is None or isinstance(value, list | dict) else str(value)
            for value in (row.get(name) for row in flat)
        ]
        for name in schema.names
    }
    frame = pd.DataFrame(cells, columns=schema.names, dtype=str)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    if where:
        frame.attrs[ROW_PROBLEMS] = tuple(
            np.asarray(values, dtype=kind)
            for values, kind in ((where, np.int64), (lines, np.int64), (why, object))
        )
    return frame, bounds, errors


def score_rows(frame: pd.DataFrame, schema: InputSchema, predict):
    """`score_file`'s checks and outputs for rows held in memory (`rows_frame`), numbered
    from 1 like a file's: (the outputs of the good rows, or None; a reason per row, '' for
    a row scored), with the same reasons a file's rejects give, a repeated id included."""
    frame = frame.copy()
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return _score_chunk(frame, schema, predict, {})


def join_groups(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, np.ndarray]:
    """Frames (`rows_frame`s, or tables as `iter_table_chunks` reads them) joined end to end,
    rows numbered 1..N, their malformed-line notes carried over; and the group bounds."""
    bounds = group_bounds(frames)
    joined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
    problems = [f.attrs.get(ROW_PROBLEMS) for f in frames]
    joined.attrs.pop(ROW_PROBLEMS, None)
    found = [(p[0] + bounds[k], p[1], p[2]) for k, p in enumerate(problems) if p is not None]
    if found:
        joined.attrs[ROW_PROBLEMS] = tuple(
            np.concatenate(parts) for parts in zip(*found, strict=True)
        )
    joined.index = pd.RangeIndex(1, len(joined) + 1, name="row")
    return joined, bounds


def group_bounds(frames: list[pd.DataFrame]) -> np.ndarray:
    """Where each frame's rows begin in their concatenation, and the total, as positions."""
    return np.cumsum([0, *map(len, frames)])


def score_joined_groups(joined: pd.DataFrame, bounds: np.ndarray, schema: InputSchema, predict):
    """`_score_chunk` over requests joined end to end (`join_groups`, `rows_groups_frame`),
    ids repeat-checked within each request: (outputs or None, reasons), both numbered 1..N
    across the requests (`shared.server.group_answers` gives each request its own)."""
    typed, reasons = _checked(joined, schema)
    if schema.id_column:
        reasons = _mark_group_duplicates(typed[schema.id_column], reasons, bounds)
    return _predict_good(typed, joined, reasons, predict)


def group_of_rows(bounds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The group (request) of each row number 1..N of groups joined with `bounds`."""
    return np.searchsorted(bounds, rows, side="left") - 1


def _mark_group_duplicates(ids: pd.Series, reasons: pd.Series, bounds: np.ndarray) -> pd.Series:
    """`_mark_duplicates` of each group on its own: a repeat within a request is rejected, the
    first row named by its number in that request; the same id in two requests is not."""
    if len(bounds) == 2:  # one group: its rows are numbered as the joined rows are
        return _mark_duplicates(ids, reasons, {})
    good = np.flatnonzero((reasons == "").to_numpy())
    values = ids.to_numpy()[good]
    groups = group_of_rows(bounds, good + 1)
    seen: dict = {}
    duplicates = []
    for position, group, value in zip(good.tolist(), groups.tolist(), values, strict=True):
        first = seen.setdefault((group, value), position)
        if first != position:
            duplicates.append((position, value, first - bounds[group] + 1))
    if not duplicates:
        return reasons
    marked = reasons.to_numpy().copy()
    for position, value, first in duplicates:
        marked[position] = f"duplicate id '{value}' (first seen at row {first})"
    return pd.Series(marked, index=reasons.index, dtype=object)


def _mark_duplicates(ids: pd.Series, reasons: pd.Series, seen: dict[str, int]) -> pd.Series:
    """Reject the second and later rows of the file that carry an id already seen."""
    good = (reasons == "").to_numpy()
    duplicates = []
    for row, value in zip(ids.index.to_numpy()[good], ids.to_numpy()[good], strict=True):
        first = seen.setdefault(value, row)
        if first != row:
            duplicates.append((row, value, first))
    if duplicates:
        reasons = reasons.copy()
        for row, value, first in duplicates:
            reasons.at[row] = f"duplicate id '{value}' (first seen at row {first})"
    return reasons


def finite_outputs(result: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Which output rows have only finite numbers, and for the others the reason.

    A diverged or broken model can still produce rows; a NaN probability or rating must be a
    reject with its reason, never a score someone acts on.
    """
    finite = np.ones(len(result), bool)
    why = np.full(len(result), "", dtype=object)
    for name in result.columns:
        column = result[name]
        if not pd.api.types.is_float_dtype(column):
            continue
        values = column.to_numpy(np.float64)
        bad = ~np.isfinite(values) & finite
        why[bad] = [f"model output not finite ({name}={v})" for v in values[bad]]
        finite &= np.isfinite(values)
    return finite, why


def non_finite_reason(row: list, columns: list[str]) -> str:
    """'' when every number in an output row is finite, else the reject reason."""
    for name, value in zip(columns, row, strict=True):
        if isinstance(value, float | np.floating) and not np.isfinite(value):
            return f"model output not finite ({name}={value})"
    return ""


def print_counts(
    counts: ScoreCounts, output_path, rejects_path, unit: str = "rows", note: str = ""
) -> dict:
    """Say what a `score` step did in one line (`unit` read, scored, rejected, and `note`), and
    return it as the step's result, counting `unit`."""
    print(
        printable(
            f"{counts.rows:,} {unit} read: {counts.scored:,} scored -> {output_path}, "
            f"{counts.rejected:,} rejected -> {rejects_path}{note}"
        ),
        flush=True,
    )
    return {
        unit: counts.rows,
        "scored": counts.scored,
        "rejected": counts.rejected,
        "output": str(output_path),
        "rejects": str(rejects_path),
    }


def default_output_paths(
    input_path: str | Path, output: str | None, rejects: str | None
) -> tuple[Path, Path]:
    """out.csv beside the input unless named; rejects beside the output. Both are checked
    before any work (`check_output_paths`), so a bad target is one line, not a lost run."""
    input_path = Path(input_path)
    out = Path(output) if output else input_path.with_name(f"{input_path.stem}.scored.csv")
    rej = Path(rejects) if rejects else out.with_name(f"{out.stem}.rejects.csv")
    for path, name in ((out, "output"), (rej, "rejects")):
        if os.path.abspath(path) == os.path.abspath(input_path):
            raise DataError(f"{name} {path} would overwrite the input")
    check_output_paths(out, rej)
    return out, rej


def check_output_paths(*paths: str | os.PathLike) -> None:
    """One DataError when any of `paths` cannot be written: a folder is there, two of them are
    the same file, or its folder is not a folder or cannot be written in."""
    seen = set()
    for path in map(Path, paths):
        if os.path.abspath(path) in seen:
            raise DataError(f"{path}: named both as the output and as the rejects")
        seen.add(os.path.abspath(path))
        if path.is_dir():
            raise DataError(f"{path}: is a folder; name a file to write")
        folder = path.absolute().parent
        while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
            folder = folder.parent  # created when written: its nearest existing folder decides
        if not folder.is_dir():
            raise DataError(f"{path}: cannot be written ({folder} is not a folder)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DataError(f"{path}: cannot be written (no write permission in {folder})")


def predict_in_batches(model, arrays: dict, batch_size: int):
    """model.predict over a dict of column arrays; strings travel as tf.string through tf.data."""
    import tensorflow as tf

    dataset = (
        tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    )
    return model.predict(dataset, verbose=0)


def expand_inputs(inputs: list[str], kinds: str) -> list[str]:
    """Every file named, every non-hidden file under every folder named, and every path listed
    in an `@list` file (one path per line, relative to the list's folder), in order.

    Every entry but a folder is returned whatever its type (a broken link, a link to a folder,
    a FIFO): `score_files` rejects what cannot be read, with the reason, so nothing under a
    folder or in a list is skipped silently. `kinds` names what the app scores.
    """
    if not inputs:
        raise DataError(f"score needs --input: {kinds}, a folder, or an @list of paths")
    files = []
    for item in inputs:
        if item.startswith("@"):
            files += _listed_paths(Path(item[1:]))
            continue
        item = Path(item)
        if item.is_dir():
            files += [
                str(p)
                for p in sorted(item.rglob("*"))
                if (p.is_symlink() or not p.is_dir())  # rglob walks real folders, not links
                and not any(s.startswith(".") for s in p.relative_to(item).parts)
            ]
        elif item.exists():
            files.append(str(item))
        else:
            raise DataError(f"{item}: no such file or folder")
    if not files:
        raise DataError(f"no files to score under {', '.join(inputs)}")
    return files


def _listed_paths(listing: Path) -> list[str]:
    if not listing.is_file():
        raise DataError(f"@{listing}: no such list file")
    lines = listing.read_text(encoding="utf-8", errors="surrogateescape").split("\n")
    paths = [line.rstrip("\r") for line in lines if line.strip()]
    return [str(p if Path(p).is_absolute() else listing.parent / p) for p in paths]


def file_problem(path: str | os.PathLike) -> str:
    """Why `path` cannot be read as a file ('' when it can): missing, a broken link, a folder,
    not a regular file (a FIFO would block the reader forever) or not readable."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read ({exc})"
    if stat.S_ISLNK(mode):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
        if stat.S_ISDIR(mode):
            return "link to a folder, not followed (name the folder itself to score it)"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, socket or device)"
    if not os.access(path, os.R_OK):
        return "no permission to read the file"
    return ""


def predict_readable(predict: Callable[[list[str]], list], paths: list[str]) -> list:
    """`predict(paths)` for the paths that are readable files; every other path gets the
    reason it cannot be read (`file_problem`). One entry per path, in order."""
    problems = [file_problem(path) for path in paths]
    readable = [path for path, problem in zip(paths, problems, strict=True) if not problem]
    results = iter(predict(readable) if readable else [])
    out = [problem or next(results, None) for problem in problems]
    if next(results, None) is not None or any(entry is None for entry in out):
        raise RuntimeError("predict returned a different number of entries than paths")
    return out


def score_files(files: list[str], scorer, output, rejects, chunk_files: int, label: str) -> dict:
    """Score files in chunks: `scorer.predict(paths)` returns one entry per path, in order:
    the output row (values for `scorer.columns`) or the reason (a str) the file is rejected.
    Paths that are not readable files (`file_problem`) are rejected before `predict`.

    The outputs and the rejects are written atomically as a pair (`atomic_outputs`), each line
    with the file's 1-based `row` (its position in `files`, so a file named twice is two rows);
    every file lands in exactly one of them, and the counts are printed at the end. A row with
    a non-finite number is a reject with the reason.
    """
    counts, meter = ScoreCounts(), Progress(label, total=len(files), unit="files")
    with atomic_outputs(output, rejects) as (out, rej):
        scored, rejected = csv.writer(out), csv.writer(rej)
        scored.writerow(["row", *scorer.columns])
        rejected.writerow(["row", "path", "reason"])
        for begin in range(0, len(files), chunk_files):
            chunk = files[begin : begin + chunk_files]
            results = predict_readable(scorer.predict, chunk)
            for row, (path, result) in enumerate(zip(chunk, results, strict=True), begin + 1):
                reason = (
                    result if isinstance(result, str) else non_finite_reason(result, scorer.columns)
                )
                if reason:
                    rejected.writerow([row, path, reason])
                    counts.rejected += 1
                else:
                    scored.writerow([row, *result])
                    counts.scored += 1
            counts.rows += len(chunk)
            meter.update(counts.rows)
            stop_point()
    return print_counts(counts, output, rejects, "files")


def printable(text: str) -> str:
    """`text` with undecodable file-name bytes (surrogates) as backslash escapes, so it can be
    printed to any terminal and written to a UTF-8 file."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Terminated(SystemExit):
    """Raised by SIGTERM while outputs are being written, so that their temporaries go."""


_ACTIVE: list[list[int]] = []  # the signals seen by each atomic_outputs block now running


def _terminate(stopped: list[int], signum, _frame):
    """The first SIGTERM is noted and raised at the next `stop_point`, between chunks: raised
    wherever the signal lands, inside a TensorFlow call it can come out as an error of
    TensorFlow's own or a traceback printed from C. A second one stops at once."""
    stopped.append(signum)
    if len(stopped) > 1:
        signal.signal(signum, signal.SIG_IGN)  # a third must not cut the clean-up short
        raise Terminated(128 + signum)


def stop_point() -> None:
    """Raise Terminated if SIGTERM came since the scoring block began (scoring loops call this
    between chunks, so a stop costs at most one chunk)."""
    for stopped in _ACTIVE:
        if stopped:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up runs to its end
            raise Terminated(128 + stopped[0])


@contextlib.contextmanager
def _terminate_raises() -> Iterator[list[int]]:
    """SIGTERM (what timeout, CI, systemd and Kubernetes send) ends the block with Terminated
    (at a `stop_point`); its default would end the process without running any clean-up.
    Yields the signals seen, so the caller knows an error after one came from the stop."""
    stopped: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopped  # handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, functools.partial(_terminate, stopped))
    _ACTIVE.append(stopped)
    try:
        yield stopped
    finally:
        _ACTIVE.remove(stopped)
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block is done (they arrive when it ends)."""
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _temporary(path: Path) -> Path:
    """A new empty hidden file beside `path`, created with the umask's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list]:
    """Text handles (UTF-8, file names' undecodable bytes as backslash escapes) on temporaries
    beside `paths`, renamed over them together only when the whole block succeeded.

    A failure, an interrupt or SIGTERM anywhere in the block leaves none of `paths` written
    and no temporary behind (a signal during the renames waits for them, so the outputs are
    never a mismatched pair); a target that cannot be written is one DataError before any work.
    """
    paths = [Path(p) for p in paths]
    check_output_paths(*paths)
    temps: list[Path] = []
    written = False
    stopped: list[int] = []
    try:
        with _terminate_raises() as stopped:
            for path in paths:
                try:
                    temps.append(_temporary(path))
                except OSError as exc:
                    raise DataError(f"cannot write {path} ({exc.strerror})") from exc
            with contextlib.ExitStack() as files:  # closed (flushed) before any rename
                yield [
                    files.enter_context(
                        open(t, "w", encoding="utf-8", errors="backslashreplace", newline="")
                    )
                    for t in temps
                ]
            stop_point()  # a signal during the last chunk: nothing is renamed
            with _signals_held():
                _rename_together(temps, paths)
                written = True
            stop_point()  # one held during the renames: written, and still a stop
    except BaseException as exc:
        if not stopped:
            raise
        done = "" if written else ": nothing written"
        print(f"terminated by signal {stopped[0]}{done}", file=sys.stderr, flush=True)
        if isinstance(exc, Terminated):
            raise
        raise Terminated(128 + stopped[0]) from None  # whatever TensorFlow made of the signal
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _rename_together(temps: list[Path], paths: list[Path]) -> None:
    """Rename each temporary over its path; if one fails, take back those already renamed, so
    the outputs are never a mismatched pair."""
    done = []
    for tmp, path in zip(temps, paths, strict=True):
        try:
            os.replace(tmp, path)
        except OSError as exc:
            for renamed in done:
                renamed.unlink(missing_ok=True)
            raise DataError(f"cannot write {path} ({exc.strerror}); nothing written") from exc
        done.append(path)
