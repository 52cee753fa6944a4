"""Splits that come with the data: one reading of split names for every reader.

A split column (`data.split_column`) or split folders name each row's split. `train`,
`validation` and `test` mean what they say; `dev` and `val` (and `valid`) are validation by
default, or the test set where the data uses them so (`data.dev_split=test`, as in datasets that
publish only train and dev). Any other value stops `prepare` with one line naming it: a row
silently moved to the training set would leak or vanish.
"""

from pathlib import Path

import numpy as np

from shared.io import DataError

SPLITS = ("train", "val", "test")
TRAIN, VALIDATION, TEST = SPLITS
_NAMES = {
    "train": TRAIN,
    "training": TRAIN,
    "validation": VALIDATION,
    "test": TEST,
    "testing": TEST,
}
DEV_NAMES = ("dev", "val", "valid")
DEV_SPLIT_CHOICES = ("validation", "test")
SPLIT_FOLDERS = (*_NAMES, *DEV_NAMES)  # folder names an image tree may split itself by


def split_names(values, source: str, dev_split: str = "validation") -> np.ndarray:
    """Each value as 'train', 'val' or 'test' (case and surrounding spaces ignored).

    `dev_split` says what `dev`/`val`/`valid` mean: 'validation' or 'test'.
    """
    if dev_split not in DEV_SPLIT_CHOICES:
        raise ValueError(f"dev_split must be one of {DEV_SPLIT_CHOICES}. Received: {dev_split!r}")
    names = dict(_NAMES)
    names.update(dict.fromkeys(DEV_NAMES, VALIDATION if dev_split == "validation" else TEST))
    text = np.array([str(v).strip().lower() for v in values], dtype=object)
    mapped = np.array([names.get(v, "") for v in text], dtype=object)
    unknown = sorted({str(v) for v, m in zip(values, mapped, strict=True) if not m})
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(
            f"{source}: unknown split value(s) {shown}; expected train, validation, test "
            "(dev/val/valid count as validation, or as test with data.dev_split=test)"
        )
    return mapped.astype(str)


def split_folders(root: Path, dev_split: str = "validation") -> list[tuple[str, Path]] | None:
    """The split folders of an image tree (`train/`, `val/`, `test/`, ...) with each one's split,
    or None when `root` has no `train/` folder (its sub-folders are then the classes).

    Two folders that name one split (`val/` and `dev/`) are refused with one line.
    """
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    named = [p for p in subdirs if p.name.lower() in SPLIT_FOLDERS]
    if not any(p.name.lower() in ("train", "training") for p in named):
        return None
    splits = split_names([p.name for p in named], f"{root}: split folders", dev_split)
    if len(set(splits)) < len(splits):
        raise DataError(
            f"{root}: two folders name the same split ({', '.join(p.name for p in named)})"
        )
    return list(zip(splits.tolist(), named, strict=True))
