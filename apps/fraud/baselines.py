"""The fraud app's scikit-learn models: the logistic-regression and gradient-boosting baselines,
the Isolation Forest beside the autoencoder, the network + gradient-boosting blend, and saving
and loading them with skops (never pickle).

Every one of them reads the matrix the Keras preprocessor computes (`model_features`: the
standardised numerics, then one category id per categorical column), which the scorer outputs
beside the networks' scores; so scoring, the exported SavedModel and training all feed the
same numbers, and no category lookup is written twice.
"""

import time
from pathlib import Path

import numpy as np
import skops.io
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.linear_model import LogisticRegression

from apps.fraud.data import input_name
from shared.io import DataError, atomic_path

SUPERVISED = ("logistic_regression", "hist_gradient_boosting")
ANOMALY = ("isolation_forest",)
BASELINES = SUPERVISED + ANOMALY
BLEND = "blend"
BLEND_WEIGHTS = np.round(np.arange(0.05, 1.0, 0.05), 2)  # the network's share; 0 and 1 are
# the two models alone, which the selection already compares
# What skops may rebuild beyond its own default trusted types: exactly the parts of the three
# estimators above (checked on load, so a file holding anything else is refused).
TRUSTED = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
    "sklearn.tree._tree.Tree",
]


def model_features(features: dict, categorical: list[str]) -> np.ndarray:
    """The preprocessor's outputs as one float matrix: numerics, then category ids (in the
    order of the `categorical` columns), as the scorer's `model_features` output holds them."""
    ids = [features[f"cat_{input_name(c)}"].reshape(-1, 1).astype(np.float64) for c in categorical]
    return np.hstack([features["numeric"].astype(np.float64), *ids])


def one_hot(matrix: np.ndarray, n_numeric: int, vocabulary_sizes: list[int]) -> sparse.csr_matrix:
    """Numerics plus one-hot category ids (id 0: unknown), for the linear and isolation models."""
    blocks = [sparse.csr_matrix(matrix[:, :n_numeric])]
    for offset, size in enumerate(vocabulary_sizes):
        ids = np.clip(matrix[:, n_numeric + offset].astype(np.int64), 0, size)
        rows = np.arange(len(ids))
        blocks.append(
            sparse.csr_matrix((np.ones(len(ids)), (rows, ids)), shape=(len(ids), size + 1))
        )
    return sparse.hstack(blocks).tocsr()


def build(name: str, n_numeric: int, vocabulary_sizes: list[int], seed: int):
    """A fresh baseline: scikit-learn's sensible defaults, the same for every table."""
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced")
    if name == "isolation_forest":
        return IsolationForest(n_estimators=200, random_state=seed)
    # Native categorical splits for columns that fit HGB's 255 bins; wider ones stay ordinal.
    mask = [False] * n_numeric + [size + 1 < 255 for size in vocabulary_sizes]
    return HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        categorical_features=np.array(mask) if any(mask) else None,
        random_state=seed,
    )


def fit_all(matrices: dict, labels: dict, n_numeric: int, sizes: list[int], seed: int) -> tuple:
    """Fit every baseline on the training matrix: ({name: fitted model}, {name: fit seconds}).
    The Isolation Forest, like the autoencoder, never sees a label: it fits negatives only."""
    models, seconds = {}, {}
    for name in BASELINES:
        model = build(name, n_numeric, sizes, seed)
        x, y = _inputs(name, matrices["train"], n_numeric, sizes), labels["train"]
        start = time.perf_counter()
        if name in ANOMALY:
            model.fit(x[y == 0])
        else:
            model.fit(x, y)
        models[name], seconds[name] = model, round(time.perf_counter() - start, 3)
    shown = ", ".join(f"{n.replace('_', ' ')} {s:.1f}s" for n, s in seconds.items())
    print(f"train: baselines fitted ({shown})", flush=True)
    return models, seconds


def _inputs(name: str, matrix: np.ndarray, n_numeric: int, sizes: list[int]):
    return matrix if name == "hist_gradient_boosting" else one_hot(matrix, n_numeric, sizes)


def predict(name: str, model, matrix: np.ndarray, n_numeric: int, sizes: list[int]) -> np.ndarray:
    """A baseline's score per row, higher = riskier (the forest's anomaly score is negated)."""
    x = _inputs(name, matrix, n_numeric, sizes)
    if name in ANOMALY:
        return -model.score_samples(x).astype(np.float64)
    return model.predict_proba(x)[:, 1].astype(np.float64)


def fit_blend(y, network: np.ndarray, boosting: np.ndarray, auprc) -> float:
    """The network's weight in `w * network + (1 - w) * boosting` with the best validation
    AUPRC (ties: the weight nearest an even blend)."""
    scored = [(auprc(y, w * network + (1 - w) * boosting), -abs(w - 0.5), w) for w in BLEND_WEIGHTS]
    return float(max(scored)[2])


def blend(weight: float, network: np.ndarray, boosting: np.ndarray) -> np.ndarray:
    return weight * np.asarray(network, np.float64) + (1 - weight) * np.asarray(boosting)


def save(model, path: Path) -> None:
    with atomic_path(path, suffix=".skops") as tmp:
        skops.io.dump(model, tmp)


def load(path: Path):
    """A skops file of one of the baselines; anything beyond the trusted types is refused."""
    if not Path(path).exists():
        raise DataError(f"{path}: no saved baseline; is this a finished training run?")
    untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED)
    if untrusted:
        raise DataError(f"{path}: refusing to load untrusted types {sorted(untrusted)}")
    return skops.io.load(path, trusted=TRUSTED)
