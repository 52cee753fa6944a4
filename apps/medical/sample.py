"""A seeded generator of chest-radiograph-like images, so the app runs without patient data.

Each patient gets an anatomy (body outline, two lung fields, heart shadow, spine, ribs) and one
to three images of it (small changes of position and exposure). About a third of the patients
are abnormal: every image of theirs carries nodules (small round opacities) or a diffuse
opacity (a large faint patch in a lung field) of varying size and contrast, some of them
faint enough that the task is not trivial. Images are written MedMNIST-style as NPZ (split by
patient, with the patient ids), plus a few DICOM files written with pydicom.
"""

from pathlib import Path

import numpy as np

from apps.medical.dicom import write_dicom
from shared.io import atomic_path, generated_is_current, record_generated

CLASS_NAMES = ["normal", "abnormal"]
PREVALENCE = 0.3  # share of abnormal patients
SPLIT_SHARES = (0.7, 0.15, 0.15)  # train, val, test (of patients)


def _soft(distance: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (distance < 1), 0 outside, with a smooth edge of width `edge`."""
    return 1.0 / (1.0 + np.exp(np.clip((distance - 1.0) / edge, -30, 30)))


def _anatomy(rng: np.random.Generator) -> dict:
    return {
        "body": rng.uniform(0.78, 0.92),
        "lung_x": rng.uniform(0.34, 0.42),
        "lung_rx": rng.uniform(0.2, 0.26),
        "lung_ry": rng.uniform(0.45, 0.56),
        "heart": rng.uniform(0.18, 0.26),
        "rib_gap": rng.uniform(0.15, 0.19),
        "rib_curve": rng.uniform(0.2, 0.35),
    }


def _lesions(rng: np.random.Generator, anatomy: dict) -> list[tuple]:
    """(y, x, sigma, amplitude) blobs inside a lung field: nodules or one diffuse opacity."""
    side = rng.choice([-1.0, 1.0])
    if rng.random() < 0.5:
        blobs = []
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-1.0, 1.0])
            y = rng.uniform(-0.35, 0.35) * anatomy["lung_ry"] / 0.5
            x = side * anatomy["lung_x"] + rng.uniform(-0.6, 0.6) * anatomy["lung_rx"]
            blobs.append((y, x, rng.uniform(0.035, 0.08), rng.uniform(0.1, 0.35)))
        return blobs
    y = rng.uniform(-0.1, 0.3)
    x = side * anatomy["lung_x"] + rng.uniform(-0.3, 0.3) * anatomy["lung_rx"]
    return [(y, x, rng.uniform(0.12, 0.25), rng.uniform(0.08, 0.2))]


def render(anatomy: dict, lesions: list[tuple], size: int, rng: np.random.Generator) -> np.ndarray:
    """One grayscale uint8 (size, size) radiograph-like image."""
    shift = rng.normal(0, 0.03, 2)
    y, x = np.meshgrid(
        np.linspace(-1, 1, size) + shift[0], np.linspace(-1, 1, size) + shift[1], indexing="ij"
    )
    edge = 2.0 / size
    body = _soft(np.sqrt((x / anatomy["body"]) ** 2 + (y / 1.05) ** 2), 2 * edge)
    image = 0.08 + 0.5 * body
    lungs = sum(
        _soft(
            np.sqrt(
                ((x - s * anatomy["lung_x"]) / anatomy["lung_rx"]) ** 2
                + ((y + 0.05) / anatomy["lung_ry"]) ** 2
            ),
            3 * edge,
        )
        for s in (-1.0, 1.0)
    )
    image -= 0.32 * lungs
    ribs = np.zeros_like(x)
    for k in range(-4, 5):
        centre = k * anatomy["rib_gap"] - 0.05 + anatomy["rib_curve"] * x**2
        ribs += np.exp(-(((y - centre) / 0.022) ** 2))
    image += 0.1 * np.clip(ribs, 0, 1) * lungs
    heart = _soft(np.sqrt(((x - 0.1) / anatomy["heart"]) ** 2 + ((y - 0.3) / 0.22) ** 2), 3 * edge)
    spine = np.exp(-((x / 0.07) ** 2)) * body
    image += 0.22 * heart + 0.18 * spine
    for ly, lx, sigma, amplitude in lesions:
        blob = np.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * sigma**2))
        image += amplitude * blob * np.clip(lungs, 0, 1)
    image += 0.04 * (rng.normal() * x + rng.normal() * y)  # uneven exposure
    image += rng.normal(0, 0.03, image.shape)
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05)
    return np.clip(np.round((image * gain + offset) * 255), 0, 255).astype(np.uint8)


def generate(n_images: int, size: int, seed: int) -> dict:
    """Arrays by split: `{split}_images` (n, size, size), `{split}_labels` and
    `{split}_patient_ids`, plus `class_names`."""
    rng = np.random.default_rng(seed)
    images, labels, patients = [], [], []
    patient = 0
    while len(images) < n_images:
        anatomy = _anatomy(rng)
        abnormal = rng.random() < PREVALENCE
        for _ in range(min(rng.integers(1, 4), n_images - len(images))):
            lesions = _lesions(rng, anatomy) if abnormal else []
            images.append(render(anatomy, lesions, size, rng))
            labels.append(int(abnormal))
            patients.append(f"P{patient:05d}")
        patient += 1
    images, labels, patients = np.stack(images), np.array(labels, np.uint8), np.array(patients)
    unique = rng.permutation(np.unique(patients))
    cuts = np.cumsum([int(round(share * len(unique))) for share in SPLIT_SHARES[:2]])
    groups = np.split(unique, cuts)
    out = {}
    for split, members in zip(("train", "val", "test"), groups, strict=True):
        index = np.flatnonzero(np.isin(patients, members))
        out[f"{split}_images"] = images[index]
        out[f"{split}_labels"] = labels[index]
        out[f"{split}_patient_ids"] = patients[index]
    out["class_names"] = np.array(CLASS_NAMES)
    return out


def write_sample(path: str | Path, n_images: int, size: int, seed: int) -> bool:
    """Write the NPZ sample and a few DICOM files beside it unless they match the parameters."""
    path = Path(path)
    params = {"generator": "chest-v1", "images": n_images, "size": size, "seed": seed}
    if generated_is_current(path, params):
        return False
    arrays = generate(n_images, size, seed)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    write_dicom_examples(
        path.parent / "dicom",
        arrays["test_images"][:8],
        arrays["test_labels"][:8],
        arrays["test_patient_ids"][:8],
    )
    record_generated(path, params)
    print(
        f"prepare: generated {n_images:,} chest-like images ({size}x{size}) -> {path}", flush=True
    )
    return True


def write_dicom_examples(folder: Path, images, labels, patients) -> list[Path]:
    """DICOM files in `folder/<class>/` exercising the reader: window tags or none,
    MONOCHROME1, and a modality rescale (RescaleSlope/Intercept)."""
    written = []
    for i, (image, label, patient) in enumerate(zip(images, labels, patients, strict=True)):
        target = Path(folder) / CLASS_NAMES[int(label)] / f"image{i:02d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        share = image.astype(np.float64) / 255.0
        variant = i % 4
        if variant == 0:  # plain 12-bit values with the window in the file
            stored, kwargs = share * 4000, {"window": (2000.0, 4000.0)}
        elif variant == 1:  # no window tags: the reader falls back to the image's range
            stored, kwargs = share * 4000, {}
        elif variant == 2:  # MONOCHROME1: low stored values are bright
            stored, kwargs = (
                (1 - share) * 4000,
                {"photometric": "MONOCHROME1", "window": (2000.0, 4000.0)},
            )
        else:  # rescaled to Hounsfield-like units: value = stored * 0.5 - 1024
            stored = (share * 2000 - 1000 + 1024) / 0.5
            kwargs = {"slope": 0.5, "intercept": -1024.0, "window": (0.0, 2000.0)}
        written.append(write_dicom(target, np.round(stored), str(patient), **kwargs))
    return written


def write_scoring_samples(folder: str | Path, seed: int = 11) -> list[Path]:
    """The small committed scoring sample: PNGs, DICOM variants, a DICOM without pixel data and
    a truncated DICOM (the last two must land in the rejects)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for abnormal in (0, 1, 0, 1, 0, 1, 0, 1):
        anatomy = _anatomy(rng)
        images.append(render(anatomy, _lesions(rng, anatomy) if abnormal else [], 64, rng))
        labels.append(abnormal)
    written = []
    for i in range(4):
        target = folder / f"{CLASS_NAMES[labels[i]]}_{i:02d}.png"
        with atomic_path(target, suffix=".png") as tmp:
            Image.fromarray(images[i], mode="L").save(tmp, format="PNG")
        written.append(target)
    dicoms = write_dicom_examples(
        folder / "dicom", images[4:], labels[4:], [f"S{i:03d}" for i in range(4, 8)]
    )
    for path in dicoms:  # flat names: the sample is for scoring, not training
        written.append(path.rename(folder / "dicom" / f"{path.parent.name}_{path.name}"))
    for path in dicoms:
        if path.parent.exists() and not any(path.parent.iterdir()):
            path.parent.rmdir()
    written.append(
        write_dicom(
            folder / "dicom" / "no_pixel_data.dcm", np.zeros((64, 64)), "S900", pixel_data=False
        )
    )
    truncated = folder / "dicom" / "truncated.dcm"
    raw = written[4].read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    written.append(truncated)
    return written
