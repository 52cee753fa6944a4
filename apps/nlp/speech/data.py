"""Readers of labelled audio collections, and the train/validation/test split.

Three layouts, each read into one table of `path, label, speaker, split`:

- folder: `root/<word>/*.wav`; with `validation_list.txt` / `testing_list.txt` beside the word
  folders (Speech Commands) those files are the validation and test splits. Folders whose name
  starts with `_` (Speech Commands' `_background_noise_`) are not words.
- pattern: a flat folder whose file names carry the label and speaker, e.g.
  `{label}_{speaker}_{index}.wav` (Free Spoken Digit).
- csv: a manifest with `path,label[,speaker]` columns, paths relative to the manifest.

Files that do not fit the layout land in the rejects with the reason, never silently dropped.
The table and the clips' features become one `Split` of arrays per split (`feature_splits`).
"""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

from apps.nlp.speech.audio import SUFFIXES
from shared.io import DataError, read_table
from shared.scoring import file_problem

SPLITS = ("train", "val", "test")
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}
COLUMNS = ["path", "label", "speaker", "split"]


@dataclasses.dataclass
class Split:
    """One split's feature tensors, integer labels, speakers and file paths."""

    x: np.ndarray  # (clips, frames, bins) float32
    y: np.ndarray  # (clips,) int32
    speakers: np.ndarray  # (clips,) str, '' when unknown
    paths: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass
class SpeechData:
    """What `prepare` returns: the words, the three splits and what it found."""

    class_names: list[str]  # the words, sorted: label i is class_names[i]
    splits: dict[str, Split]  # train, val and test
    rejects: list[tuple[str, str]]  # (path, reason) of every file not used
    info: dict  # what prepare found, as written to prepare.json
    folder: Path  # the prepared-data folder (manifest, rejects, prepare.json)


def pattern_regex(pattern: str) -> re.Pattern:
    """`{label}_{speaker}_{index}.wav` -> a regex with named groups (any other text is literal)."""
    fields = re.findall(r"\{(\w+)\}", pattern)
    if "label" not in fields and "speaker" not in fields:
        raise DataError(f"file-name pattern {pattern!r} names neither {{label}} nor {{speaker}}")
    regex, last = "", 0
    for match in re.finditer(r"\{(\w+)\}", pattern):
        regex += re.escape(pattern[last : match.start()])
        name = match.group(1)
        regex += rf"(?P<{name}>\d+)" if name == "index" else rf"(?P<{name}>[^/]+?)"
        last = match.end()
    return re.compile(regex + re.escape(pattern[last:]) + r"\Z", re.IGNORECASE)


def detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            return "csv"
        raise DataError(f"{path}: expected a folder of audio files or a CSV manifest")
    if any(p.is_dir() and not p.name.startswith((".", "_")) for p in path.iterdir()):
        return "folder"
    return "pattern"


def read(path: str | Path, fmt: str, filename_pattern: str, speaker_pattern: str):
    """(table of path/label/speaker/split, [(path, reason)]) for the layout at `path`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers = {"folder": _read_folder, "pattern": _read_pattern, "csv": _read_csv}
    if fmt in ("folder", "pattern") and not path.is_dir():
        raise DataError(f"{path}: format {fmt!r} needs a folder")
    pattern = filename_pattern if fmt == "pattern" else speaker_pattern
    rows, rejects = readers[fmt](path, pattern)
    if not rows:
        reason = f"; first reject: {rejects[0][0]}: {rejects[0][1]}" if rejects else ""
        raise DataError(f"{path}: no usable audio files found ({fmt} layout){reason}")
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.label.nunique() < 2:
        raise DataError(f"{path}: need at least 2 words, found {sorted(table.label.unique())}")
    return table, rejects


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _unusable(path: Path) -> str:
    """Why an entry of a folder is not a clip ('' when it may be): a broken link, a FIFO and
    the like (`file_problem`), or not an audio file type. Named in the rejects, never skipped."""
    if file_problem(path):
        return file_problem(path)
    return "" if _is_audio(path) else f"unsupported file type {path.suffix!r}"


def _walked(path: Path) -> bool:
    """A real folder (rglob walks into it); a link to a folder is an entry to reject."""
    return path.is_dir() and not path.is_symlink()


def read_lists(root: Path) -> dict[str, str]:
    """`word/file.wav` -> val or test, from the list files in `root` (none: empty).

    Lines end in `\n` or `\r\n` only: `str.splitlines` would also cut at U+0085 and others.
    """
    listed = {}
    for split, name in LISTS.items():
        if (root / name).is_file():
            for line in (root / name).read_text(encoding="utf-8").split("\n"):
                if line.strip():
                    listed[line.strip().replace("\\", "/")] = split
    return listed


def list_coverage(root: Path, paths: list[str]) -> dict:
    """Per split list: its entries and how many of them are among `paths` (the clips used).

    A subset of a release (Speech Commands' lists name every clip of the whole release) holds
    only some of the listed clips; the others are not an error.
    """
    listed = read_lists(root)
    used = {Path(p).relative_to(root).as_posix() for p in paths}
    return {
        split: {
            "listed": sum(1 for s in listed.values() if s == split),
            "used": sum(1 for k, s in listed.items() if s == split and k in used),
        }
        for split in LISTS
    }


def lists_used(root: Path, mode: str, paths: list[str]) -> dict:
    """`list_coverage` when the split came from a folder's own lists, else empty."""
    if mode != "own" or not root.is_dir():
        return {}
    return list_coverage(root, paths)


def feature_splits(table: pd.DataFrame, features: dict, source) -> tuple[list[str], dict]:
    """(sorted words, {split: Split}) from the split table and each path's features; one clear
    error for an empty split."""
    class_names = sorted(table.label.unique())
    lookup = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split in SPLITS:
        part = table[table.split == split]
        if part.empty:
            raise DataError(f"{source}: the {split} split is empty; add files or change data.split")
        splits[split] = Split(
            np.stack([features[p] for p in part.path]),
            part.label.map(lookup).to_numpy(np.int32),
            part.speaker.to_numpy(str),
            part.path.tolist(),
        )
    return class_names, splits


def _read_folder(root: Path, speaker_pattern: str):
    regex = pattern_regex(speaker_pattern) if speaker_pattern else None
    listed = read_lists(root)
    rows, rejects = [], []
    words = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for word in words:
        for file in sorted(word.rglob("*")):
            if _walked(file) or file.name.startswith("."):
                continue
            why = _unusable(file)
            if why:
                rejects.append((str(file), why))
                continue
            match = regex.match(file.name) if regex else None
            speaker = match.groupdict().get("speaker", "") if match else ""
            split = listed.get(file.relative_to(root).as_posix(), "train" if listed else "")
            rows.append((str(file), word.name, speaker, split))
    return rows, rejects


def _read_pattern(root: Path, pattern: str):
    regex = pattern_regex(pattern)
    if "label" not in regex.groupindex:
        raise DataError(f"data.filename_pattern {pattern!r} must contain {{label}}")
    rows, rejects = [], []
    for file in sorted(root.iterdir()):
        if _walked(file) or file.name.startswith("."):
            continue
        why = _unusable(file)
        if why:
            rejects.append((str(file), why))
            continue
        match = regex.match(file.name)
        if match is None:
            rejects.append((str(file), f"file name does not match the pattern {pattern!r}"))
            continue
        rows.append((str(file), match["label"], match.groupdict().get("speaker") or "", ""))
    return rows, rejects


def _read_csv(manifest: Path, _pattern: str):
    frame = read_table(manifest, dtype=str).fillna("")
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{manifest}: missing required column(s): {', '.join(missing)}")
    rows, rejects = [], []
    for number, row in enumerate(frame.itertuples(index=False), start=2):
        file = Path(row.path) if Path(row.path).is_absolute() else manifest.parent / row.path
        if not row.path or not row.label:
            rejects.append((f"{manifest}:{number}", "missing path or label"))
        elif not file.is_file():
            rejects.append((str(file), "no such file"))
        else:
            split = getattr(row, "split", "") or ""
            if split and split not in SPLITS:
                rejects.append((str(file), f"split must be one of {', '.join(SPLITS)}"))
                continue
            rows.append((str(file), row.label, getattr(row, "speaker", "") or "", split))
    return rows, rejects


def assign_splits(table: pd.DataFrame, mode: str, val: float, test: float, seed: int):
    """Fill the `split` column and return (table, how it was split).

    Own splits (list files, a `split` column) are kept. Otherwise, with `mode` speaker (or auto
    and every file's speaker known), whole speakers go to one split, so the test measures new
    voices; else a stratified random split.
    """
    table = table.copy()
    if (table.split != "").all():
        return table, "own"
    known = (table.speaker != "").all()
    if mode == "speaker" and not known:
        raise DataError(
            "data.split=speaker needs the speaker of every file (file-name pattern or a speaker "
            f"column); {int((table.speaker == '').sum()):,} file(s) have none"
        )
    if mode in ("speaker", "auto") and known:
        speakers = np.array(sorted(table.speaker.unique()))
        if len(speakers) < 3:
            raise DataError(
                f"a speaker-disjoint split needs 3 speakers or more, found {len(speakers)}"
            )
        np.random.default_rng(seed).shuffle(speakers)
        n_test = max(1, int(round(test * len(speakers))))
        n_val = max(1, int(round(val * len(speakers))))
        groups = {"test": speakers[:n_test], "val": speakers[n_test : n_test + n_val]}
        table["split"] = "train"
        for split, members in groups.items():
            table.loc[table.speaker.isin(members), "split"] = split
        return table, "speaker"
    from sklearn.model_selection import train_test_split

    index = np.arange(len(table))
    labels = table.label.to_numpy()
    stratify = labels if table.label.value_counts().min() >= 3 else None
    rest, test_idx = train_test_split(index, test_size=test, random_state=seed, stratify=stratify)
    strat_rest = labels[rest] if stratify is not None else None
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1 - test), random_state=seed, stratify=strat_rest
    )
    table["split"] = ""
    for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        table.iloc[idx, table.columns.get_loc("split")] = split
    return table, "random"
