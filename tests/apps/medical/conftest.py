"""Tiny medical datasets written in the public formats the readers take."""

import numpy as np
import pytest
from PIL import Image

from apps.medical.dicom import write_dicom


def picture(abnormal: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 16-px uint8 'radiograph': a bright square blob marks an abnormal image."""
    image = rng.normal(60, 10, (size, size))
    if abnormal:
        y, x = rng.integers(2, size - 6, 2)
        image[y : y + 4, x : x + 4] += 150
    return np.clip(image, 0, 255).astype(np.uint8)


def write_npz(
    path,
    n: int = 64,
    size: int = 16,
    multilabel: bool = False,
    seed: int = 0,
    patients: bool = True,
):
    """MedMNIST-style NPZ: labels (n,) (or (n, 1)) or (n, 2) findings, own splits."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 4)):
        labels = rng.integers(0, 2, (count, 2) if multilabel else count)
        flags = labels.max(axis=1) if multilabel else labels
        arrays[f"{split}_images"] = np.stack([picture(f, size, rng) for f in flags])
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
        if patients:
            arrays[f"{split}_patient_ids"] = np.array([f"{split}-{i // 2}" for i in range(count)])
    np.savez(path, **arrays)
    return path


def write_png_folder(root, per_class: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("normal", "abnormal")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(picture(label, 16, rng)).save(root / name / f"{i}.png")
    return root


def dicom_of(image: np.ndarray, path, patient: str = "P1", **kwargs):
    """`image` (uint8) stored as 12-bit values 0..4000 (window 2000/4000 unless overridden)."""
    stored = np.round(image.astype(np.float64) / 255 * 4000)
    return write_dicom(path, stored, patient, **kwargs)


@pytest.fixture
def png_folder(tmp_path):
    return write_png_folder(tmp_path / "images")
