"""What a hospital's scoring host gets: model.keras and the SavedModel, loaded in a fresh
Python process that imports keras and tensorflow only (no project code), agree with the run."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from apps.medical.model import Meta, load_model
from shared.run import RunDir
from tests.apps.medical.conftest import cli

HOST = r"""
import json, sys
import numpy as np
import keras
import tensorflow as tf

folder, keras_path, npy = sys.argv[1:4]
images = np.load(npy, allow_pickle=False)
model = keras.saving.load_model(keras_path, safe_mode=True)
served = tf.saved_model.load(folder)
encoded = [open(p, "rb").read() for p in sys.argv[4:]]
def plain(value):
    value = np.asarray(value.numpy()).tolist()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value.decode() if isinstance(value, bytes) else value


meta = {k: plain(v) for k, v in served.signatures["metadata"]().items()}
project = sorted(m for m in sys.modules if m.split(".")[0] in ("apps", "shared", "tests"))
print(json.dumps({
    "keras": model.predict(images, verbose=0).tolist(),
    "serve": served.serve(tf.constant(images)).numpy().tolist(),
    "bytes": served.serve_bytes(tf.constant(encoded)).numpy().tolist(),
    "signatures": sorted(served.signatures),
    "metadata": meta,
    "project_modules": project,
}))
"""


def test_model_keras_and_saved_model_run_in_a_host_without_the_project(trained, tmp_path):
    _, _, run = trained  # train wrote saved_model/ as `export` does (the contract checks that)
    meta = Meta.read(RunDir(run))
    with np.load(run / "test_split.npz", allow_pickle=False) as archive:
        images = archive["images"][:4]
    np.save(tmp_path / "images.npy", images)
    files = []
    for i, image in enumerate(images[:2]):  # the host receives files: PNG and JPEG bytes
        path = tmp_path / f"{i}.{'png' if i == 0 else 'jpg'}"
        Image.fromarray(image[..., 0]).save(path, quality=100)
        files.append(str(path))
    out = subprocess.run(
        [sys.executable, "-c", HOST, str(run / "saved_model"), str(run / "model.keras")]
        + [str(tmp_path / "images.npy"), *files],
        capture_output=True,
        text=True,
        check=True,
    )
    host = json.loads(out.stdout.strip().splitlines()[-1])
    assert host["project_modules"] == []
    expected = load_model(RunDir(run)).predict(images, verbose=0)
    np.testing.assert_allclose(host["keras"], expected, atol=1e-5)  # temperature included
    np.testing.assert_allclose(host["serve"], expected, atol=1e-5)
    np.testing.assert_allclose(host["bytes"][0], expected[0], atol=1e-5)  # PNG: lossless
    np.testing.assert_allclose(host["bytes"][1], expected[1], atol=0.05)  # JPEG: near
    assert {"serve", "serve_bytes", "metadata"} <= set(host["signatures"])
    carried = host["metadata"]
    assert carried["class_names"] == meta.class_names
    threshold = meta.operating_point.thresholds["abnormal"]
    assert carried["thresholds"][1] == np.float32(threshold) and np.isnan(carried["thresholds"][0])
    assert carried["temperature"] == np.float32(meta.temperature)
    assert carried["positive_class"] == "abnormal" and carried["task"] == "binary"


def test_tflite_float16_and_int8_scores_beside_the_keras_model(trained, tmp_path, capsys):
    _, sets, _ = trained
    out = tmp_path / "edge"
    assert cli("export", *sets, "--set", "export.format=tflite", "--output", str(out)) == 0
    parity = json.loads((out / "tflite_parity.json").read_text())
    printed = [line for line in capsys.readouterr().out.splitlines() if "LiteRT" in line]
    assert [line.split()[2] for line in printed] == ["float16", "int8"]
    keras_scores = parity["keras"]
    assert parity["float16"]["accuracy"] == keras_scores["accuracy"]
    assert abs(parity["float16"]["macro_roc_auc"] - keras_scores["macro_roc_auc"]) < 0.01
    # int8 on 18 test images: one image is 5.6 points; the quantised scores stay near.
    assert abs(parity["int8"]["accuracy"] - keras_scores["accuracy"]) <= 1 / 18 + 1e-9
    assert (out / "model-int8.tflite").stat().st_size == parity["int8"]["bytes"]
