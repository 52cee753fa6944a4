"""Medical image data: MedMNIST-style NPZ, image/DICOM folders, CSV manifests; patient-level splits.

Every reader returns a `MedicalData`: the class (or finding) names, the task, and per split the
uint8 images at the model's size, labels ((n,) class indices, or (n, k) 0/1 findings for
multi-label), ids and patient ids where known. Files that cannot be used are listed in `rejects`
with the reason. When patient ids exist no patient may sit in two splits: splits drawn here are
grouped by patient, and splits that came with the data are checked.

`save_prepared` / `load_prepared` cache a `MedicalData` between steps; `load_file` and
`npz_images` are the readers scoring uses, file by file.
"""

import dataclasses
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from apps.medical.dicom import is_colour, is_dicom, patient_id, read_dicom
from shared.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageError,
    check_npz_pixels,
    class_folder_files,
    image_info,
    read_image,
    read_manifest_frame,
    resize,
    resize_all,
    set_channels,
    to_uint8,
)
from shared.io import DataError, atomic_path, read_json, write_json, write_table

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

    Labels (n,) or (n, 1) are classes; (n, k) with k > 1 are k findings (multi-label). Images
    over `options.max_pixels` each are refused from the arrays' headers, before decoding.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            check_npz_pixels(path, [f"{s}_images" for s in SPLITS], options.max_pixels)
            arrays = {key: archive[key] for key in archive.files}
    except ImageError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable NPZ file ({exc})") from exc
    present = [s for s in SPLITS if f"{s}_images" in arrays]
    if "train" not in present:
        raise DataError(
            f"{path}: expected train_images and train_labels (MedMNIST layout); found "
            f"{', '.join(sorted(arrays)) or 'no arrays'}"
        )
    raw = {split: _npz_split(path, split, arrays) for split in present}
    class_names, task, raw = _npz_classes(path, raw, arrays)
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


def _npz_split(path: Path, split: str, arrays: dict) -> tuple:
    """(uint8 images, labels, patient ids or None) of one split, checked."""
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
    return to_uint8(images, f"{path}: {split}"), labels, patients


def _npz_classes(path: Path, raw: dict, arrays: dict) -> tuple[list[str], str, dict]:
    """(class names, task, splits with class labels as indices 0..k-1): (n, k) 0/1 labels are
    k findings; otherwise the distinct label values are the classes, in order."""
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
    return class_names, task, raw


def npz_images(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[str, np.ndarray]]:
    """Scoring: (id, uint8 image) for every image of an NPZ, from `images` or from every
    `<split>_images` array; ImageError when the file is unusable: no such array, no images at
    all, or images over `max_pixels` each (refused from the headers, before decoding)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = (
                ["images"]
                if "images" in archive.files
                else sorted(k for k in archive.files if k.endswith("_images"))
            )
            if not keys:
                raise ImageError(f"{path}: NPZ without an `images` or `<split>_images` array")
            check_npz_pixels(path, keys, max_pixels)
            out, shapes = [], []
            for key in keys:
                raw = archive[key]
                images = to_uint8(raw, f"{path}: {key}")
                out += [(f"{path}:{key}:{i}", image) for i, image in enumerate(images)]
                shapes.append(f"{key} {raw.shape}")
    except DataError:  # ImageError and to_uint8's errors already say what is wrong
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # corrupt or pickled
        raise ImageError(f"{path}: unreadable NPZ ({str(exc).splitlines()[0]})") from exc
    if not out:  # an empty file is a reject with its reason, not a file that vanishes
        raise ImageError(f"{path}: NPZ holds no images ({', '.join(shapes)})")
    return out


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
    frame, given = read_manifest_frame(path, split_column, dev_split)
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
    keep = _decode(records, rejects, channels, options)
    for record, _ in keep:  # DICOM files carry their patient
        if not record["patient"] and is_dicom(record["path"]):
            record["patient"] = patient_id(record["path"])
    class_names, task, labels = _record_labels([record for record, _ in keep])
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


def _decode(records: list[dict], rejects: list, channels: int, options: ReadOptions) -> list:
    """(record, uint8 image at the model's size) of every readable file, decoded in threads;
    each other file is appended to `rejects` with its reason."""

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
    return keep


def _record_labels(records: list[dict]) -> tuple[list[str], str, np.ndarray]:
    """(class names, task, labels): `a|b` labels are findings (multi-label), else classes."""
    if any("|" in record["label"] for record in records):
        findings = sorted({f for r in records for f in r["label"].split("|") if f and f != "none"})
        lookup = {name: i for i, name in enumerate(findings)}
        labels = np.zeros((len(records), len(findings)), np.float32)
        for row, record in enumerate(records):
            for finding in record["label"].split("|"):
                if finding in lookup:
                    labels[row, lookup[finding]] = 1.0
        return findings, "multilabel", labels
    class_names = sorted({record["label"] for record in records})
    if len(class_names) < 2:
        raise DataError(f"need at least 2 classes, found {class_names}")
    lookup = {name: i for i, name in enumerate(class_names)}
    labels = np.array([lookup[record["label"]] for record in records], np.int32)
    return class_names, "binary" if len(class_names) == 2 else "multiclass", labels


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
            f"than one split (e.g. {example}); fix the splits or set "
            "data.allow_patient_overlap=true"
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


def is_prepared(folder: Path) -> bool:
    """Whether `folder` holds prepared data `load_prepared` reads."""
    return (folder / "arrays.npz").exists() and (folder / "prepare.json").exists()


def save_prepared(folder: Path, data: MedicalData, source: Path) -> None:
    """The prepared splits (arrays.npz), the rejects (rejects.csv) and the summary
    (prepare.json) in `folder`, each written atomically."""
    arrays = {}
    for split, part in data.splits.items():
        for name in ("images", "labels", "ids", "patients"):
            arrays[f"{split}_{name}"] = getattr(part, name)
    write_table(folder / "rejects.csv", rejects_frame(data.rejects))
    with atomic_path(folder / "arrays.npz", suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    write_json(folder / "prepare.json", summary(data) | {"source": str(source)})


def load_prepared(folder: Path) -> MedicalData:
    """The `MedicalData` that `save_prepared` wrote in `folder`."""
    info = read_json(folder / "prepare.json")
    with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
        splits = {
            s: Split(*(archive[f"{s}_{n}"] for n in ("images", "labels", "ids", "patients")))
            for s in SPLITS
        }
    return MedicalData(
        info["classes"],
        info["task"],
        info["channels"],
        splits,
        info["format"],
        info["own_splits"],
        read_rejects(folder / "rejects.csv"),
        info["patient_leakage"],
        folder,
    )


def read_rejects(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(frame.itertuples(index=False, name=None))


def rejects_frame(rejects: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rejects, columns=["path", "reason"])
