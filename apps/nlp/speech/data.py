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
COLUMNS = ["path", "label", "speaker", "split", "index"]  # index: the file name's {index}, or -1


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


def keep_words(table: pd.DataFrame, words: list[str]) -> pd.DataFrame:
    """The clips of `words` only (data.words; empty: all); a word not found is a DataError."""
    if not words:
        return table
    missing = sorted(set(words) - set(table.label))
    if missing:
        raise DataError(f"data.words names words with no clips: {missing}")
    return table[table.label.isin(words)].reset_index(drop=True)


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
            rows.append((str(file), word.name, speaker, split, _index(match)))
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
        speaker = match.groupdict().get("speaker") or ""
        rows.append((str(file), match["label"], speaker, "", _index(match)))
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
            speaker = getattr(row, "speaker", "") or ""
            index = str(getattr(row, "index", "") or "")
            rows.append(
                (str(file), row.label, speaker, split, int(index) if index.isdigit() else -1)
            )
    return rows, rejects


def _index(match: re.Match | None) -> int:
    """The recording index a file name carries ({index}), or -1."""
    value = match.groupdict().get("index") if match else None
    return int(value) if value else -1


@dataclasses.dataclass
class SplitRules:
    """How to split: data.split, the fractions, and the splits a user states."""

    mode: str = "auto"  # auto, speaker or random
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    test_speakers: tuple = ()
    val_speakers: tuple = ()
    test_index_max: int = -1

    def stated(self) -> bool:
        return bool(self.test_speakers or self.val_speakers or self.test_index_max >= 0)


def assign_splits(table: pd.DataFrame, rules: SplitRules):
    """Fill the `split` column and return (table, how it was split).

    Own splits (list files, a `split` column) are kept; when they name no validation clip, it
    is drawn from the training side. Stated splits (named speakers, an index rule) come next.
    Otherwise, with `mode` speaker (or auto and every file's speaker known), whole speakers go
    to one split, so the test measures new voices; else a stratified random split.
    """
    table = table.copy()
    if (table.split != "").all():
        if (table.split == "val").any():
            return table, "own"
        train = table.split == "train"
        table.loc[train, "split"] = _draw_val(table[train], rules, by_speaker=True)
        return table, "own, validation drawn from train"
    if rules.stated():
        return _stated_split(table, rules)
    known = (table.speaker != "").all()
    if rules.mode == "speaker" and not known:
        raise DataError(
            "data.split=speaker needs the speaker of every file (file-name pattern or a speaker "
            f"column); {int((table.speaker == '').sum()):,} file(s) have none"
        )
    if rules.mode in ("speaker", "auto") and known:
        speakers = np.array(sorted(table.speaker.unique()))
        if len(speakers) < 3:
            raise DataError(
                f"a speaker-disjoint split needs 3 speakers or more, found {len(speakers)}"
            )
        np.random.default_rng(rules.seed).shuffle(speakers)
        n_test = max(1, int(round(rules.test * len(speakers))))
        n_val = max(1, int(round(rules.val * len(speakers))))
        groups = {"test": speakers[:n_test], "val": speakers[n_test : n_test + n_val]}
        table["split"] = "train"
        for split, members in groups.items():
            table.loc[table.speaker.isin(members), "split"] = split
        return table, "speaker"
    rest, test_idx = _stratified(np.arange(len(table)), table.label.to_numpy(), rules.test, rules)
    table["split"] = "test"
    table.iloc[rest, table.columns.get_loc("split")] = "train"
    train = table.split == "train"
    share = rules.val / (1 - rules.test)  # of the clips left after the test draw
    table.loc[train, "split"] = _draw_val(table[train], rules, False, share)
    return table, "random"


def _stated_split(table: pd.DataFrame, rules: SplitRules):
    """Test (and validation) from data.test_speakers / data.val_speakers / data.test_index_max;
    validation drawn from the rest when not named."""
    present = set(table.speaker)
    missing = sorted((set(rules.test_speakers) | set(rules.val_speakers)) - present)
    if missing:
        raise DataError(f"data.test_speakers / data.val_speakers name unknown speakers {missing}")
    if rules.test_index_max >= 0 and (table["index"] < 0).any():
        raise DataError(
            "data.test_index_max needs every file's {index} from the file-name pattern; "
            f"{int((table['index'] < 0).sum()):,} file(s) have none"
        )
    test = table.speaker.isin(rules.test_speakers)
    if rules.test_index_max >= 0:
        test |= table["index"] <= rules.test_index_max
    val = table.speaker.isin(rules.val_speakers) & ~test
    table["split"] = np.where(test, "test", np.where(val, "val", "train"))
    if not rules.val_speakers:
        train = table.split == "train"
        by_speaker = bool(rules.test_speakers) and rules.test_index_max < 0
        table.loc[train, "split"] = _draw_val(table[train], rules, by_speaker)
    return table, "stated"


def _draw_val(
    part: pd.DataFrame, rules: SplitRules, by_speaker: bool, fraction: float | None = None
) -> np.ndarray:
    """train/val labels for the training side `part` (`fraction` of it, default data.
    val_fraction): whole speakers when `by_speaker` and every speaker is known (at least 2 of
    them), else stratified random clips."""
    fraction = rules.val if fraction is None else fraction
    speakers = np.array(sorted(part.speaker.unique()))
    if by_speaker and (part.speaker != "").all() and len(speakers) >= 2:
        np.random.default_rng(rules.seed).shuffle(speakers)
        chosen = speakers[: max(1, int(round(fraction * len(speakers))))]
        return np.where(part.speaker.isin(chosen), "val", "train")
    _, val_idx = _stratified(np.arange(len(part)), part.label.to_numpy(), fraction, rules)
    out = np.full(len(part), "train", dtype=object)
    out[val_idx] = "val"
    return out


def _stratified(index: np.ndarray, labels: np.ndarray, fraction: float, rules: SplitRules):
    """(kept, drawn) positions: `fraction` of them drawn, stratified by label when every label
    has 3 clips or more."""
    from sklearn.model_selection import train_test_split

    stratify = labels if pd.Series(labels).value_counts().min() >= 3 else None
    return train_test_split(index, test_size=fraction, random_state=rules.seed, stratify=stratify)
