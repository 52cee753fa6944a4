"""Readers for labelled text: CSV and TSV (with a header, GLUE-style, or without one through
`data.columns`), headerless `text<TAB>label` lines (the UCI sentiment files), JSONL, one text
per line with the label in the file name (rt-polarity.pos/.neg) and aclImdb-style folders;
labels as strings or integers, one per text or several through a delimiter; the data's own
split column or folders, else seeded stratified splits.

Several files (a list or a glob in `data.path`) are one dataset. Records end at `\\n` or
`\\r\\n` only: `str.splitlines` also ends them at U+0085, U+2028 and other characters that
occur inside real sentences. Text is decoded with `data.encoding`; undecodable bytes become
U+FFFD and are counted, never a crash. Rows without text or label, or with the wrong number
of fields, are kept aside with the reason (`file:line`), never silently dropped.

Scoring reads CSV/TSV, JSONL or one text per line (`iter_inputs`); a value that is not a text
to score gets its reason (`reject_reason`). `make_dataset` is the training input pipeline.
"""

import codecs
import csv
import dataclasses
import glob
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split

from apps.nlp.text.config import DataConfig, ScoreConfig
from shared.io import DataError, atomic_path, iter_table_chunks, row_problems
from shared.splits import SPLIT_FOLDERS, SPLITS, split_names

TEXT_FALLBACKS = ("text", "sentence", "review", "content", "document")  # GLUE, IMDb-style CSVs
LABEL_FALLBACKS = ("label", "labels", "sentiment", "class", "category")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "lines"}
TABLES = ("csv", "tsv", "jsonl")  # the formats that have columns (and so a split column)
GLOB = re.compile(r"[*?\[]")


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
    files: list[str] = dataclasses.field(default_factory=list)
    folder: Path | None = None


def read_text_file(path: Path, encoding: str = "utf-8") -> tuple[str, int]:
    """The file as text, and how many undecodable byte sequences became U+FFFD.

    UTF-8 is read as `utf-8-sig`: the byte-order mark spreadsheets write is not text.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    utf8 = codecs.lookup(encoding).name == "utf-8"
    text = raw.decode("utf-8-sig" if utf8 else encoding, errors="replace")
    try:
        marker = "\ufffd".encode(encoding)  # a replacement character already in the file
    except UnicodeEncodeError:
        marker = b""  # the encoding cannot hold one, so every U+FFFD is a replaced byte
    return text, text.count("\ufffd") - (raw.count(marker) if marker else 0)


def lines_of(text: str) -> list[str]:
    """The lines of `text`, ended by `\\n` or `\\r\\n` only; a final newline ends, not starts."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def resolve_paths(spec: str | list[str]) -> list[Path]:
    """The files of `data.path` in order: each item a path, or a glob whose matches are sorted."""
    files: list[Path] = []
    for item in [spec] if isinstance(spec, str) else spec:
        if GLOB.search(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item}: no file matches this pattern (data.path)")
            files += [Path(m) for m in matches]
        elif Path(item).exists():
            files.append(Path(item))
        else:
            raise DataError(f"{item}: no such file or folder (data.path)")
    seen: set[Path] = set()
    for path in files:
        if path.resolve() in seen:
            raise DataError(f"{path}: named twice in data.path; each file is read once")
        seen.add(path.resolve())
    return files


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "folder"
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: cannot tell the format from the name; set data.format to csv, tsv (with "
            "data.columns when the file has no header), jsonl, lines (text<TAB>label), "
            "file_label (one text per line, label from the file name) or folder"
        )
    return SUFFIXES[path.suffix.lower()]


def label_from_name(path: Path) -> str:
    """`file_label`: the extension (rt-polarity.pos -> pos), or for .txt or no extension the
    name without it (positive.txt -> positive, spam -> spam)."""
    if path.suffix and path.suffix.lower() != ".txt":
        return path.suffix[1:]
    return path.stem


def _pick(columns: list[str], wanted: str, fallbacks: tuple[str, ...], what: str, source) -> str:
    if wanted in columns:
        return wanted
    for name in fallbacks:
        if name in columns:
            return name
    hint = " (or data.columns for a file without a header)" if what != "split" else ""
    raise DataError(
        f"{source}: no {what} column {wanted!r} (columns: {', '.join(map(str, columns[:12]))}); "
        f"set data.{what}_column{hint}"
    )


def _numbered(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line that is not blank."""
    return [(n, line) for n, line in enumerate(lines_of(text), start=1) if line.strip()]


def _csv_rows(text: str, name: str) -> list[tuple[int, list[str]]]:
    """(line where the record starts, fields): quoted fields may hold commas and newlines."""
    # The csv module ends a record at a lone \r too; here only \n does, so a lone \r travels
    # through as a character the text does not hold and comes back after parsing.
    stand_in = next(c for c in map(chr, range(0xE000, 0xF900)) if c not in text)
    lines = (line + "\n" for line in lines_of(text.replace("\r\n", "\n").replace("\r", stand_in)))
    reader = csv.reader(lines, strict=True)
    rows, start = [], 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            raise DataError(f"{name}:{start}: malformed CSV ({exc})") from exc
        if fields:  # a blank line is no record
            rows.append((start, [f.replace(stand_in, "\r") for f in fields]))
        start = reader.line_num + 1


def _table(path: Path, name: str, text: str, replaced: int, cfg: DataConfig, sep: str) -> Records:
    if sep == ",":
        rows = _csv_rows(text, name)
    else:  # GLUE TSVs are unquoted: a quote character in a sentence is just a character
        rows = [(n, line.split("\t")) for n, line in _numbered(text)]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    if cfg.columns:
        header = list(cfg.columns)
    else:
        header = [h.strip() for h in rows.pop(0)[1]]
        known = {*TEXT_FALLBACKS, cfg.text_column}
        if sep == "\t" and not cfg.split_column and not known & set(header):
            return _label_last(path, name, _numbered(text), replaced)  # a headerless TSV
    tcol = header.index(_pick(header, cfg.text_column, TEXT_FALLBACKS, "text", path))
    lcol = header.index(_pick(header, cfg.label_column, LABEL_FALLBACKS, "label", path))
    scol = None
    if cfg.split_column:
        scol = header.index(_pick(header, cfg.split_column, (), "split", path))
    texts, labels, splits, where, rejects = [], [], [], [], []
    for number, fields in rows:
        if len(fields) != len(header):
            rejects.append((f"{name}:{number}", f"{len(fields)} fields, expected {len(header)}"))
            continue
        texts.append(fields[tcol])
        labels.append(fields[lcol])
        splits.append(fields[scol] if scol is not None else "")
        where.append(f"{name}:{number}")
    records = _checked(texts, labels, splits if scol is not None else None, where, replaced)
    records.rejects = rejects + records.rejects
    return records


def _label_last(path: Path, name: str, lines: list[tuple[int, str]], replaced: int) -> Records:
    """Headerless lines `text<TAB>label` (the UCI sentiment-labelled-sentences layout)."""
    texts, labels, where, rejects = [], [], [], []
    for number, line in lines:
        body, sep, label = line.rpartition("\t")
        if not sep:
            rejects.append((f"{name}:{number}", "no tab before the label"))
            continue
        texts.append(body)
        labels.append(label)
        where.append(f"{name}:{number}")
    if len(set(labels)) > len(set(texts)):
        # `ham<TAB>Go until jurong point...`: read label-last, every message would be a class.
        raise DataError(
            f"{path}: the last field has {len(set(labels)):,} distinct values and the first "
            f"{len(set(texts)):,}: the label looks like it comes first; name the columns, e.g. "
            "data.columns=[label, text]"
        )
    records = _checked(texts, labels, None, where, replaced)
    records.rejects = rejects + records.rejects
    return records


def _file_label(path: Path, name: str, text: str, replaced: int) -> Records:
    """One text per line, every line labelled with the file's name (rt-polarity.pos/.neg)."""
    lines = _numbered(text)
    label = label_from_name(path)
    where = [f"{name}:{n}" for n, _ in lines]
    return _checked([line for _, line in lines], [label] * len(lines), None, where, replaced)


def _jsonl(path: Path, name: str, text: str, replaced: int, cfg: DataConfig) -> Records:
    texts, labels, splits, where, rejects = [], [], [], [], []
    for number, line in _numbered(text):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rejects.append((f"{name}:{number}", f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            rejects.append((f"{name}:{number}", "not a JSON object"))
            continue
        keys = list(row)
        try:
            tcol = _pick(keys, cfg.text_column, TEXT_FALLBACKS, "text", path)
            lcol = _pick(keys, cfg.label_column, LABEL_FALLBACKS, "label", path)
        except DataError as exc:
            rejects.append((f"{name}:{number}", str(exc).split(": ", 1)[1]))
            continue
        texts.append(row[tcol])
        labels.append(row[lcol])
        splits.append(row.get(cfg.split_column, "") if cfg.split_column else "")
        where.append(f"{name}:{number}")
    if not texts and not rejects:
        raise DataError(f"{path}: the file is empty")
    records = _checked(texts, labels, splits if cfg.split_column else None, where, replaced)
    records.rejects = rejects + records.rejects
    return records


def _folder(path: Path, encoding: str) -> Records:
    """aclImdb layout: `<split>/<label>/*.txt`, or `<label>/*.txt` with no splits."""
    children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in children if p.name.lower() in SPLIT_FOLDERS]
    groups = [(p.name, p) for p in split_dirs] if split_dirs else [(None, path)]
    texts, labels, splits, where, replaced = [], [], [], [], 0
    for split, root in groups:
        for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if label_dir.name.startswith(".") or label_dir.name == "unsup":
                continue  # aclImdb's unlabelled reviews: nothing to learn a label from
            for file in sorted(label_dir.glob("*.txt")):
                body, bad = read_text_file(file, encoding)
                replaced += bad
                texts.append(body)
                labels.append(label_dir.name)
                splits.append(split)
                where.append(str(file.relative_to(path)))
    if not texts:
        raise DataError(f"{path}: no <label>/*.txt or <split>/<label>/*.txt files found")
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
                out.splits.append(str(splits[i]))
    return out


def read_records(path: Path, name: str, fmt: str, cfg: DataConfig) -> Records:
    """One file (or folder) of the dataset in format `fmt`; `name` is how rejects cite it."""
    if fmt == "folder":
        if not path.is_dir():
            raise DataError(f"{path}: format 'folder' needs a folder")
        return _folder(path, cfg.encoding)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; set data.format=folder or name a file")
    text, replaced = read_text_file(path, cfg.encoding)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    if fmt == "jsonl":
        return _jsonl(path, name, text, replaced, cfg)
    if fmt == "lines":
        return _label_last(path, name, _numbered(text), replaced)
    if fmt == "file_label":
        return _file_label(path, name, text, replaced)
    return _table(path, name, text, replaced, cfg, "," if fmt == "csv" else "\t")


def read_all(cfg: DataConfig) -> tuple[Records, str, list[Path]]:
    """Every file of `data.path` as one set of records, its format, and the files in order."""
    files = resolve_paths(cfg.path)
    formats = {path: detect_format(path, cfg.format) for path in files}
    if len(set(formats.values())) > 1:
        listed = ", ".join(f"{p.name}: {f}" for p, f in formats.items())
        raise DataError(f"data.path: files of different formats ({listed}); set data.format")
    fmt = formats[files[0]]
    if cfg.split_column and fmt not in TABLES:
        raise DataError(
            f"data.split_column needs a csv, tsv or jsonl file; format {fmt!r} has no columns"
        )
    # Rejects cite a file by its name, or by its path where two files share a name.
    names = [p.name for p in files]
    names = [p.name if names.count(p.name) == 1 else str(p) for p in files]
    parts = [read_records(p, n, fmt, cfg) for p, n in zip(files, names, strict=True)]
    with_splits = [part.splits is not None for part in parts]
    if any(with_splits) and not all(with_splits):
        raise DataError("data.path: some folders have split folders and some do not")
    records = Records(
        texts=[t for part in parts for t in part.texts],
        labels=[label for part in parts for label in part.labels],
        splits=[s for part in parts for s in part.splits] if all(with_splits) else None,
        rejects=[r for part in parts for r in part.rejects],
        replaced_bytes=sum(part.replaced_bytes for part in parts),
    )
    return records, fmt, files


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


def split_indices(labels: np.ndarray, own: np.ndarray | None, val: float, test: float, seed: int):
    """Row indices per split: the data's own (train/val/test names) where given, the rest
    carved out of train, stratified and seeded."""
    n = len(labels)
    index = np.arange(n)
    parts: dict[str, np.ndarray] = {}
    if own is not None:
        parts = {s: index[own == s] for s in SPLITS if (own == s).any()}
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


def read(cfg: DataConfig, seed: int) -> TextData:
    """Read every file, encode the labels and split: everything `prepare` needs."""
    records, fmt, files = read_all(cfg)
    source = ", ".join(map(str, files))
    if not records.texts:
        first = records.rejects[0] if records.rejects else ("", "no rows")
        raise DataError(f"{source}: no usable texts ({first[0]}: {first[1]})")
    names = class_names_of(records.labels, cfg.label_delimiter)
    if len(names) < 2:
        raise DataError(f"{source}: need at least two classes, found {names}")
    labels = encode_labels(records.labels, names, cfg.label_delimiter)
    own = None
    if records.splits is not None:
        what = f"data.split_column {cfg.split_column!r}" if cfg.split_column else "split folders"
        own = split_names(records.splits, f"{source}: {what}", cfg.dev_split)
    parts = split_indices(labels, own, cfg.val_fraction, cfg.test_fraction, seed)
    splits = {s: Split([records.texts[i] for i in idx], labels[idx]) for s, idx in parts.items()}
    return TextData(
        class_names=names,
        splits=splits,
        multi_label=bool(cfg.label_delimiter),
        format=fmt,
        own_splits=sorted(set(own)) if own is not None else [],
        rejects=records.rejects,
        replaced_bytes=records.replaced_bytes,
        files=[str(p) for p in files],
    )


def summary(data: TextData) -> dict:
    """What `prepare` read, as `prepare.json` keeps it."""
    return {
        "classes": data.class_names,
        "multi_label": data.multi_label,
        "format": data.format,
        "files": data.files,
        "own_splits": data.own_splits,
        "splits": {s: {"texts": len(p)} for s, p in data.splits.items()},
        "rejected_rows": len(data.rejects),
        "replaced_bytes": data.replaced_bytes,
    }


def make_dataset(split: Split, batch: int, shuffle: bool, seed: int, hub: bool):
    """(raw strings, labels) batches; strings as [n, 1] for our models, [n] for KerasHub tasks."""
    texts = tf.constant(split.texts, dtype=tf.string)
    dataset = tf.data.Dataset.from_tensor_slices((texts if hub else texts[:, None], split.labels))
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch).prefetch(tf.data.AUTOTUNE)


def write_scoring_input(path: Path, data: TextData, cfg: ScoreConfig, delimiter: str) -> None:
    """The test texts as a scoring input at `path`: `score.id_column` (1, 2, ...),
    `score.text_column` and the true label beside them (joined by `delimiter` if multi-label)."""
    split = data.splits["test"]
    if data.multi_label:
        names = np.array(data.class_names)
        labels = [delimiter.join(names[row.astype(bool)]) for row in split.labels]
    else:
        labels = [data.class_names[k] for k in split.labels]
    frame = pd.DataFrame(
        {
            cfg.id_column: np.arange(1, len(split) + 1),
            cfg.text_column: split.texts,
            "true_label": labels,
        }
    )
    with atomic_path(path) as tmp:
        # Every text quoted: a lone \r in a text would otherwise end the row for CSV readers.
        frame.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC)


@dataclasses.dataclass
class RowProblem:
    """A scoring row that holds no text (a JSONL line that is no object, a CSV line with the
    wrong number of fields): why."""

    reason: str


def reject_reason(value) -> str:
    """'' for a text to score, else why it cannot be scored."""
    if isinstance(value, RowProblem):
        return value.reason
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing text"
    if not isinstance(value, str):
        return f"text is not a string ({type(value).__name__})"
    if value == "":
        return "empty text"
    if not value.strip():
        return "whitespace-only text"
    return ""


def iter_inputs(path: Path, text_column: str, id_column: str, chunk_rows: int):
    """Chunks of (ids or None, raw values) from CSV/TSV (header), JSONL or .txt (one text per
    line), a row for every line (every record of a CSV); a line without a text comes as a
    `RowProblem`."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from _table_inputs(path, text_column, id_column, chunk_rows)
        return
    if suffix not in (".jsonl", ".json", ".txt"):
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; expected .csv, .tsv, .jsonl "
            "or .txt (one text per line)"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text, _ = read_text_file(path)
    lines = lines_of(text)  # \n or \r\n end a text; U+0085 or U+2028 inside one do not
    for begin in range(0, len(lines), chunk_rows):
        part = lines[begin : begin + chunk_rows]
        if suffix == ".txt":
            yield None, part
        else:
            rows = [_json_input(line, text_column, id_column) for line in part]
            yield [key for key, _ in rows], [value for _, value in rows]


def _table_inputs(path: Path, text_column: str, id_column: str, chunk_rows: int):
    first = True
    for chunk in iter_table_chunks(path, chunk_rows):
        if first and text_column not in chunk.columns:
            columns = ", ".join(map(str, chunk.columns[:12]))
            raise DataError(
                f"{path}: no text column {text_column!r} (columns: {columns}); "
                "set score.text_column"
            )
        first = False
        ids = chunk[id_column].tolist() if id_column in chunk.columns else None
        values = chunk[text_column].tolist()
        problems = row_problems(chunk)  # a blank line, too many or too few fields
        for position in np.flatnonzero(problems.to_numpy() != ""):
            values[position] = RowProblem(problems.iloc[position])
        yield ids, values


def _json_input(line: str, text_column: str, id_column: str) -> tuple:
    """(id, text) of one JSONL scoring line; (None, RowProblem) when it holds no object."""
    if not line.strip():
        return None, RowProblem("not a JSON object")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, RowProblem(f"not valid JSON ({exc.msg})")
    if not isinstance(row, dict):
        return None, RowProblem("not a JSON object")
    return row.get(id_column), row.get(text_column)
