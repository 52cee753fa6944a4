"""File IO every app needs: atomic writes and chunked reading of CSV and Parquet tables."""

import codecs
import collections
import contextlib
import csv
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
# chunk.attrs key: (row positions, their first lines, why each is no row), as NumPy arrays
# (pandas deep-copies attrs on every operation: arrays copy at C speed, a dict does not).
ROW_PROBLEMS = "row_problems"
# pandas has no limit on a field's length; the csv module's default (128 KiB) would fail a long
# review in a text file to score.
csv.field_size_limit(2**31 - 1)


class DataError(ValueError):
    """Bad input data: reported to the user as one line, never as a traceback."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the old file in place. `suffix`
    serves writers that insist on an extension (Keras wants `.keras`, NumPy `.npz`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        # mkstemp makes the file 0600; an artifact gets the mode `open` would give it (0666 less
        # the umask), so a server running as another user can read the model.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path` for a folder (a SavedModel): build it aside, then swap it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; as for files, respect the umask
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    # The only portable way to read the umask is to set it; set it straight back.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: str | os.PathLike, data) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _params_path(path: Path) -> Path:
    return path.with_name(path.name + ".simulator.json")


def generated_is_current(path: str | os.PathLike, params: dict) -> bool:
    """True when `path` exists and was generated from exactly `params` (recorded beside it)."""
    path = Path(path)
    stamp = _params_path(path)
    return path.exists() and stamp.exists() and read_json(stamp) == params


def record_generated(path: str | os.PathLike, params: dict) -> None:
    """Record the parameters `path` was generated from, after it has been written."""
    write_json(_params_path(Path(path)), params)


def source_fingerprint(source: str | os.PathLike) -> list:
    """Path, file count, total size and newest change of a file or folder tree: what a cache of
    data read from it is keyed on, so that a changed source is read again."""
    source = Path(source)
    if source.is_file():
        stat = source.stat()
        return [str(source.resolve()), 1, stat.st_size, stat.st_mtime_ns]
    count = size = newest = 0
    for folder, _, files in os.walk(source):
        for name in files:
            stat = _stat(Path(folder, name))
            count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return [str(source.resolve()), count, size, newest]


def _stat(path: Path) -> os.stat_result:
    """A data file's stat; one line for a link to nothing or a file that cannot be read."""
    try:
        return path.stat()
    except FileNotFoundError as exc:
        if path.is_symlink():
            target = os.readlink(path)
            raise DataError(
                f"{path}: a broken symbolic link (its target {target} does not exist); "
                "remove it or restore the target"
            ) from exc
        raise DataError(f"{path}: vanished while the data folder was read") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc


def write_table(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Write a DataFrame as CSV or Parquet (by suffix), atomically."""
    with atomic_path(path) as tmp:
        if _is_parquet(path):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep=_separator(path))


def read_table(path: str | os.PathLike, dtype=None) -> pd.DataFrame:
    """Read a whole CSV/TSV/Parquet file; one clear DataError for a missing or unreadable file,
    or for a row with more or fewer fields than the header."""
    path = check_table_path(path)
    if _is_parquet(path):
        return _read_parquet(path)
    check_fields(path, _separator(path))
    try:
        return pd.read_csv(
            path,
            sep=_separator(path),
            dtype=dtype,
            encoding="utf-8-sig",
            encoding_errors="replace",
            index_col=False,
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: no columns to read (empty file)") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({_first_line(exc)})") from exc


def iter_table_chunks(path: str | os.PathLike, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Stream a CSV/TSV/Parquet file in chunks of up to `chunk_rows` rows, so files larger than
    memory work.

    CSV values arrive as strings (empty string for an empty field) so that the caller validates
    types row by row instead of pandas guessing per chunk; undecodable bytes are replaced with
    U+FFFD so the caller can reject those rows by name rather than crash on them. Every record
    after the header is a row, numbered as in the file: a blank line, or one with more or fewer
    fields than the header, comes as a row of empty cells that `row_problems` gives the reason
    for, so no row shifts. A header-only file is one empty chunk with the columns.
    Parquet columns keep their stored types.
    """
    path = check_table_path(path)
    if _is_parquet(path):
        yield from _parquet_chunks(path, chunk_rows)
        return
    done = 0
    header = None
    sep = _separator(path)
    for header, block in _text_blocks(path, sep, chunk_rows):
        chunk = _block_frame(header, block, sep)
        chunk.index = pd.RangeIndex(done, done + len(chunk))
        done += len(chunk)
        yield chunk
    if not done:
        yield pd.DataFrame(columns=header or read_table_header(path), dtype=str)


def row_problems(chunk: pd.DataFrame) -> pd.Series:
    """Per row of a chunk as `iter_table_chunks` yields it: why the record is no row of the
    table (a blank line; more or fewer fields than the header), '' for a row read as the header
    says. Such a row's cells are empty: reject it with this reason, not with what they say."""
    reasons = np.full(len(chunk), "", dtype=object)
    if ROW_PROBLEMS in chunk.attrs:
        positions, _, why = chunk.attrs[ROW_PROBLEMS]
        reasons[positions] = why
    return pd.Series(reasons, index=chunk.index, dtype=object)


def check_fields(path: str | os.PathLike, sep: str, quoted: bool = True) -> None:
    """One DataError naming the first record with more or fewer fields than the header, for a
    reader that takes the table whole: pandas would pad such a row, cut it, or read its leading
    fields as a row index and shift every column. Blank lines are fine (pandas skips them).

    `quoted`: whether `"` quotes a field (CSV) or is text (tab-separated files such as HetRec's).
    """
    path = Path(path)
    if len(sep) == 1:
        quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
        found = (
            (int(line), str(problem))
            for _, block in _text_blocks(path, sep, 65_536, quoting, checking=True)
            if isinstance(block, tuple) and block[1] is not None
            for line, problem in zip(block[1][1], block[1][2], strict=True)
            if problem != BLANK
        )
    else:  # a separator of several characters ("::") quotes nothing: fields are split off
        found = _split_problems(path, sep)
    first = next(found, None)
    if first is not None:
        count = 1 + sum(1 for _ in found)
        raise DataError(
            f"{path}: line {first[0]}: {first[1]}; {count:,} malformed row(s) with the wrong "
            "number of fields: fix or remove them"
        )


def read_table_header(path: str | os.PathLike) -> list[str]:
    """Column names of a table without reading its rows (an empty name as pandas calls it)."""
    path = check_table_path(path)
    if _is_parquet(path):
        return list(_parquet_file(path).schema_arrow.names)
    # The csv module, not pandas: pandas renames a repeated name to `name.1`, hiding the clash.
    with _open_text(path) as handle:
        lines = _Lines(handle)
        return _header_of(path, lines, csv.reader(lines, delimiter=_separator(path)))


def count_table_rows(path: str | os.PathLike) -> int | None:
    """The number of rows of a table, for a progress total: exact for Parquet (its metadata),
    the number of lines after the header for text (a quoted field holding a newline counts
    twice, so it is an estimate); None when the file cannot be read."""
    try:
        if _is_parquet(path):
            return _parquet_file(Path(path)).metadata.num_rows
        lines, last = 0, b"\n"
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(lines + (last != b"\n") - 1, 0)
    except Exception:  # a progress total is never worth failing the work it reports on
        return None


def check_table_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a CSV or Parquet file")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; "
            f"expected one of {', '.join(TABLE_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    return path


# --- Parquet -----------------------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return _parquet_file(path).read().to_pandas()
    except DataError:
        raise
    except Exception as exc:  # a sound footer can still front a truncated or corrupt column
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    batches = _parquet_file(path).iter_batches(batch_size=chunk_rows)
    while True:
        try:
            batch = next(batches, None)
            chunk = None if batch is None else batch.to_pandas()
        except Exception as exc:  # as in _read_parquet
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc
        if chunk is None:
            return
        yield chunk


# --- delimited text ----------------------------------------------------------------------------

BLANK = "blank line"  # the reason a blank line between rows is a reject


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator:
    """The file as text for the csv module: UTF-8 with its byte-order mark (spreadsheets write
    one) dropped, undecodable bytes as U+FFFD, line ends untouched."""
    try:
        with open(path, "rb") as raw:
            start = raw.read(4)
        if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise DataError(f"{path}: the file is UTF-16 or UTF-32 text; save it as UTF-8")
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            yield handle
    except OSError as exc:  # unreadable (permissions), or a read failing half-way (I/O error)
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc


class _Lines:
    """A text file's lines, counted: taken a block at a time, or one at a time by the csv
    module (which takes more than one for a quoted field that holds a line break)."""

    def __init__(self, handle):
        self.handle = handle
        self.number = 0  # lines handed out so far
        self.pending: list[str] = []  # lines put back, last first
        self.ran_out = False  # the csv module asked for a line past the end

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.pending:
            line = self.pending.pop()
        else:
            line = next(self.handle, None)
            if line is None:
                self.ran_out = True
                raise StopIteration
        self.number += 1
        return line

    def take(self, count: int) -> list[str]:
        block = list(itertools.islice(self.handle, count))
        self.number += len(block)
        return block

    def put_back(self, block: list[str]) -> None:
        self.pending = block[::-1]
        self.number -= len(block)


def _record(path: Path, lines: _Lines, reader) -> tuple[int, list[str]] | None:
    """(first line, fields) of the next record, None at the end of the file."""
    first = lines.number + 1
    lines.ran_out = False
    try:
        fields = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise DataError(f"{path}: line {first}: malformed CSV ({exc})") from exc
    if lines.ran_out:  # the file ended inside a quoted field
        raise DataError(
            f'{path}: line {first}: a quoted field opens with " and never closes, so the rest '
            "of the file would be one value; close or remove that quote"
        )
    return first, fields


def _header_of(path: Path, lines: _Lines, reader) -> list[str]:
    """The first record, past any blank lines (as pandas reads it); an empty name is called
    `Unnamed: <position>`, as pandas calls it."""
    while (record := _record(path, lines, reader)) is not None:
        if record[1]:
            return [name or f"Unnamed: {i}" for i, name in enumerate(record[1])]
    raise DataError(f"{path}: the file is empty (no header row)")


def _text_blocks(
    path: Path, sep: str, rows: int, quoting: int = csv.QUOTE_MINIMAL, checking: bool = False
) -> Iterator[tuple[list[str], str | tuple]]:
    """(header, block) per block of up to `rows` lines after the header. A block is its text
    where every line is plainly one row of the header's width (no quote, no blank line: the
    common case, which pandas' C parser reads fast), else (its records, `_packed` problems or
    None) as the csv module reads them. `checking`: only the fields are wanted (no plain text
    joined, repeated column names let through, as pandas reads them)."""
    with _open_text(path) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=sep, quoting=quoting)
        header = _header_of(path, lines, reader)
        repeated = sorted(name for name, n in collections.Counter(header).items() if n > 1)
        if repeated and not checking:
            raise DataError(f"{path}: duplicated column name(s): {', '.join(repeated)}")
        while block := lines.take(rows):
            if _plain(block, len(header), sep, quoting):
                yield header, "" if checking else "".join(block)
                continue
            lines.put_back(block)
            records, problems = [], []
            while lines.pending:
                first, fields = _record(path, lines, reader)
                problem = _row_problem(fields, len(header), first, lines.number)
                if problem:
                    problems.append((len(records), first, problem))
                    fields = [""] * len(header)
                records.append(fields)
            yield header, (records, _packed(problems))


def _packed(problems: list[tuple[int, int, str]]) -> tuple | None:
    """(positions, first lines, reasons) as arrays, or None when there is no problem."""
    if not problems:
        return None
    positions, lines, reasons = zip(*problems, strict=True)
    return np.array(positions, np.int64), np.array(lines, np.int64), np.array(reasons, str)


def _plain(block: list[str], width: int, sep: str, quoting: int) -> bool:
    if quoting != csv.QUOTE_NONE and any('"' in line for line in block):
        return False
    if set(map(str.count, block, itertools.repeat(sep))) != {width - 1}:
        return False
    return width > 1 or all(line.strip("\r\n") for line in block)  # blank in one column


def _row_problem(fields: list[str], width: int, first: int, last: int) -> str:
    if not fields or (width > 1 and len(fields) == 1 and not fields[0].strip()):
        return BLANK
    if len(fields) == width:
        return ""
    span = f" (one record over lines {first}-{last}: a quoted field holds line breaks)"
    return f"{len(fields)} fields, expected {width}" + (span if last > first else "")


def _block_frame(header: list[str], block: str | tuple, sep: str) -> pd.DataFrame:
    if isinstance(block, str):
        return pd.read_csv(
            io.StringIO(block),
            sep=sep,
            header=None,
            names=header,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            index_col=False,
            skip_blank_lines=False,
        )
    records, problems = block
    frame = pd.DataFrame(records, columns=header, dtype=str)
    if problems is not None:
        frame.attrs[ROW_PROBLEMS] = problems
    return frame


def _split_problems(path: Path, sep: str) -> Iterator[tuple[int, str]]:
    """(line, problem) of every non-blank line whose fields split on `sep` are not the
    header's."""
    with _open_text(path) as handle:
        width = None
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            count = line.count(sep) + 1
            if width is None:
                width = count
            elif count != width:
                yield number, f"{count} fields, expected {width}"


def _is_parquet(path) -> bool:
    return Path(path).suffix.lower() in (".parquet", ".pq")


def _separator(path) -> str:
    return "\t" if Path(path).suffix.lower() in (".tsv", ".txt") else ","


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_default(value):
    # numpy scalars and arrays appear in metrics; JSON has no type for them.
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
