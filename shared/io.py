"""File IO every app needs: atomic writes and chunked reading of CSV and Parquet tables."""

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


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
            stat = os.stat(os.path.join(folder, name))
            count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return [str(source.resolve()), count, size, newest]


def write_table(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Write a DataFrame as CSV or Parquet (by suffix), atomically."""
    with atomic_path(path) as tmp:
        if _is_parquet(path):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep=_separator(path))


def read_table(path: str | os.PathLike, dtype=None) -> pd.DataFrame:
    """Read a whole CSV/TSV/Parquet file; one clear DataError for a missing or unreadable file."""
    path = check_table_path(path)
    if _is_parquet(path):
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path, sep=_separator(path), dtype=dtype, encoding_errors="replace")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: no columns to read (empty file)") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({_first_line(exc)})") from exc


def iter_table_chunks(path: str | os.PathLike, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Stream a CSV/TSV/Parquet file in chunks of `chunk_rows` rows, so files larger than
    memory work.

    CSV values arrive as strings (empty string for an empty field) so that the caller validates
    types row by row instead of pandas guessing per chunk; undecodable bytes are replaced with
    U+FFFD so the caller can reject those rows by name rather than crash on them.
    Parquet columns keep their stored types.
    """
    path = check_table_path(path)
    if _is_parquet(path):
        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    try:
        reader = pd.read_csv(
            path,
            sep=_separator(path),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8",
            encoding_errors="replace",
            chunksize=chunk_rows,
        )
        with reader:
            yield from reader
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty (no header row)") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({_first_line(exc)})") from exc


def read_table_header(path: str | os.PathLike) -> list[str]:
    """Column names of a table without reading its rows."""
    path = check_table_path(path)
    if _is_parquet(path):
        return list(pq.ParquetFile(path).schema_arrow.names)
    # The csv module, not pandas: pandas renames a repeated name to `name.1`, hiding the clash.
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = next(csv.reader(handle, delimiter=_separator(path)), None)
    if not header:
        raise DataError(f"{path}: the file is empty (no header row)")
    return header


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
