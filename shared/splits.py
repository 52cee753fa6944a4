"""Splits that come with the data: one reading of split names for every reader.

A split column (`data.split_column`) or split folders name each row's split. `train`,
`validation` and `test` mean what they say; `dev` and `val` (and `valid`) are validation by
default, or the test set where the data uses them so (`data.dev_split=test`, as in datasets that
publish only train and dev). Any other value stops `prepare` with one line naming it: a row
silently moved to the training set would leak or vanish.
"""

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
