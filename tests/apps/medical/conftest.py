"""Tiny medical datasets written in the public formats the readers take, and the one tiny
trained run that test_pipeline and test_contract share."""

import numpy as np
import pytest
from PIL import Image

from apps.medical.dicom import write_dicom
from shared.cli import main

SMOKE = "apps/medical/configs/smoke.yaml"


def cli(*args):
    return main(["medical", *args])


def tiny_sets(root, *extra, data=None):
    """CLI arguments of the smoke config, 2 epochs, with its run root (and data) under `root`."""
    sets = {
        "run.root": root / "runs",
        "data.path": data or root / "chest.npz",
        "train.epochs": 2,
        "evaluate.gradcam_per_group": 2,
    }
    if data is not None:
        sets["data.source"] = "files"
    args = ["--config", SMOKE]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    for item in extra:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A prepared, trained and evaluated run on the generated sample: (root, its CLI
    arguments, the run folder)."""
    root = tmp_path_factory.mktemp("medical")
    sets = tiny_sets(root)
    assert cli("prepare", *sets) == 0
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    return root, sets, (root / "runs" / "medical" / "latest").resolve()


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


def write_retinamnist(path, counts=(60, 20, 20), size: int = 12, seed: int = 0):
    """The RetinaMNIST layout: {train,val,test}_images (n, size, size, 3) uint8 RGB and
    {split}_labels (n, 1) uint8 grades 0-4, no patient ids; a brighter image is a higher grade."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        grades = np.arange(count) % 5
        base = rng.normal(40, 8, (count, size, size, 3)) + grades[:, None, None, None] * 40
        arrays[f"{split}_images"] = np.clip(base, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = grades[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


def write_dicom_as(path, pixels, syntax, photometric="MONOCHROME2", modality="OT", patient="P1"):
    """`pixels` (uint8 or uint16; (h, w), (h, w, 3) colour, or (frames, h, w)) as a DICOM file
    in the transfer syntax given: explicit or implicit VR little endian, explicit VR big endian
    or JPEG 2000 lossless (encoded by Pillow), the encodings of pydicom's own test files."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ExplicitVRBigEndian,
        JPEG2000Lossless,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID, dataset.Modality = patient, modality
    colour = photometric == "RGB"
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = (3 if colour else 1), photometric
    if colour:
        dataset.PlanarConfiguration = 0
    if not colour and pixels.ndim == 3:
        dataset.NumberOfFrames = len(pixels)
    dataset.Rows, dataset.Columns = pixels.shape[:2] if colour else pixels.shape[-2:]
    bits = pixels.dtype.itemsize * 8
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
    dataset.PixelRepresentation = 0
    if syntax == JPEG2000Lossless:
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="JPEG2000", irreversible=False)
        dataset.PixelData = encapsulate([encoded.getvalue()])
        dataset["PixelData"].VR = "OB"
    else:
        order = ">" if syntax == ExplicitVRBigEndian else "<"
        dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path
