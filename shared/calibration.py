"""Temperature scaling (Guo et al., 2017): one scalar that divides the logits, fitted on held-out
data by minimising the negative log-likelihood. It changes how confident a model is, never its
ranking, so ROC-AUC and the argmax stay as they were.

On a small validation split the NLL optimum can make calibration worse (a temperature below 1
on an overconfident-looking few hundred images), so `choose_temperature` keeps T = 1 unless the
fitted one also lowers the validation ECE.
"""

import dataclasses

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


@dataclasses.dataclass(frozen=True)
class TemperatureChoice:
    """The temperature a model ships with, and why."""

    temperature: float  # the one applied: `fitted`, or 1.0 when it did not lower the ECE
    fitted: float  # the NLL optimum in T_RANGE
    ece_at_one: float  # validation ECE at T = 1
    ece_at_fitted: float  # validation ECE at `fitted`
    kept_one: bool  # True: the fitted temperature did not (reliably) lower the validation ECE
    wins: float = float("nan")  # share of paired bootstrap resamples where `fitted` was lower


CONFIDENCE = 0.9  # share of paired resamples in which the fitted T must lower the ECE


def choose_temperature(
    logits, y, ece_of, multilabel: bool = False, n_boot: int = 0, seed: int = 0
) -> TemperatureChoice:
    """The NLL-fitted temperature when it lowers `ece_of(probabilities, y)` on these
    (validation) rows, else 1.0. With `n_boot` > 0 the gain must also hold in at least
    CONFIDENCE of paired bootstrap resamples of the rows: on a hundred-odd validation images
    a gain of a few thousandths is noise, and shipping it made test ECE worse."""
    y = np.asarray(y)
    fitted = fit_temperature(logits, y, multilabel)
    at_one_prob = scaled_probabilities(logits, 1.0, multilabel)
    at_fitted_prob = scaled_probabilities(logits, fitted, multilabel)
    at_one, at_fitted = float(ece_of(at_one_prob, y)), float(ece_of(at_fitted_prob, y))
    wins = float("nan")
    better = at_fitted < at_one
    if better and n_boot:
        rng = np.random.default_rng(seed)
        draws = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]
        wins = float(
            np.mean([ece_of(at_fitted_prob[i], y[i]) < ece_of(at_one_prob[i], y[i]) for i in draws])
        )
        better = wins >= CONFIDENCE
    return TemperatureChoice(fitted if better else 1.0, fitted, at_one, at_fitted, not better, wins)
