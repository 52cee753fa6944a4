"""Readers for MovieLens and generic interaction files, item metadata, splits and leak checks;
the configured data as `prepare` caches it, and the held-out sets the ranking metrics take.

Every reader returns the same frame: `user` and `item` as strings, `rating` as float (NaN for
implicit data) and `timestamp` as int64 seconds (0 when the file has none); a generic file read
with a split column also has `given` (train, val or test).
"""

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

from apps.recsys.config import DataConfig, ModelConfig
from shared.io import DataError, check_fields, read_json, read_table, write_json, write_table
from shared.splits import split_names

COLUMNS = ["user", "item", "rating", "timestamp"]
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]  # u.item's genre flags, in column order
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
    # A row with more or fewer fields than the header would be padded, cut or, on the first
    # row, read as a row index that shifts every column: one line instead.
    check_fields(path, sep, quoted=sep == ",")
    try:
        frame = pd.read_csv(
            path,
            sep=re.escape(sep) if len(sep) > 1 else sep,
            engine="python" if len(sep) > 1 else "c",
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
            encoding="utf-8-sig",  # a spreadsheet's byte-order mark is not part of a name
            encoding_errors="replace",
            index_col=False,
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
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
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


TAG_PREFIX = "tag:"  # a tag's name among the item features (a tag may be named as a genre)


def read_tags(path: str | Path, item: str, min_items: int) -> pd.Series:
    """Item id -> its pipe-separated tags (lower case, stripped, each once) from a tags table
    (MovieLens tags.csv: userId, movieId, tag, timestamp; or `item` and `tag` columns), keeping
    the tags that at least `min_items` items carry."""
    path = _existing(path)
    frame = read_generic_table(path)
    column = "movieId" if "movieId" in frame.columns else item
    if column not in frame.columns or "tag" not in frame.columns:
        raise DataError(f"{path}: a tags table needs columns {column} and tag")
    tags = pd.DataFrame(
        {
            "item": frame[column].astype(str).str.strip().str.replace(r"\.0$", "", regex=True),
            "tag": frame["tag"].fillna("").astype(str).str.strip().str.lower(),
        }
    )
    tags = tags[(tags["tag"] != "") & (tags["item"] != "")].drop_duplicates()
    # A pipe would split one tag into two features.
    tags["tag"] = tags["tag"].str.replace("|", "/", regex=False)
    spread = tags.groupby("tag")["item"].transform("size")
    kept = tags[spread >= min_items].sort_values(["item", "tag"])
    return kept.groupby("item")["tag"].agg("|".join)


def with_tags(items: pd.DataFrame, tags: pd.Series) -> pd.DataFrame:
    """`items` with a `tags` column (pipe-separated; "" for an item without); items that have
    tags but no metadata row are added, untitled, so that they can still start cold."""
    missing = tags.index.difference(items["item"])
    extra = pd.DataFrame({"item": missing, "title": "", "genres": ""})
    out = pd.concat([items, extra], ignore_index=True) if len(missing) else items.copy()
    out["tags"] = out["item"].map(tags).fillna("")
    return out


def item_feature_text(items: pd.DataFrame) -> pd.Series:
    """Per item its features as one pipe-separated string: the genres, then the tags (with
    TAG_PREFIX) when the metadata has them."""
    text = items["genres"].fillna("")
    if "tags" in items.columns:
        tags = items["tags"].fillna("").str.split("|")
        tagged = tags.map(lambda ts: "|".join(TAG_PREFIX + t for t in ts if t))
        text = (text + "|" + tagged).str.strip("|")
    return text


def genre_vocabulary(items: pd.DataFrame) -> list[str]:
    """Every item feature named in the metadata (genres, then tags), sorted."""
    names = {g for text in item_feature_text(items) for g in text.split("|") if g}
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


def find_movielens_tags(folder: str | Path) -> Path | None:
    """A MovieLens folder's tags file (ml-latest-small's tags.csv), None without one."""
    path = Path(folder) / "tags.csv"
    return path if path.is_file() else None


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


# ---------------------------------------------------------------------------------------------
# the configured data: read, split and cached by `prepare`


@dataclasses.dataclass
class Prepared:
    """The prepared interactions and item metadata, cached in `folder`."""

    frame: pd.DataFrame  # user, item, rating, timestamp, rating_split, retrieval_split
    items: pd.DataFrame  # item, title, genres (empty when there is no metadata)
    folder: Path  # the cache folder (runs/recsys/prepared/<digest>)
    info: dict  # what prepare.json says: sources, counts, split sizes, checks

    @classmethod
    def load(cls, folder: Path) -> "Prepared":
        return cls(
            pd.read_parquet(folder / "interactions.parquet"),
            pd.read_parquet(folder / "items.parquet"),
            folder,
            read_json(folder / "prepare.json"),
        )

    def save(self, rejects: pd.DataFrame) -> None:
        """Write the cache, prepare.json last (what marks it complete)."""
        write_table(self.folder / "interactions.parquet", self.frame)
        write_table(self.folder / "items.parquet", self.items)
        write_table(self.folder / "rejects.csv", rejects)
        write_json(self.folder / "prepare.json", self.info)


def read_ratings(data: DataConfig, path: Path) -> pd.DataFrame:
    """The interactions file at `path` in the configured layout."""
    if data.layout == "movielens":
        return read_movielens_ratings(path)
    return read_interactions(
        path,
        data.user,
        data.item,
        data.rating,
        data.timestamp,
        data.separator,
        data.split_column,
        data.dev_split,
    )


def read_configured(data: DataConfig, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The interactions, each (user, item) pair once, and the rows set aside with the reason.

    With a given test file the frame gains `given`: train for the base file's rows, test for
    the test file's. A test pair that is also in the base file would be scored on a rating the
    models trained on: it is set aside, the base row kept.
    """
    frame, rejects = deduplicate(read_ratings(data, path))
    if not data.test_path:
        return frame, rejects.assign(file=str(path))
    test, test_rejects = deduplicate(read_ratings(data, Path(data.test_path)))
    in_base = pd.MultiIndex.from_frame(test[["user", "item"]]).isin(
        pd.MultiIndex.from_frame(frame[["user", "item"]])
    )
    both = test[in_base].copy()
    both.insert(0, "reason", "pair also in the base file (data.path): the base row is kept")
    frame = pd.concat(
        [frame.assign(given="train"), test[~in_base].assign(given="test")], ignore_index=True
    )
    rejects = pd.concat(
        [
            rejects.assign(file=str(path)),
            test_rejects.assign(file=data.test_path),
            both.assign(file=data.test_path),
        ],
        ignore_index=True,
    )
    return frame, rejects


def read_configured_items(data: DataConfig, path: Path | None) -> pd.DataFrame:
    """The item metadata at `path` in the configured layout; an empty frame without one."""
    if path is None:
        return pd.DataFrame({"item": [], "title": [], "genres": []}, dtype=str)
    if data.layout == "movielens":
        return read_movielens_items(path)
    return read_items(path, data.items_id or data.item, data.title, data.genres)


def assign_splits(frame: pd.DataFrame, data: DataConfig, seed: int):
    """(rating split, retrieval split, rows whose retrieval hold-out is by time or None).

    Random: a seeded 80/10/10-style split of the ratings, and per user the last (or randomly
    chosen) interactions held out for retrieval. Given (a test file or a split column): its
    test rows are the test set of both; validation is the split's own, else drawn from its
    training rows (a random share of the ratings; per user a hold-out for retrieval).
    """
    order, k, least = data.holdout_order, data.leave_out, data.min_user_interactions
    if "given" not in frame:
        rating = random_split(len(frame), data.val_fraction, data.test_fraction, seed)
        retrieval = per_user_holdout(frame, k, least, order, seed)
        return rating, retrieval, np.ones(len(frame), bool) if order == "time" else None
    given = frame["given"].to_numpy(object)
    rating, retrieval = given.copy(), given.copy()
    if (given == "val").any():
        return rating, retrieval, None
    base = np.flatnonzero(given == "train")
    val = random_split(len(base), data.val_fraction, 0.0, seed) == "val"
    rating[base[val]] = "val"
    retrieval[base] = per_user_holdout(frame.iloc[base], k, least, order, seed, held=("val",))
    return rating, retrieval, (given == "train") if order == "time" else None


def check_splits(frame: pd.DataFrame, temporal, has_rating: bool, data: DataConfig) -> None:
    """Leak checks, and one line for a split left empty (nothing to fit or measure on)."""
    check_no_leak(frame, "rating_split", temporal=False)
    check_no_leak(frame, "retrieval_split", temporal=False)
    if temporal is not None:
        check_no_leak(frame[temporal], "retrieval_split", temporal=True)
    empty = [s for s in ("train", "test") if not (frame.retrieval_split == s).any()]
    if empty:
        raise DataError(
            f"{data.path}: the retrieval {' and '.join(empty)} split is empty "
            f"({len(frame):,} interactions, {frame['user'].nunique():,} users): a user is held "
            "out only with at least max(data.min_user_interactions, 2 * data.leave_out + 1) "
            "interactions"
        )
    parts = rating_parts(frame) if has_rating else {}
    empty = [s for s, rows in parts.items() if not len(rows)]
    if empty:
        raise DataError(
            f"{data.path}: no {' or '.join(empty)} rating has a user and an item from the "
            f"rating training split ({len(frame):,} interactions); no model could be measured "
            "on it (a given test file of users or items not in the base file; too small a "
            "data.val_fraction)"
        )


def rating_parts(frame: pd.DataFrame) -> dict:
    """The rating splits; validation and test keep only pairs whose user and item are in the
    training split (no model can know the others: they are counted, not scored)."""
    parts = {s: frame[frame.rating_split == s] for s in SPLITS}
    tr = parts["train"]
    for s in ("val", "test"):
        rows = parts[s]
        parts[s] = rows[rows["user"].isin(tr["user"]) & rows["item"].isin(tr["item"])]
    return parts


def id_arrays(rows: pd.DataFrame) -> dict:
    """The rating models' inputs: raw user and item ids as string arrays."""
    return {"user": rows["user"].to_numpy(str), "item": rows["item"].to_numpy(str)}


@dataclasses.dataclass
class HeldOut:
    """One retrieval split's held-out interactions as matrices over the catalogue."""

    users: list[str]  # users with at least one relevant held-out item, one row each
    relevant: np.ndarray  # [users, items] bool: the relevant held-out items
    exclude: np.ndarray  # [users, items] bool: the user's earlier items, never ranked
    counts: dict  # held-out rows, and why some are not measured


def held_out(
    frame: pd.DataFrame,
    split: str,
    catalogue: list[str],
    known_users: list[str],
    min_rating: float | None,
) -> HeldOut:
    """The `split` ('val' or 'test') rows of the retrieval split as a ranking task.

    Relevant: every held-out item, or (with `min_rating`) those rated at least that; a held-out
    item rated lower stays rankable and counts as a miss. Excluded from the ranking: the
    user's items in the splits before this one. Held-out rows whose user or item the models
    never saw in training are counted, not measured.
    """
    column = pd.Series(np.arange(len(catalogue)), index=catalogue)
    rows = frame[frame.retrieval_split == split]
    new_user = ~rows["user"].isin(known_users)
    new_item = ~new_user & ~rows["item"].isin(column.index)
    below = ~(new_user | new_item)
    below &= rows["rating"] < min_rating if min_rating is not None else False
    keep = rows[~(new_user | new_item | below)]
    users = sorted(keep["user"].unique())
    row = pd.Series(np.arange(len(users)), index=users)
    relevant = np.zeros((len(users), len(catalogue)), bool)
    relevant[keep["user"].map(row).to_numpy(), keep["item"].map(column).to_numpy()] = True
    earlier = frame[
        frame.retrieval_split.isin(("train",) if split == "val" else ("train", "val"))
        & frame["user"].isin(row.index)
        & frame["item"].isin(column.index)
    ]
    exclude = np.zeros(relevant.shape, bool)
    exclude[earlier["user"].map(row).to_numpy(), earlier["item"].map(column).to_numpy()] = True
    counts = {
        "held_out": int(len(rows)),
        "relevant": int(len(keep)),
        "user_not_in_training": int(new_user.sum()),
        "item_not_in_training_catalogue": int(new_item.sum()),
        "rated_below_relevant_min_rating": int(below.sum()),
    }
    return HeldOut(users, relevant, exclude, counts)


class TowerInputs:
    """The two-tower trainer's inputs from interaction rows: raw ids, each item's catalogue row,
    its sampling probability (for the logQ correction) and its multi-hot genres."""

    def __init__(
        self, items: pd.DataFrame, catalogue: list[str], train: pd.DataFrame, model: ModelConfig
    ):
        self.item_row = {item: n for n, item in enumerate(catalogue)}
        self.probability = train["item"].value_counts(normalize=True)
        if not model.item_tags:
            items = items.drop(columns="tags", errors="ignore")
        self.genres = genre_vocabulary(items) if model.item_features else []
        features = item_feature_text(items) if len(items) else None
        self.item_genres = features.set_axis(items["item"]) if features is not None else None
        self.sampling_correction = model.sampling_correction

    def genre_rows(self, ids: np.ndarray) -> np.ndarray:
        """Multi-hot genres of the items `ids` (none for an item without metadata)."""
        text = (
            pd.Series(ids).map(self.item_genres).fillna("")
            if self.item_genres is not None
            else pd.Series([""] * len(ids))
        )
        return genre_matrix(text, self.genres)

    def __call__(self, rows: pd.DataFrame) -> dict:
        out = id_arrays(rows)
        out["item_index"] = rows["item"].map(self.item_row).to_numpy(np.int32)
        if self.sampling_correction:
            out["item_probability"] = rows["item"].map(self.probability).to_numpy(np.float32)
        if self.genres:
            out["genres"] = self.genre_rows(out["item"])
        return out

    def catalogue(self) -> dict:
        """The item tower's inputs for every catalogue item, in catalogue order."""
        out = {"item": np.asarray(list(self.item_row), dtype=str)}
        if self.genres:
            out["genres"] = self.genre_rows(out["item"])
        return out
