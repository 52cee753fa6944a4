"""The vision sample: scikit-learn's digits written once as an image folder."""

import numpy as np
from PIL import Image

from apps.vision.sample import write_digits


def test_digits_sample_is_written_once(tmp_path):
    folder = tmp_path / "digits"
    write_digits(folder)
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 1797 and {f.parent.name for f in files} == {str(d) for d in range(10)}
    image = np.asarray(Image.open(files[0]))
    assert image.shape == (8, 8) and image.dtype == np.uint8 and image.max() > 200
    stamp = (folder / ".complete").stat().st_mtime_ns
    write_digits(folder)
    assert (folder / ".complete").stat().st_mtime_ns == stamp
