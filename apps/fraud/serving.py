"""What a run ships and how it is served: the shipped model's score from the scorer's outputs
(a network's own output, or a scikit-learn model on the scorer's `model_features`, or the
blend of the network and gradient boosting), and the exported folder that serves it outside
this project (the SavedModel, plus the scikit-learn model as skops and `serving.json`).

Gradient boosting stays a scikit-learn model scored by scikit-learn rather than being
converted to Keras: the converted trees would have to reproduce scikit-learn's binning,
missing-value routing and categorical bitsets exactly, and any mismatch would silently change
the shipped scores; skops keeps it the model that was measured, loadable without pickle.
"""

import shutil
from pathlib import Path

import numpy as np

from apps.fraud import baselines as sk
from apps.fraud.features import FeatureSpec
from apps.fraud.model import FEATURES_OUTPUT, NETWORKS, Meta, write_saved_model
from shared.io import write_json
from shared.run import RunDir

EXTRA = "assets.extra"  # TensorFlow Serving's folder for files beside a SavedModel
SERVING_FILE = "serving.json"


def needed_baselines(decision: str) -> list[str]:
    """The scikit-learn models the shipped model's score needs."""
    if decision == sk.BLEND:
        return ["hist_gradient_boosting"]
    return [decision] if decision in sk.BASELINES else []


def load_baselines(run: RunDir, meta: Meta) -> dict:
    return {
        name: sk.load(run.path / "baselines" / f"{name}.skops")
        for name in needed_baselines(meta.decision_model)
    }


def risk_scores(meta: Meta, outputs: dict, fitted: dict) -> np.ndarray:
    """The shipped model's score per row from the scorer's outputs and the loaded baselines."""
    decision = meta.decision_model
    if decision in NETWORKS:
        return np.asarray(outputs[NETWORKS[decision]], np.float64)
    matrix = np.asarray(outputs[FEATURES_OUTPUT], np.float64)
    sizes = [meta.vocabulary_sizes[c] for c in meta.categorical_inputs]
    n = len(meta.model_numeric)
    if decision == sk.BLEND:
        boosting = sk.predict(
            "hist_gradient_boosting", fitted["hist_gradient_boosting"], matrix, n, sizes
        )
        return sk.blend(meta.blend_weight, outputs[NETWORKS["network"]], boosting)
    return sk.predict(decision, fitted[decision], matrix, n, sizes)


def serving_recipe(meta: Meta, engineered: list[str]) -> dict:
    """`serving.json`: how to turn the SavedModel's outputs into the shipped score and decision,
    with no code from this project."""
    decision = meta.decision_model
    n_numeric = len(meta.model_numeric)
    recipe = {
        "selected_model": decision,
        "threshold": meta.threshold,
        "decision": "flag when score >= threshold",
        "inputs": (
            "raw columns plus the engineered columns listed in engineered_inputs (history "
            "and calendar features; compute them as the app's FeatureBuilder does)"
            if engineered
            else "raw columns, as the training file names them"
        ),
        "engineered_inputs": engineered,
        "model_features": {
            "output": FEATURES_OUTPUT,
            "numeric_columns": n_numeric,
            "category_sizes": [meta.vocabulary_sizes[c] for c in meta.categorical_inputs],
        },
    }
    if decision in NETWORKS:
        recipe["score"] = f"the SavedModel output {NETWORKS[decision]}"
    elif decision == sk.BLEND:
        recipe["score"] = (
            f"{meta.blend_weight} * fraud_probability + {1 - meta.blend_weight:.6g} * "
            "hist_gradient_boosting.predict_proba(model_features)[:, 1]"
        )
        recipe["blend_weight"] = meta.blend_weight
    elif decision == "hist_gradient_boosting":
        recipe["score"] = "hist_gradient_boosting.predict_proba(model_features)[:, 1]"
    else:
        recipe["score"] = (
            f"{decision}.predict_proba(hstack(model_features[:, :{n_numeric}], one-hot of each "
            "category id column with category_sizes[i] + 1 values))[:, 1]"
        )
    recipe["skops_files"] = {n: f"{n}.skops" for n in needed_baselines(decision)}
    recipe["skops_trusted"] = sk.TRUSTED  # skops.io.load(path, trusted=...): nothing else
    return recipe


def write_export(model, folder: str, run: RunDir, meta: Meta) -> None:
    """The SavedModel, and in its assets.extra/ the skops file(s) and serving.json."""
    write_saved_model(model, folder)
    extra = Path(folder) / EXTRA
    extra.mkdir(exist_ok=True)
    for name in needed_baselines(meta.decision_model):
        shutil.copyfile(run.path / "baselines" / f"{name}.skops", extra / f"{name}.skops")
    engineered = [c for c in meta.numeric_inputs if c in _engineered(meta)]
    write_json(extra / SERVING_FILE, serving_recipe(meta, engineered))


def _engineered(meta: Meta) -> set[str]:
    return set(FeatureSpec(**meta.feature_spec).feature_names())


def describe(meta: Meta) -> str:
    return f"{meta.input}; ships {meta.decision_model}, recipe in {EXTRA}/{SERVING_FILE}"
