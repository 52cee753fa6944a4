"""Pixels + logistic regression (scikit-learn): the classic image baseline beside the network.

Every pixel of the image at the model's size, scaled to [0, 1] and standardised, is one feature
of a multinomial logistic regression. The inverse L2 strength C is chosen from a small grid on
the validation log-loss, the criterion the network's best checkpoint is chosen by. The fitted
state is plain arrays saved as NPZ (no pickle), so `evaluate` predicts with NumPy alone.
"""

import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from shared.io import atomic_path, read_json, write_json

NAME = "pixels_logreg"  # the baseline's name in metrics.json and the leaderboard


def pixel_features(images: np.ndarray, image_size) -> np.ndarray:
    """uint8 images (n, h, w, c) as float32 rows of pixels in [0, 1], at `image_size`.

    Resized the way the network's own Resizing layer does (bilinear, antialiased) when the
    stored size differs, so both models see the same pixels.
    """
    images = np.asarray(images)
    if tuple(images.shape[1:3]) != tuple(image_size):
        resized = tf.image.resize(images.astype(np.float32), image_size, antialias=True)
        images = np.clip(np.round(resized.numpy()), 0, 255)
    return (images.reshape(len(images), -1) / 255.0).astype(np.float32)


def subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row indices of at most `limit` rows, stratified by label and seeded (all rows if fewer)."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    strata = None  # multi-label rows are drawn plainly
    if labels.ndim == 1:
        counts = np.bincount(labels)
        strata = labels if counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(
        np.arange(len(labels)), train_size=limit, random_state=seed, stratify=strata
    )
    return np.sort(keep)


class PixelLogisticRegression:
    """Standardised pixels -> softmax over `n_classes` (or a sigmoid per finding), C picked on
    the validation log-loss.

    Args:
        n_classes: the task's classes (a class absent from the train split gets probability 0),
            or findings with `multilabel`.
        grid: the C values tried.
        max_iter: lbfgs iterations per fit.
        class_weight: per-class loss weights (as the network's), or None.
        multilabel: labels are (n, k) 0/1 findings, each its own binary regression.
    """

    def __init__(self, n_classes: int, grid, max_iter=300, class_weight=None, multilabel=False):
        if n_classes < (1 if multilabel else 2) or not grid:
            raise ValueError(f"need 2+ classes and a C grid. Received: {n_classes=}, {grid=}")
        self.n_classes, self.grid, self.multilabel = n_classes, list(grid), bool(multilabel)
        self.max_iter, self.class_weight = max_iter, class_weight

    def fit(self, x, y, x_val, y_val) -> "PixelLogisticRegression":
        """Fit on (x, y) for every C, keep the one with the lowest log-loss on (x_val, y_val)."""
        start = time.perf_counter()
        x, y = np.asarray(x, np.float32), np.asarray(y)
        self.train_images_ = len(y)
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
        z, z_val = self._standardise(x), self._standardise(x_val)
        self.val_log_loss_, self.converged_, best = {}, {}, None
        for c in self.grid:
            # One BLAS thread: OpenBLAS threads spinning against TensorFlow's thread pools made
            # this fit 60 times slower on two cores. Convergence is recorded, not warned about.
            with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.converged_[c] = self._fit_at(z, y, c)
            loss = self._log_loss(np.asarray(y_val), self._proba(z_val))
            self.val_log_loss_[c] = loss
            if best is None or loss < best[0]:
                best = (loss, c, self.coef_, self.intercept_)
        _, self.C_, self.coef_, self.intercept_ = best
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def summary(self) -> dict:
        """What was fitted and how C was chosen, for the run folder and the model card."""
        return {
            "C": self.C_,
            "val_log_loss": {f"{c:g}": round(v, 6) for c, v in self.val_log_loss_.items()},
            "converged": {f"{c:g}": v for c, v in self.converged_.items()},
            "train_images": self.train_images_,
            "features": int(self.coef_.shape[1]),
        }

    def predict_proba(self, x) -> np.ndarray:
        return self._proba(self._standardise(x))

    def save(self, path: str | Path) -> None:
        arrays = {k: getattr(self, k) for k in ("mean_", "scale_", "coef_", "intercept_")}
        with atomic_path(Path(path), suffix=".npz") as tmp:
            np.savez(tmp, multilabel=np.array(self.multilabel), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "PixelLogisticRegression":
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        model = cls.__new__(cls)  # a fitted state: no grid to search
        model.n_classes, model.multilabel = len(arrays["intercept_"]), bool(arrays["multilabel"])
        for key in ("mean_", "scale_", "coef_", "intercept_"):
            setattr(model, key, arrays[key])
        return model

    def _standardise(self, x) -> np.ndarray:
        return (np.asarray(x, np.float32) - self.mean_) / self.scale_

    def _fit_at(self, z, y, c: float) -> bool:
        """Fit at C = `c` into (n_classes, d) logit weights; True when lbfgs converged.

        Softmax of [0, z] is the binary sigmoid; a class (or a finding's value) the train split
        lacks gets an impossible logit.
        """
        self.coef_ = np.zeros((self.n_classes, z.shape[1]), np.float32)
        self.intercept_ = np.full(self.n_classes, -1e4, np.float32)
        columns = [y[:, k].astype(int) for k in range(self.n_classes)] if self.multilabel else [y]
        converged = True
        for k, target in enumerate(columns):
            classes = np.unique(target)
            if len(classes) < 2:  # one value in train: that value is certain
                if self.multilabel:
                    self.intercept_[k] = 1e4 if classes[0] else -1e4
                else:
                    self.intercept_[classes[0]] = 0.0
                continue
            weight = None if self.multilabel else self.class_weight
            model = LogisticRegression(C=c, max_iter=self.max_iter, class_weight=weight)
            model.fit(z, target)
            converged &= bool(np.max(model.n_iter_) < self.max_iter)
            if self.multilabel:
                self.coef_[k], self.intercept_[k] = model.coef_[0], model.intercept_[0]
            elif len(classes) == 2:
                self.coef_[classes[1]], self.intercept_[classes[1]] = (
                    model.coef_[0],
                    model.intercept_[0],
                )
                self.intercept_[classes[0]] = 0.0
            else:
                self.coef_[classes], self.intercept_[classes] = model.coef_, model.intercept_
        return converged

    def _log_loss(self, y, prob) -> float:
        if not self.multilabel:
            return float(log_loss(y, prob, labels=range(self.n_classes)))
        return float(
            np.mean([log_loss(y[:, k], prob[:, k], labels=[0, 1]) for k in range(self.n_classes)])
        )

    def _proba(self, z) -> np.ndarray:
        logits = z @ self.coef_.T + self.intercept_
        if self.multilabel:
            return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def save_fitted(model: PixelLogisticRegression, folder: Path, seconds: float) -> None:
    """Save a fitted baseline and what it was fitted on into a run's baselines/ folder."""
    model.save(folder / f"{NAME}.npz")
    write_json(folder / f"{NAME}.json", model.summary() | {"fit_seconds": round(seconds, 2)})
    print(
        f"train: baseline {NAME} (C {model.C_:g}, {model.train_images_:,} images, "
        f"{model.coef_.shape[1]:,} pixels each) fitted in {seconds:.1f}s",
        flush=True,
    )


def load_fitted(folder: Path) -> tuple[PixelLogisticRegression, dict] | None:
    """The baseline saved in a run's baselines/ folder and its summary; None if there is none."""
    path = folder / f"{NAME}.npz"
    if not path.exists():
        return None
    return PixelLogisticRegression.load(path), read_json(path.with_suffix(".json"))
