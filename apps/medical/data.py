"""Medical image data: MedMNIST-style NPZ, image/DICOM folders, CSV manifests; patient-level splits.

Every reader returns a `MedicalData`: the class (or finding) names, the task, and per split the
uint8 images at the model's size, labels ((n,) class indices, or (n, k) 0/1 findings for
multi-label), ids and patient ids where known. Files that cannot be used are listed in `rejects`
with the reason. When patient ids exist no patient may sit in two splits: splits drawn here are
grouped by patient, and splits that came with the data are checked.
"""

import dataclasses
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from apps.medical.dicom import is_colour, is_dicom, patient_id, read_dicom
from shared.images import IMAGE_SUFFIXES, ImageError, class_folder_files, image_info, read_image
from shared.io import DataError, read_table
from shared.splits import split_names

SPLITS = ("train", "val", "test")
FILE_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".dicom")
NORMAL_NAMES = ("normal", "negative", "healthy", "no_finding", "no finding", "benign", "0")


@dataclasses.dataclass
class Split:
    """One split: uint8 images (n, h, w, c), labels, ids, and patient ids ('' when unknown)."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    patients: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How files become arrays and how missing splits are drawn."""

    image_size: tuple[int, int] = (64, 64)
    channels: int | None = None
    window: str = ""
    max_pixels: int = 40_000_000
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    allow_patient_overlap: bool = False
    split_column: str | None = None  # None: a manifest column named `split`, if any
    dev_split: str = "validation"  # dev/val/valid mean validation, or "test"


@dataclasses.dataclass
class MedicalData:
    class_names: list[str]
    task: str  # binary, multiclass or multilabel
    channels: int
    splits: dict[str, Split]
    format: str  # npz, folder or csv
    own_splits: list[str]  # splits that came with the data (the rest were drawn)
    rejects: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    leakage: dict = dataclasses.field(default_factory=dict)  # the patient-overlap check
    folder: Path | None = None  # the prepared folder (arrays, rejects, summary)


def detect_format(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise DataError(f"{path}: expected a .npz file, an image/DICOM folder or a .csv manifest")


def read(path: str | Path, fmt: str, options: ReadOptions) -> MedicalData:
    """Read any supported source, split it (by patient when known) and check for leakage."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    if fmt == "npz":
        return read_npz(path, options)
    records, rejects = (
        read_folder(path, options.dev_split)
        if fmt == "folder"
        else read_manifest(path, options.split_column, options.dev_split)
    )
    return _from_records(records, rejects, fmt, options)


# ---------------------------------------------------------------------------------------------
# NPZ


def read_npz(path: Path, options: ReadOptions) -> MedicalData:
    """MedMNIST layout: {train,val,test}_images and _labels; optional {split}_patient_ids and
    class_names (this project's additions; MedMNIST files work without them).

    Labels (n,) or (n, 1) are classes; (n, k) with k > 1 are k findings (multi-label).
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable NPZ file ({exc})") from exc
    present = [s for s in SPLITS if f"{s}_images" in arrays]
    if "train" not in present:
        raise DataError(
            f"{path}: expected train_images and train_labels (MedMNIST layout); found "
            f"{', '.join(sorted(arrays)) or 'no arrays'}"
        )
    raw = {}
    for split in present:
        if f"{split}_labels" not in arrays:
            raise DataError(f"{path}: {split}_images has no {split}_labels")
        images, labels = arrays[f"{split}_images"], np.asarray(arrays[f"{split}_labels"])
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim not in (1, 2) or len(labels) != len(images):
            raise DataError(
                f"{path}: {split}: expected labels (n,) or (n, k) for images {images.shape}, "
                f"got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.number) or (labels.size and labels.min() < 0):
            raise DataError(f"{path}: {split}_labels must be non-negative numbers")
        patients = arrays.get(f"{split}_patient_ids")
        patients = np.asarray(patients).astype(str) if patients is not None else None
        if patients is not None and len(patients) != len(images):
            raise DataError(
                f"{path}: {split}_patient_ids has {len(patients)} entries, not {len(images)}"
            )
        raw[split] = (to_uint8(images, f"{path}: {split}"), labels, patients)
    multilabel = {labels.ndim for _, labels, _ in raw.values()}
    if len(multilabel) > 1:
        raise DataError(f"{path}: label shapes differ between splits")
    if multilabel == {2}:
        k = {labels.shape[1] for _, labels, _ in raw.values()}
        if len(k) > 1 or not all(np.isin(lab, (0, 1)).all() for _, lab, _ in raw.values()):
            raise DataError(f"{path}: multi-label labels must be 0/1 with the same width")
        class_names = [f"finding_{i}" for i in range(k.pop())]
        task = "multilabel"
    else:
        values = np.unique(np.concatenate([lab for _, lab, _ in raw.values()]))
        if not np.all(values == np.round(values)):
            raise DataError(f"{path}: class labels must be integers")
        lookup = {int(v): i for i, v in enumerate(values)}
        class_names = [str(int(v)) for v in values]
        raw = {
            s: (x, np.array([lookup[int(v)] for v in y], np.int32), p)
            for s, (x, y, p) in raw.items()
        }
        task = "binary" if len(class_names) == 2 else "multiclass"
    if len(class_names) < 2 and task != "multilabel":
        raise DataError(f"{path}: need at least 2 classes, found {class_names}")
    if "class_names" in arrays:  # optional (not MedMNIST): names in label order
        names = [str(n) for n in np.asarray(arrays["class_names"]).tolist()]
        if len(names) != len(class_names):
            raise DataError(
                f"{path}: class_names has {len(names)} names for {len(class_names)} classes"
            )
        class_names = names
    channels = options.channels or (1 if all(x.shape[-1] == 1 for x, _, _ in raw.values()) else 3)
    splits = {}
    for split, (images, labels, patients) in raw.items():
        n = len(labels)
        ids = np.array([f"{split}:{i}" for i in range(n)])
        images = resize_all(set_channels(images, channels), options.image_size)
        splits[split] = Split(
            images,
            labels.astype(_label_dtype(task)),
            ids,
            patients if patients is not None else np.full(n, ""),
        )
    data = MedicalData(class_names, task, channels, splits, "npz", present)
    _draw_missing(data, options)
    return data


def to_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """(n, h, w) or (n, h, w, c) of any numeric type as uint8 (n, h, w, 1 or 3)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{source}: expected images (n, h, w) or (n, h, w, c), got {images.shape}")
    images = images[..., :3]
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{source}: images contain NaN or infinite values")
    low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
    if low >= 0 and high <= 1.0:  # floats in [0, 1]
        values = values * 255.0
    elif low < 0 or high > 255:  # 16-bit, Hounsfield or other wide ranges: stretch
        values = (values - low) / max(high - low, 1e-9) * 255.0
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def set_channels(images: np.ndarray, channels: int) -> np.ndarray:
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    weights = np.array([0.299, 0.587, 0.114])
    return np.round(images.astype(np.float64) @ weights)[..., None].astype(np.uint8)


def resize_all(images: np.ndarray, size) -> np.ndarray:
    """uint8 images at [height, width] `size` (bilinear); unchanged when already that size."""
    height, width = size
    if images.shape[1:3] == (height, width):
        return images
    return np.stack([resize(image, size) for image in images])


def resize(image: np.ndarray, size) -> np.ndarray:
    height, width = size
    channels = image.shape[-1]
    mode = "L" if channels == 1 else "RGB"
    pil = Image.fromarray(image[..., 0] if channels == 1 else image, mode=mode)
    out = np.asarray(pil.resize((width, height), Image.BILINEAR), dtype=np.uint8)
    return out[..., None] if channels == 1 else out


# ---------------------------------------------------------------------------------------------
# files: folders and CSV manifests


def read_folder(root: Path, dev_split: str = "validation") -> tuple[list[dict], list]:
    """`root/<class>/*` or `root/{train,val,test}/<class>/*`, images and DICOM files mixed.

    Split folders are named as `shared.splits` reads them: `val`, `valid` and `dev` are the
    validation set, or the test set with `dev_split="test"`.
    """

    def reason(file: Path) -> str:
        if file.suffix.lower() in FILE_SUFFIXES or is_dicom(file):
            return ""
        return f"not an image or DICOM file ({file.suffix or 'no suffix'})"

    found, rejects, _ = class_folder_files(root, dev_split, reason)
    records = [{"path": p, "label": c, "split": s, "patient": ""} for p, c, s in found]
    if not records:
        raise DataError(
            f"{root}: no images found; expected {root}/<class>/*.png|jpg|dcm "
            "(optionally under train/, val/, test/)"
        )
    return records, rejects


def read_manifest(
    path: Path, split_column: str | None = None, dev_split: str = "validation"
) -> tuple[list[dict], list]:
    """CSV `path,label[,patient_id][,split]`; `a|b` in label marks several findings (multi-label).

    The split column is `split_column` (default: a column named `split`, if any); an unknown
    split value stops with one line.
    """
    frame = read_table(path, dtype=str)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    column = (split_column or "split").strip().lower()
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if split_column and column not in frame.columns:
        missing.append(f"{column} (data.split_column)")
    if missing:
        raise DataError(f"{path}: missing required column(s): {', '.join(missing)}")
    frame = frame.fillna("")
    given = (
        split_names(frame[column], f"{path}: column {column!r}", dev_split)
        if column in frame.columns
        else [None] * len(frame)
    )
    records, rejects = [], []
    for row, (record, split) in enumerate(zip(frame.to_dict("records"), given, strict=True), 2):
        file, label = str(record["path"]).strip(), str(record["label"]).strip()
        if not file:
            rejects.append((f"{path}:{row}", f"row {row}: empty path"))
            continue
        full = Path(file) if Path(file).is_absolute() else path.parent / file
        records.append(
            {
                "path": str(full),
                "label": label,
                "split": split,
                "patient": str(record.get("patient_id", "")).strip(),
            }
        )
    if not records:
        raise DataError(f"{path}: no usable rows (path,label[,patient_id])")
    return records, rejects


def load_file(path: str, channels: int, window: str, max_pixels: int) -> np.ndarray:
    """A PNG/JPEG/BMP or DICOM file as uint8 (h, w, channels); ImageError says why not."""
    if is_dicom(path):
        return set_channels(read_dicom(path, window, max_pixels)[None], channels)[0]
    return read_image(path, channels, max_pixels)


def _from_records(
    records: list[dict], rejects: list, fmt: str, options: ReadOptions
) -> MedicalData:
    channels = options.channels or _channels_of([r["path"] for r in records])

    def decode(record):
        try:
            image = load_file(record["path"], channels, options.window, options.max_pixels)
            return resize(image, options.image_size), ""
        except ImageError as exc:
            return None, str(exc).removeprefix(f"{record['path']}: ")

    with ThreadPoolExecutor(max_workers=8) as pool:
        decoded = list(pool.map(decode, records))
    keep = []
    for record, (image, reason) in zip(records, decoded, strict=True):
        if reason:
            rejects.append((record["path"], reason))
        else:
            keep.append((record, image))
    if not keep:
        raise DataError(f"none of the {len(records)} files could be read; first: {rejects[0][1]}")
    for record, _ in keep:  # DICOM files carry their patient
        if not record["patient"] and is_dicom(record["path"]):
            record["patient"] = patient_id(record["path"])
    multilabel = any("|" in record["label"] for record, _ in keep)
    if multilabel:
        findings = sorted({f for r, _ in keep for f in r["label"].split("|") if f and f != "none"})
        lookup = {name: i for i, name in enumerate(findings)}
        labels = np.zeros((len(keep), len(findings)), np.float32)
        for row, (record, _) in enumerate(keep):
            for finding in record["label"].split("|"):
                if finding in lookup:
                    labels[row, lookup[finding]] = 1.0
        class_names, task = findings, "multilabel"
    else:
        class_names = sorted({record["label"] for record, _ in keep})
        lookup = {name: i for i, name in enumerate(class_names)}
        labels = np.array([lookup[record["label"]] for record, _ in keep], np.int32)
        task = "binary" if len(class_names) == 2 else "multiclass"
    if len(class_names) < 2 and not multilabel:
        raise DataError(f"need at least 2 classes, found {class_names}")
    images = np.stack([image for _, image in keep])
    ids = np.array([record["path"] for record, _ in keep])
    patients = np.array([record["patient"] for record, _ in keep])
    own = np.array([record["split"] or "" for record, _ in keep])
    given = sorted(set(own) - {""})
    if given and "train" not in given:
        raise DataError("the data names val/test splits but no train split")
    splits = {}
    for split in given or ["train"]:
        index = np.flatnonzero(own == split) if given else np.arange(len(keep))
        if given and split == "train":
            index = np.flatnonzero((own == "train") | (own == ""))
        splits[split] = Split(images[index], labels[index], ids[index], patients[index])
    data = MedicalData(class_names, task, channels, splits, fmt, given, rejects)
    _draw_missing(data, options)
    return data


def _channels_of(paths: list[str]) -> int:
    """3 when any readable file is in colour (a DICOM file by its header), else 1."""
    for path in paths:
        if is_dicom(path):
            if is_colour(path):
                return 3
            continue
        try:
            if not image_info(path)[2]:
                return 3
        except ImageError:
            continue  # rejected with its reason when decoded
    return 1


def _label_dtype(task: str):
    return np.float32 if task == "multilabel" else np.int32


# ---------------------------------------------------------------------------------------------
# splits


def _draw_missing(data: MedicalData, options: ReadOptions) -> None:
    """Draw val and test from train when the data lacks them (by patient when known); check."""
    pool = data.splits["train"]
    missing = [s for s in ("val", "test") if s not in data.splits]
    for split in reversed(missing):  # test first, then val from what remains
        share = options.test_fraction if split == "test" else options.val_fraction
        if split == "val" and "test" in missing:
            share = share / (1 - options.test_fraction)
        keep, drawn = split_indices(pool.labels, pool.patients, share, options.seed)
        data.splits[split] = _take(pool, drawn)
        pool = _take(pool, keep)
    data.splits["train"] = pool
    data.splits = {s: data.splits[s] for s in SPLITS}
    data.leakage = patient_overlap({s: p.patients for s, p in data.splits.items()})
    if data.leakage["overlapping_patients"] and not options.allow_patient_overlap:
        example = data.leakage["examples"][0]
        raise DataError(
            f"patient leakage: {data.leakage['overlapping_patients']} patient(s) appear in more "
            f"than one split (e.g. {example}); fix the splits or set data.allow_patient_overlap=true"
        )


def _take(split: Split, index: np.ndarray) -> Split:
    index = np.sort(index)
    return Split(split.images[index], split.labels[index], split.ids[index], split.patients[index])


def split_indices(labels: np.ndarray, patients: np.ndarray, share: float, seed: int):
    """(kept, drawn) row indices; grouped by patient when every row has one, else stratified."""
    n = len(labels)
    if n < 3:
        raise DataError(f"too few images to split ({n}); need at least 3")
    index = np.arange(n)
    if len(patients) and all(patients != ""):
        groups = len(set(patients.tolist()))
        if groups < 2:  # GroupShuffleSplit would stop with a traceback
            raise DataError(
                f"every image left to split belongs to {groups} patient (e.g. "
                f"{str(patients[0])!r}), so no split can be drawn by patient; give the splits "
                "(train/ val/ test/ folders or a split column)"
            )
        splitter = GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        keep, drawn = next(splitter.split(index, groups=patients))
        return keep, drawn
    strata = labels if labels.ndim == 1 else None
    if strata is not None and np.bincount(strata).min(initial=n) < 2:
        strata = None
    try:
        return train_test_split(index, test_size=share, random_state=seed, stratify=strata)
    except ValueError:  # fewer rows in the share than classes: draw without strata
        return train_test_split(index, test_size=share, random_state=seed)


def patient_overlap(patients: dict[str, np.ndarray]) -> dict:
    """How many known patients appear in more than one split, with a few examples."""
    seen: dict[str, set] = {}
    for split, ids in patients.items():
        for pid in set(ids.tolist()) - {""}:
            seen.setdefault(pid, set()).add(split)
    shared = sorted(pid for pid, splits in seen.items() if len(splits) > 1)
    return {
        "patients_known": len(seen),
        "overlapping_patients": len(shared),
        "examples": [f"{pid} in {'+'.join(sorted(seen[pid]))}" for pid in shared[:5]],
    }


def positive_index(class_names: list[str], negative: str) -> int:
    """Binary tasks: the class index a decision flags (the one that is not 'normal')."""
    if negative:
        if negative not in class_names:
            raise DataError(f"data.negative_class {negative!r} is not one of {class_names}")
        return 1 - class_names.index(negative)
    normal = [i for i, name in enumerate(class_names) if name.lower() in NORMAL_NAMES]
    return 1 - normal[0] if len(normal) == 1 else 1


def summary(data: MedicalData) -> dict:
    def counts(labels):
        if data.task == "multilabel":
            return labels.sum(axis=0).astype(int).tolist()
        return np.bincount(labels, minlength=len(data.class_names)).tolist()

    return {
        "format": data.format,
        "task": data.task,
        "classes": data.class_names,
        "channels": data.channels,
        "own_splits": data.own_splits,
        "splits": {
            s: {
                "images": len(p),
                "per_class": counts(p.labels),
                "patients": len(set(p.patients.tolist()) - {""}),
            }
            for s, p in data.splits.items()
        },
        "patient_leakage": data.leakage,
        "rejected_files": len(data.rejects),
    }


def read_rejects(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(frame.itertuples(index=False, name=None))


def rejects_frame(rejects: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rejects, columns=["path", "reason"])
