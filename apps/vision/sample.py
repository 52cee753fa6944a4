"""The vision sample data: scikit-learn's bundled handwritten digits as an image folder."""

from pathlib import Path

import numpy as np

from shared.io import atomic_path


def write_digits(folder: Path) -> None:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images) as `folder/<digit>/*.png`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    stamp = folder / ".complete"
    if stamp.exists():
        return
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for index, (image, label) in enumerate(zip(images, digits.target, strict=True)):
        target = folder / str(label) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, suffix=".png") as tmp:
            Image.fromarray(image, mode="L").save(tmp, format="PNG")
    stamp.write_text(f"{len(images)} images from sklearn.datasets.load_digits\n")
    print(f"prepare: wrote {len(images):,} digit images to {folder}", flush=True)
