"""Temperature scaling (Guo et al., 2017): one scalar that divides the logits, fitted on held-out
data by minimising the negative log-likelihood. It changes how confident a model is, never its
ranking, so ROC-AUC and the argmax stay as they were.
"""

import numpy as np
from scipy.optimize import minimize_scalar

T_RANGE = (0.05, 20.0)  # temperatures searched (log-uniformly)


def scaled_probabilities(logits, temperature: float, multilabel: bool = False) -> np.ndarray:
    """Softmax (one class per row) or per-column sigmoid (multi-label) of `logits / temperature`."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    if multilabel:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits, y, temperature: float, multilabel: bool = False) -> float:
    """Mean NLL of labels `y` ((n,) class indices, or (n, k) 0/1 findings) at `temperature`."""
    prob = np.clip(scaled_probabilities(logits, temperature, multilabel), 1e-12, 1 - 1e-12)
    y = np.asarray(y)
    if multilabel:
        return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))
    return float(-np.mean(np.log(prob[np.arange(len(y)), y.astype(int)])))


def fit_temperature(logits, y, multilabel: bool = False) -> float:
    """The temperature in T_RANGE with the lowest NLL of `y` (1.0 when there is nothing to fit)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) != len(y):
        raise ValueError(
            f"expected logits (n, k) and n labels. Received: logits={logits.shape}, y={np.shape(y)}"
        )
    if len(y) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, y, float(np.exp(log_t)), multilabel),
        bounds=tuple(np.log(T_RANGE)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
