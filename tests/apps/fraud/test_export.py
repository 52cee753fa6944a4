"""The exported folder serves the shipped model on its own: a fresh Python process that imports
TensorFlow, skops and scikit-learn but nothing of this project reads the SavedModel and
assets.extra/serving.json and reproduces the `score` step's risk scores and decisions."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.model import Meta
from shared.run import RunDir
from shared.scoring import InputSchema
from tests.apps.fraud.conftest import cli

# Runs with `python -I` from an empty folder: no project folder on sys.path, so the only code
# is this script, TensorFlow, skops and scikit-learn, as at a serving site.
CONSUMER = r"""
import json, sys
import numpy as np, pandas as pd, skops.io, tensorflow as tf
from scipy import sparse

folder, rows_csv, out = sys.argv[1:]
recipe = json.load(open(f"{folder}/assets.extra/serving.json"))
serve = tf.saved_model.load(folder).signatures["serve"]
specs = serve.structured_input_signature[1]
rows = pd.read_csv(rows_csv, dtype=str, keep_default_na=False)
feed = {}
for name, spec in specs.items():
    values = rows[name].to_numpy().reshape(-1, 1)
    feed[name] = tf.constant(values if spec.dtype == tf.string else values.astype("float32"))
outputs = {k: v.numpy() for k, v in serve(**feed).items()}
features = outputs["model_features"].astype("float64")
model = recipe["selected_model"]
def load(name):
    path = f"{folder}/assets.extra/{recipe['skops_files'][name]}"
    return skops.io.load(path, trusted=recipe["skops_trusted"])
if model in ("network", "autoencoder"):
    score = outputs[{"network": "fraud_probability", "autoencoder": "anomaly_score"}[model]]
elif model == "hist_gradient_boosting":
    score = load(model).predict_proba(features)[:, 1]
elif model == "blend":
    w = recipe["blend_weight"]
    boost = load("hist_gradient_boosting").predict_proba(features)[:, 1]
    score = w * outputs["fraud_probability"] + (1 - w) * boost
else:
    n = recipe["model_features"]["numeric_columns"]
    blocks = [sparse.csr_matrix(features[:, :n])]
    for i, size in enumerate(recipe["model_features"]["category_sizes"]):
        ids = features[:, n + i].astype(int)
        blocks.append(sparse.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), ids)),
                                        shape=(len(ids), size + 1)))
    score = load(model).predict_proba(sparse.hstack(blocks).tocsr())[:, 1]
assert not any(m.startswith(("apps", "shared", "tests")) for m in sys.modules), "project import"
np.save(out, np.asarray(score, "float64").reshape(-1))
"""


def served_in_fresh_process(folder, rows_csv, tmp_path) -> np.ndarray:
    out = tmp_path / "served.npy"
    subprocess.run(
        [sys.executable, "-I", "-c", CONSUMER, str(folder), str(rows_csv), str(out)],
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    return np.load(out, allow_pickle=False)


def test_export_of_a_history_layout_serves_the_shipped_model_from_documented_inputs(
    trained, tmp_path
):
    root, sets = trained
    run = (root / "runs" / "fraud" / "latest").resolve()
    meta = Meta.read(RunDir(run))
    export = tmp_path / "export"
    assert cli("export", *sets, "--output", str(export)) == 0
    recipe = json.loads((export / "assets.extra" / "serving.json").read_text())
    assert recipe["selected_model"] == meta.decision_model
    assert recipe["threshold"] == meta.threshold
    # The generic layout's history features need the entity's earlier rows: the signature takes
    # them as columns, and serving.json says which.
    assert recipe["engineered_inputs"] and set(recipe["engineered_inputs"]) <= set(
        meta.numeric_inputs
    )
    raw = pd.read_csv(run / "test_split.csv", dtype=str, keep_default_na=False).head(40)
    typed, _ = InputSchema.from_dict(meta.schema).validate(raw)
    engineered = FeatureBuilder(FeatureSpec(**meta.feature_spec)).transform(typed)
    rows = pd.concat([typed, engineered], axis=1)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    raw.to_csv(tmp_path / "raw.csv", index=False)
    assert cli("score", *sets, "--input", str(tmp_path / "raw.csv")) == 0
    scored = pd.read_csv(tmp_path / "raw.scored.csv")
    served = served_in_fresh_process(export, tmp_path / "rows.csv", tmp_path)
    np.testing.assert_allclose(served, scored["risk_score"], atol=2e-6)
    flagged = served >= recipe["threshold"]
    near = np.isclose(served, recipe["threshold"], atol=1e-5)
    assert ((scored["decision"] == "flag") == flagged)[~near].all()
