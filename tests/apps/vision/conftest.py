"""Tiny image datasets written in the formats the vision readers take, and one tiny trained
run that the pipeline and contract tests share."""

import numpy as np
import pytest
from PIL import Image

from shared.cli import main

CLASSES = ("horizontal", "vertical", "dots")
SMOKE = "apps/vision/configs/smoke.yaml"


def pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 16-px-ish uint8 image whose class is easy to learn: stripes one way or the other, or
    dots."""
    grid = np.indices((size, size))
    phase = rng.integers(0, 4)
    if label == 0:
        base = (grid[0] + phase) % 4 < 2
    elif label == 1:
        base = (grid[1] + phase) % 4 < 2
    else:
        base = ((grid[0] + phase) % 4 == 0) & ((grid[1] + phase) % 4 == 0)
    noise = rng.normal(0, 20, (size, size))
    return np.clip(base * 200 + 30 + noise, 0, 255).astype(np.uint8)


def write_folder(root, per_class: int = 10, seed: int = 0, sizes=(16, 20)):
    """root/<class>/*.png (gray and RGB, two sizes) and a few JPEG/BMP files."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = pattern(label, sizes[i % len(sizes)], rng)
            pil = Image.fromarray(image, mode="L")
            if i % 3 == 1:
                pil.convert("RGB").save(folder / f"{i}.png")
            elif i % 5 == 4:
                pil.save(folder / f"{i}.bmp")
            else:
                pil.save(folder / f"{i}.png")
    return root


def arrays(n_per_class: int = 8, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.stack([pattern(c, size, rng) for c in range(3) for _ in range(n_per_class)])
    y = np.repeat(np.arange(3), n_per_class).astype(np.uint8)
    return x, y


@pytest.fixture
def image_folder(tmp_path):
    return write_folder(tmp_path / "images")


def write_hymenoptera(root, per_class=(8, 5), seed: int = 0):
    """The hymenoptera_data layout: train/{ants,bees}/*.jpg and val/{ants,bees}/*.jpg, JPEGs of
    several sizes, plus the placeholder train/ants/imageNotFound.gif the published zip ships."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_class, strict=True):
        for label, name in enumerate(("ants", "bees")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (24, 32, 40)[i % 3]
                gray = pattern(label, size, rng)
                rgb = np.stack([gray, gray, np.full_like(gray, 90)], axis=-1)
                Image.fromarray(rgb).resize((size + 8 * (i % 2), size)).save(folder / f"{i}.jpg")
    Image.new("P", (30, 30), 3).save(root / "train" / "ants" / "imageNotFound.gif")
    return root


def cli(*args) -> int:
    return main(["vision", *args])


def tiny_sets(root, images, *extra) -> list[str]:
    """CLI arguments of a tiny run on `images`: the smoke config, a one-stage CNN, 2 epochs,
    runs under `root`/runs, and `extra` "key=value" overrides."""
    sets = {
        "run.root": root / "runs",
        "data.source": "files",
        "data.path": images,
        "model.filters": "[8]",
        "train.epochs": 2,
        "train.batch_size": 8,
        "evaluate.gradcam_images": 3,
    }
    args = ["--config", SMOKE]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    for item in extra:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A prepared, trained and evaluated run on 30 pattern images: (root, its CLI arguments)."""
    root = tmp_path_factory.mktemp("vision")
    images = write_folder(root / "images", per_class=10)
    sets = tiny_sets(root, images)
    assert cli("prepare", *sets) == 0
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    return root, sets
