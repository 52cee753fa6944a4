"""The vision exports: a SavedModel that takes encoded image files and names its classes, and
LiteRT files whose test accuracy is checked against the Keras model's."""

import json

import numpy as np
import tensorflow as tf
from PIL import Image

from apps.vision.model import Meta, load_model
from shared.run import RunDir
from tests.apps.vision.conftest import cli


def _run(root) -> RunDir:
    return RunDir((root / "runs" / "vision" / "latest").resolve())


def test_saved_model_serves_png_bytes_and_carries_the_class_names(trained, tmp_path):
    root, _ = trained
    run = _run(root)  # train wrote saved_model/ as `export` does (the contract checks that)
    meta = Meta.read(run)
    served = tf.saved_model.load(str(run.saved_model_path))
    carried = served.signatures["metadata"]()
    assert [c.decode() for c in carried["class_names"].numpy()] == meta.class_names
    mode = "RGB" if meta.channels == 3 else "L"
    image = np.asarray(Image.open(root / "images" / "dots" / "0.png").convert(mode))
    image = image.reshape(*image.shape[:2], meta.channels)
    path = tmp_path / "x.png"
    Image.fromarray(image.squeeze(-1) if meta.channels == 1 else image).save(path)
    from_bytes = served.serve_bytes(tf.constant([path.read_bytes()])).numpy()
    resized = tf.image.resize(image[None], meta.image_size, antialias=True)
    fixed = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(from_bytes, load_model(run).predict(fixed, verbose=0), atol=1e-5)


def test_tflite_float16_and_int8_accuracy_beside_the_keras_model(trained, tmp_path, capsys):
    _, sets = trained
    out = tmp_path / "edge"
    assert cli("export", *sets, "--set", "export.format=tflite", "--output", str(out)) == 0
    parity = json.loads((out / "tflite_parity.json").read_text())
    lines = [line for line in capsys.readouterr().out.splitlines() if "LiteRT" in line]
    assert len(lines) == 2 and all("vs Keras" in line and "points" in line for line in lines)
    for mode in ("float16", "int8"):
        assert (out / f"model-{mode}.tflite").stat().st_size == parity[mode]["bytes"] > 0
    assert parity["float16"]["accuracy"] == parity["keras"]["accuracy"]
    assert abs(parity["int8"]["accuracy"] - parity["keras"]["accuracy"]) <= 0.2  # 1 of 5
