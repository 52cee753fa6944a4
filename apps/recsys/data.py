"""Readers for MovieLens and generic interaction files, item metadata, splits and leak checks.

Every reader returns the same frame: `user` and `item` as strings, `rating` as float (NaN for
implicit data) and `timestamp` as int64 seconds (0 when the file has none); a generic file read
with a split column also has `given` (train, val or test).
"""

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from shared.io import DataError, read_table
from shared.splits import split_names

COLUMNS = ["user", "item", "rating", "timestamp"]
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# ratings


def read_movielens_ratings(path: str | Path) -> pd.DataFrame:
    """u.data / u1.base / u1.test (tab), ratings.dat (`::`) or ratings.csv (header) by file name."""
    path = _existing(path)
    name = path.name.lower()
    if name.endswith(".dat"):
        raw = _read_delimited(path, "::", 4, "latin-1")
    elif name.endswith(".csv"):
        frame = read_table(path, dtype=str)
        wanted = ["userId", "movieId", "rating", "timestamp"]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: not a MovieLens ratings.csv; missing column(s) {missing}")
        raw = frame[wanted]
    else:  # u.data, u1.base, u1.test, ua.base ...
        raw = _read_delimited(path, "\t", 4, "latin-1")
    raw.columns = COLUMNS
    return _typed(raw, str(path), has_rating=True, has_time=True)


def read_interactions(
    path: str | Path,
    user: str,
    item: str,
    rating: str | None,
    timestamp: str | None,
    separator: str | None = None,
    split_column: str | None = None,
    dev_split: str = "validation",
) -> pd.DataFrame:
    """A generic interactions file with a header naming the columns: CSV, TSV, Parquet or any
    delimited text (HetRec's tab-separated, CRLF `user_artists.dat`). Rating and timestamp are
    optional; with `split_column` the frame gains `given` (train, val or test) from its values.
    """
    frame = read_generic_table(path, separator)
    wanted = [c for c in (user, item, rating, timestamp, split_column) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; columns are "
            f"{', '.join(map(str, frame.columns[:12]))} (set data.user/item/rating/timestamp"
            f"{'/split_column' if split_column else ''})"
        )
    raw = pd.DataFrame(
        {
            "user": frame[user],
            "item": frame[item],
            "rating": frame[rating] if rating else np.nan,
            "timestamp": frame[timestamp] if timestamp else 0,
        }
    )
    out = _typed(raw, str(path), has_rating=bool(rating), has_time=bool(timestamp))
    if split_column:
        values = frame[split_column].fillna("").to_numpy()
        out["given"] = split_names(values, f"{path}: column {split_column!r}", dev_split)
    return out


def read_generic_table(path: str | Path, separator: str | None = None) -> pd.DataFrame:
    """A table with a header row: Parquet by suffix, else delimited text read as strings.

    The separator is `separator`, else `,` for .csv and tab for .tsv, else read off the header
    line. Only comma-separated files have quoted fields: in tab- or `::`-separated files a
    quote is text (HetRec's artist `"Weird Al" Yankovic`). CRLF line ends are read as LF.
    """
    path = _existing(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_table(path)
    sep = _separator(path, separator)
    try:
        frame = pd.read_csv(
            path,
            sep=re.escape(sep) if len(sep) > 1 else sep,
            engine="python" if len(sep) > 1 else "c",
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
            encoding="utf-8",
            encoding_errors="replace",
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: no header row (empty file)") from exc
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise DataError(f"{path}: malformed {sep!r}-separated file ({first})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


SNIFFED = ("\t", "::", ",", ";", "|")  # separators read off a header line, in this order


def _separator(path: Path, separator: str | None) -> str:
    if separator is not None:
        return "\t" if separator in ("\\t", "tab") else separator
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ","
    if suffix == ".tsv":
        return "\t"
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = handle.readline().rstrip("\r\n")
    for sep in SNIFFED:
        if sep in header:
            return sep
    raise DataError(
        f"{path}: cannot tell the field separator from the header line {header[:60]!r}; "
        "set data.separator"
    )


def _read_delimited(path: Path, sep: str, n_columns: int, encoding: str) -> pd.DataFrame:
    rows = []
    with open(path, encoding=encoding, newline="") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split(sep)
            if len(parts) < n_columns:
                raise DataError(
                    f"{path}: line {number} has {len(parts)} field(s) separated by {sep!r}, "
                    f"expected {n_columns}: {line[:60]!r}"
                )
            rows.append(parts[:n_columns] if n_columns == 4 else parts)
    if not rows:
        raise DataError(f"{path}: no rows")
    return pd.DataFrame(rows)


def _typed(raw: pd.DataFrame, source: str, has_rating: bool, has_time: bool) -> pd.DataFrame:
    """Typed columns; rows with a missing id or a bad rating or time raise one DataError."""
    out = pd.DataFrame(index=raw.index)
    for column in ("user", "item"):
        text = raw[column].astype(object).where(raw[column].notna(), "").astype(str).str.strip()
        text = text.str.replace(r"\.0$", "", regex=True)  # ids read as floats from Parquet
        _fail_rows(text == "", source, f"missing {column} id", raw)
        out[column] = text
    if has_rating:
        rating = pd.to_numeric(raw["rating"], errors="coerce")
        _fail_rows(rating.isna() | ~np.isfinite(rating), source, "rating is not a number", raw)
        out["rating"] = rating.astype(np.float32)
    else:
        out["rating"] = np.float32(np.nan)
    if has_time:
        out["timestamp"] = _seconds(raw["timestamp"], source, raw)
    else:
        out["timestamp"] = np.int64(0)
    return out.reset_index(drop=True)


def _seconds(values: pd.Series, source: str, raw: pd.DataFrame) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.astype(np.int64)
    stamps = pd.to_datetime(values, errors="coerce", utc=True)
    _fail_rows(stamps.isna(), source, "timestamp is neither seconds nor a date", raw)
    # Seconds since the epoch whatever resolution pandas picked for the parsed dates.
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype(np.int64)


def _fail_rows(mask: pd.Series, source: str, reason: str, raw: pd.DataFrame) -> None:
    if mask.any():
        first = int(np.flatnonzero(mask.to_numpy())[0])
        raise DataError(
            f"{source}: {int(mask.sum())} row(s) with {reason} (first: row {first + 1}, "
            f"{raw.iloc[first].tolist()})"
        )


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep each (user, item) pair's latest row; earlier ones are returned as rejects."""
    order = frame.sort_values("timestamp", kind="stable")
    dup = order.duplicated(["user", "item"], keep="last")
    rejects = order[dup].copy()
    rejects.insert(0, "reason", "repeated (user, item) pair: the latest row is kept")
    return frame.loc[~frame.index.isin(rejects.index)].reset_index(drop=True), rejects


# ---------------------------------------------------------------------------------------------
# item metadata


def read_movielens_items(path: str | Path) -> pd.DataFrame:
    """u.item (pipe, latin-1, genre flags), movies.dat (`::`, latin-1) or movies.csv."""
    path = _existing(path)
    name = path.name.lower()
    if name.endswith(".csv"):
        frame = read_table(path, dtype=str)
        missing = [c for c in ("movieId", "title", "genres") if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: not a MovieLens movies.csv; missing column(s) {missing}")
        raw = frame[["movieId", "title", "genres"]]
    elif name.endswith(".dat"):
        raw = _read_delimited(path, "::", 3, "latin-1")
        if raw.shape[1] != 3:
            raise DataError(
                f"{path}: expected `id::title::genres` lines, got {raw.shape[1]} fields"
            )
    else:  # u.item
        raw = _read_delimited(path, "|", 5 + len(ML100K_GENRES), "latin-1")
        if raw.shape[1] != 5 + len(ML100K_GENRES):
            raise DataError(
                f"{path}: u.item lines need {5 + len(ML100K_GENRES)} `|` fields, got {raw.shape[1]}"
            )
        flags = raw.iloc[:, 5:].to_numpy() == "1"
        genres = [
            "|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags
        ]
        raw = pd.DataFrame({0: raw[0], 1: raw[1], 2: genres})
    raw.columns = ["item", "title", "genres"]
    return _typed_items(raw, str(path))


def read_items(path: str | Path, item: str, title: str, genres: str | None) -> pd.DataFrame:
    """Generic item metadata: an id, a title and optionally pipe-separated genres, in any table
    `read_generic_table` reads (HetRec's `artists.dat`: id, name, url, pictureURL)."""
    frame = read_generic_table(path)
    missing = [c for c in (item, title, genres) if c and c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing item column(s) {', '.join(missing)}")
    raw = pd.DataFrame(
        {"item": frame[item], "title": frame[title], "genres": frame[genres] if genres else ""}
    )
    return _typed_items(raw, str(path))


def _typed_items(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "item": raw["item"].astype(str).str.strip().str.replace(r"\.0$", "", regex=True),
            "title": raw["title"].fillna("").astype(str).str.strip(),
            "genres": raw["genres"].fillna("").astype(str).str.strip(),
        }
    )
    _fail_rows(out["item"] == "", source, "missing item id", raw)
    out["genres"] = out["genres"].replace("(no genres listed)", "")
    return out.drop_duplicates("item", keep="first").reset_index(drop=True)


def genre_vocabulary(items: pd.DataFrame) -> list[str]:
    names = {g for text in items["genres"] for g in text.split("|") if g}
    return sorted(names)


def genre_matrix(genres: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Multi-hot rows of the pipe-separated genres."""
    index = {g: i for i, g in enumerate(vocabulary)}
    out = np.zeros((len(genres), len(vocabulary)), np.float32)
    for row, text in enumerate(genres):
        for g in text.split("|"):
            if g in index:
                out[row, index[g]] = 1.0
    return out


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a ratings or items file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    return path


def find_movielens(folder: str | Path) -> tuple[Path, Path | None]:
    """The ratings and item files of a MovieLens folder (ml-100k, ml-1m, ml-latest-small)."""
    folder = Path(folder)
    for ratings, items in (
        ("u.data", "u.item"),
        ("ratings.dat", "movies.dat"),
        ("ratings.csv", "movies.csv"),
    ):
        if (folder / ratings).is_file():
            return folder / ratings, (folder / items if (folder / items).is_file() else None)
    raise DataError(f"{folder}: no u.data, ratings.dat or ratings.csv in this folder")


# ---------------------------------------------------------------------------------------------
# splits


def random_split(n: int, val: float, test: float, seed: int) -> np.ndarray:
    """Seeded random split of rows into train / val / test, as in published rating tables."""
    order = np.random.default_rng(seed).permutation(n)
    labels = np.full(n, "train", dtype=object)
    n_test, n_val = int(round(n * test)), int(round(n * val))
    labels[order[:n_test]] = "test"
    labels[order[n_test : n_test + n_val]] = "val"
    return labels


def per_user_holdout(
    frame: pd.DataFrame,
    k: int,
    min_interactions: int,
    order: str,
    seed: int,
    held: tuple[str, ...] = ("test", "val"),
) -> np.ndarray:
    """Per user: the last k interactions to held[0], the k before them to held[1] (and so on),
    the rest to train. `order` 'time': last in time, ties in file order (leave-last-out);
    'random': a seeded random order per user (the per-user random holdout for data without
    timestamps).

    Users with fewer than max(min_interactions, len(held) * k + 1) interactions stay in
    training only.
    """
    key = (
        frame["timestamp"].to_numpy()
        if order == "time"
        else np.random.default_rng(seed).permutation(len(frame))
    )
    ordered = pd.DataFrame(
        {"user": frame["user"].to_numpy(), "key": key, "_row": np.arange(len(frame))}
    ).sort_values(["user", "key", "_row"], kind="stable")
    from_end = ordered.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
    size = ordered.groupby("user", sort=False)["key"].transform("size").to_numpy()
    eligible = size >= max(min_interactions, len(held) * k + 1)
    labels = np.full(len(frame), "train", dtype=object)
    for n, name in enumerate(held):
        labels[eligible & (from_end >= n * k) & (from_end < (n + 1) * k)] = name
    out = np.empty(len(frame), dtype=object)
    out[ordered["_row"].to_numpy()] = labels
    return out


def check_no_leak(frame: pd.DataFrame, column: str, temporal: bool) -> None:
    """Raise DataError if a (user, item) pair is in two splits, or (temporal) a user's held-out
    interaction is older than one of their training interactions."""
    pairs = frame.groupby(["user", "item"])[column].nunique()
    if (pairs > 1).any():
        user, item = pairs[pairs > 1].index[0]
        raise DataError(f"split leak ({column}): pair user {user}, item {item} is in two splits")
    if temporal:
        train = frame[frame[column] == "train"].groupby("user")["timestamp"].max()
        held = frame[frame[column] != "train"].groupby("user")["timestamp"].min()
        both = held.index.intersection(train.index)
        late = train[both] > held[both]
        if late.any():
            raise DataError(
                f"split leak ({column}): user {late.index[0]} has training interactions after "
                "held-out ones"
            )
