"""Readers for labelled text: CSV, TSV (GLUE-style or headerless label-last, as in the UCI
sentiment files), JSONL and aclImdb-style folders; labels as strings or integers, one per text or
several through a delimiter; seeded stratified splits when the data has none of its own.

Every text is read as UTF-8 with undecodable bytes replaced (and counted), never a crash. Rows
without text or label are kept aside with the reason, never silently dropped.
"""

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from shared.io import DataError

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test"}  # fmt: skip
TEXT_FALLBACKS = ("text", "sentence", "review", "content", "document")  # GLUE, IMDb-style CSVs
LABEL_FALLBACKS = ("label", "labels", "sentiment", "class", "category")
REPLACED = b"\xef\xbf\xbd"  # U+FFFD encoded: a replacement character that was in the file


@dataclasses.dataclass
class Records:
    """What a reader returns: texts, their raw labels and their own split names (or None)."""

    texts: list[str]
    labels: list[str]
    splits: list[str] | None
    rejects: list[tuple[str, str]]  # (where, reason)
    replaced_bytes: int = 0


@dataclasses.dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # int class ids, or (n, classes) multi-hot for multi-label data

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class TextData:
    class_names: list[str]
    splits: dict[str, Split]
    multi_label: bool
    format: str
    own_splits: list[str]
    rejects: list[tuple[str, str]]
    replaced_bytes: int
    folder: Path | None = None


def read_text_file(path: Path) -> tuple[str, int]:
    """The file as UTF-8 text, and how many undecodable byte sequences became U+FFFD."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    text = raw.decode("utf-8", errors="replace")
    return text, text.count("\ufffd") - raw.count(REPLACED)


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "lines"}
    if suffix not in formats:
        raise DataError(
            f"{path}: cannot tell the format from {suffix!r}; set data.format to csv, tsv, "
            "jsonl, lines or folder"
        )
    return formats[suffix]


def _pick(columns: list[str], wanted: str, fallbacks: tuple[str, ...], what: str, source) -> str:
    if wanted in columns:
        return wanted
    for name in fallbacks:
        if name in columns:
            return name
    raise DataError(
        f"{source}: no {what} column {wanted!r} (columns: {', '.join(map(str, columns[:12]))}); "
        f"set data.{what}_column"
    )


def _table(path: Path, sep: str, text_col: str, label_col: str, split_col: str) -> Records:
    text, replaced = read_text_file(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    first = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=sep), [])
    known = set(TEXT_FALLBACKS) | {text_col}
    if sep == "\t" and not known & set(first):
        return _label_last(path, text, replaced)  # a headerless TSV
    # GLUE TSVs are unquoted: a quote character in a sentence is just a character.
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                            quoting=quoting)  # fmt: skip
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed table ({str(exc).strip().splitlines()[0]})") from exc
    columns = list(frame.columns)
    tcol = _pick(columns, text_col, TEXT_FALLBACKS, "text", path)
    lcol = _pick(columns, label_col, LABEL_FALLBACKS, "label", path)
    splits = frame[split_col].tolist() if split_col in columns else None
    where = [f"{path.name}:{i + 2}" for i in range(len(frame))]  # +1 header, +1 one-based
    return _checked(frame[tcol].tolist(), frame[lcol].tolist(), splits, where, replaced)


def _label_last(path: Path, text: str, replaced: int) -> Records:
    """Headerless lines `text<TAB>label` (the UCI sentiment-labelled-sentences layout)."""
    texts, labels, where, rejects = [], [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        body, sep, label = line.rstrip("\r").rpartition("\t")
        if not sep:
            rejects.append((f"{path.name}:{number}", "no tab before the label"))
            continue
        texts.append(body)
        labels.append(label)
        where.append(f"{path.name}:{number}")
    records = _checked(texts, labels, None, where, replaced)
    records.rejects = rejects + records.rejects
    return records


def _jsonl(path: Path, text_col: str, label_col: str, split_col: str) -> Records:
    text, replaced = read_text_file(path)
    texts, labels, splits, where, rejects = [], [], [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rejects.append((f"{path.name}:{number}", f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            rejects.append((f"{path.name}:{number}", "not a JSON object"))
            continue
        keys = list(row)
        try:
            tcol = _pick(keys, text_col, TEXT_FALLBACKS, "text", path)
            lcol = _pick(keys, label_col, LABEL_FALLBACKS, "label", path)
        except DataError as exc:
            rejects.append((f"{path.name}:{number}", str(exc).split(": ", 1)[1]))
            continue
        texts.append(row[tcol])
        labels.append(row[lcol])
        splits.append(row.get(split_col, ""))
        where.append(f"{path.name}:{number}")
    if not texts and not rejects:
        raise DataError(f"{path}: the file is empty")
    records = _checked(texts, labels, splits if any(splits) else None, where, replaced)
    records.rejects = rejects + records.rejects
    return records


def _folder(path: Path) -> Records:
    """aclImdb layout: `<split>/<label>/*.txt`, or `<label>/*.txt` with no splits."""
    children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in children if p.name.lower() in SPLIT_NAMES]
    groups = [(p.name, p) for p in split_dirs] if split_dirs else [(None, path)]
    texts, labels, splits, replaced = [], [], [], 0
    for split, root in groups:
        for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if label_dir.name.startswith(".") or label_dir.name == "unsup":
                continue  # aclImdb's unlabelled reviews: nothing to learn a label from
            for file in sorted(label_dir.glob("*.txt")):
                body, bad = read_text_file(file)
                replaced += bad
                texts.append(body)
                labels.append(label_dir.name)
                splits.append(split)
    if not texts:
        raise DataError(f"{path}: no <label>/*.txt or <split>/<label>/*.txt files found")
    where = [f"file {i + 1}" for i in range(len(texts))]
    return _checked(texts, labels, splits if split_dirs else None, where, replaced)


def _checked(texts, labels, splits, where, replaced: int) -> Records:
    """Keep rows with text and label; the others go to the rejects with the reason."""
    out = Records([], [], [] if splits is not None else None, [], replaced)
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        text = "" if text is None else str(text)
        label = "" if label is None else str(label).strip()
        if not text.strip():
            out.rejects.append((where[i], "empty text"))
        elif not label:
            out.rejects.append((where[i], "missing label"))
        else:
            out.texts.append(text)
            out.labels.append(label)
            if splits is not None:
                out.splits.append(str(splits[i]).strip().lower())
    return out


def read_records(path: Path, fmt: str, text_col: str, label_col: str, split_col: str) -> Records:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    fmt = detect_format(path, fmt)
    if fmt == "folder":
        if not path.is_dir():
            raise DataError(f"{path}: format 'folder' needs a folder")
        return _folder(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; set data.format=folder or name a file")
    if fmt == "jsonl":
        return _jsonl(path, text_col, label_col, split_col)
    if fmt == "lines":
        text, replaced = read_text_file(path)
        if not text.strip():
            raise DataError(f"{path}: the file is empty")
        return _label_last(path, text, replaced)
    return _table(path, "," if fmt == "csv" else "\t", text_col, label_col, split_col)


def class_names_of(labels: list[str], delimiter: str) -> list[str]:
    names = {part.strip() for label in labels for part in _parts(label, delimiter)}
    names.discard("")
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)  # integer labels in numeric order: 2 before 10
    return sorted(names)


def _parts(label: str, delimiter: str) -> list[str]:
    return label.split(delimiter) if delimiter else [label]


def encode_labels(labels: list[str], class_names: list[str], delimiter: str) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(class_names)}
    if not delimiter:
        return np.array([lookup[label] for label in labels], dtype=np.int32)
    hot = np.zeros((len(labels), len(class_names)), dtype=np.float32)
    for row, label in enumerate(labels):
        for part in _parts(label, delimiter):
            if part.strip():
                hot[row, lookup[part.strip()]] = 1.0
    return hot


def split_indices(labels: np.ndarray, own: list[str] | None, val: float, test: float, seed: int):
    """Row indices per split: the data's own where given, the rest carved out stratified."""
    n = len(labels)
    index = np.arange(n)
    parts: dict[str, np.ndarray] = {}
    if own is not None:
        names = np.array([SPLIT_NAMES.get(s, "train") for s in own])
        parts = {s: index[names == s] for s in SPLITS if (names == s).any()}
    pool = parts.pop("train", index if own is None else np.array([], dtype=int))
    if "test" not in parts:
        pool, parts["test"] = _carve(pool, labels, test, seed)
    if "val" not in parts:
        share = val / max(1e-9, 1.0 - test) if own is None else val
        pool, parts["val"] = _carve(pool, labels, share, seed + 1)
    parts["train"] = pool
    if min(len(parts[s]) for s in SPLITS) == 0:
        raise DataError(
            f"too few texts to split ({n:,} usable): each of train/val/test needs at least one"
        )
    return {s: np.sort(parts[s]) for s in SPLITS}


def _carve(pool: np.ndarray, labels: np.ndarray, share: float, seed: int):
    if len(pool) < 3:
        return pool, np.array([], dtype=int)
    target = labels[pool] if labels.ndim == 1 else None
    if target is not None and np.unique(target, return_counts=True)[1].min() < 2:
        target = None  # a class with one text cannot be stratified
    try:
        keep, take = train_test_split(pool, test_size=share, random_state=seed, stratify=target)
    except ValueError:
        keep, take = train_test_split(pool, test_size=share, random_state=seed)
    return keep, take


def read(path, fmt, text_col, label_col, split_col, delimiter, val, test, seed) -> TextData:
    """Read, encode the labels and split: everything `prepare` needs."""
    path = Path(path)
    records = read_records(path, fmt, text_col, label_col, split_col)
    if not records.texts:
        first = records.rejects[0] if records.rejects else ("", "no rows")
        raise DataError(f"{path}: no usable texts ({first[0]}: {first[1]})")
    names = class_names_of(records.labels, delimiter)
    if len(names) < 2:
        raise DataError(f"{path}: need at least two classes, found {names}")
    labels = encode_labels(records.labels, names, delimiter)
    parts = split_indices(labels, records.splits, val, test, seed)
    splits = {s: Split([records.texts[i] for i in idx], labels[idx]) for s, idx in parts.items()}
    own = sorted({SPLIT_NAMES.get(s, "train") for s in records.splits}) if records.splits else []
    return TextData(names, splits, bool(delimiter), detect_format(path, fmt), own,
                    records.rejects, records.replaced_bytes)  # fmt: skip
