"""Pixels + logistic regression: what it learns, how C is chosen, its saved state."""

import numpy as np
import pytest

from shared.pixel_baseline import PixelLogisticRegression, pixel_features, subsample
from tests.apps.vision.conftest import arrays


def test_pixel_features_are_unit_pixels_at_the_models_size():
    x, _ = arrays(n_per_class=2, size=16)
    features = pixel_features(x[..., None], [8, 8])
    assert features.shape == (6, 64) and features.dtype == np.float32
    assert features.min() >= 0.0 and features.max() <= 1.0
    assert pixel_features(x[..., None], [16, 16]) == pytest.approx(x.reshape(6, -1) / 255.0)


def test_multiclass_fit_picks_c_on_validation_and_round_trips_through_npz(tmp_path):
    x, y = arrays(n_per_class=12, size=12, seed=1)
    xv, yv = arrays(n_per_class=4, size=12, seed=2)
    features, val = pixel_features(x[..., None], [12, 12]), pixel_features(xv[..., None], [12, 12])
    model = PixelLogisticRegression(3, [1e-4, 1.0]).fit(features, y, val, yv)
    summary = model.summary()
    assert set(summary["val_log_loss"]) == {"0.0001", "1"}
    assert summary["C"] == min(model.val_log_loss_, key=model.val_log_loss_.get)
    prob = model.predict_proba(val)
    assert prob.shape == (12, 3) and prob.sum(axis=1) == pytest.approx(1.0)
    assert (prob.argmax(axis=1) == yv).mean() > 0.6  # chance is 1/3
    model.save(tmp_path / "b.npz")
    assert PixelLogisticRegression.load(tmp_path / "b.npz").predict_proba(val) == pytest.approx(
        prob
    )


def test_binary_fit_is_a_two_column_softmax_and_an_absent_class_gets_zero():
    x, y = arrays(n_per_class=10, size=8)
    features = pixel_features(x[..., None], [8, 8])
    keep = y < 2  # classes 0 and 1 only; the task has 4 classes
    model = PixelLogisticRegression(4, [1.0]).fit(features[keep], y[keep], features, y)
    prob = model.predict_proba(features)
    assert prob.shape == (30, 4) and prob[:, 2:].max() < 1e-6
    assert (prob[keep].argmax(axis=1) == y[keep]).mean() >= 0.9


def test_multilabel_fit_gives_a_probability_per_finding():
    x, y = arrays(n_per_class=10, size=8)
    features = pixel_features(x[..., None], [8, 8])
    findings = np.stack([y == 0, y == 2, np.zeros_like(y, bool)], axis=1).astype(int)
    model = PixelLogisticRegression(3, [1.0], multilabel=True)
    prob = model.fit(features, findings, features, findings).predict_proba(features)
    assert ((prob >= 0.5) == findings).mean() >= 0.9 and prob[:, 2].max() < 1e-6


def test_subsample_is_stratified_seeded_and_all_rows_when_few():
    labels = np.repeat([0, 1], [80, 20])
    keep = subsample(labels, 50, seed=3)
    assert len(keep) == 50 and np.bincount(labels[keep]).tolist() == [40, 10]
    assert (keep == subsample(labels, 50, seed=3)).all()
    assert (subsample(labels, 500, seed=3) == np.arange(100)).all()
