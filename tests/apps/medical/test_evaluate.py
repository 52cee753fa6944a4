"""The evaluation's vectorised bootstrap and its test-time augmentation, on small arrays."""

import types

import numpy as np
import pytest

from apps.medical import bootstrap as bs
from apps.medical.config import AugmentConfig, Config, ModelConfig
from apps.medical.model import build_model
from apps.medical.pipeline import split_outputs, tta_report
from shared import evaluation as ev
from shared.config import ConfigError, from_dict


def scored(n: int = 60, seed: int = 0):
    """Three-class labels, probabilities rounded to tenths (many ties), and patient ids where
    every fifth row's patient is unknown."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    prob = np.round(rng.dirichlet([1, 1, 1], n), 1)
    groups = np.array([f"p{i // 3}" if i % 5 else "" for i in range(n)])
    return y, np.eye(3)[y], prob, groups


@pytest.mark.parametrize("by_patient", [False, True])
def test_vectorised_auc_intervals_equal_the_row_by_row_bootstrap(by_patient):
    y, onehot, prob, groups = scored()
    groups = groups if by_patient else None
    found = bs.auc_intervals(onehot, prob, [0, 1, 2], 40, 7, groups)
    for k in range(3):
        expected = ev.bootstrap_interval(
            ev.roc_auc, (onehot[:, k], prob[:, k]), 40, 7, groups=groups
        )
        np.testing.assert_allclose(found[k], expected, rtol=1e-12)
    macro = ev.bootstrap_interval(ev.macro_roc_auc, (onehot, prob), 40, 7, groups=groups)
    np.testing.assert_allclose(found["macro"], macro, rtol=1e-12)


def test_vectorised_ece_interval_equals_the_row_by_row_bootstrap_also_per_finding():
    y, _, prob, groups = scored()
    correct, confidence = (prob.argmax(1) == y).astype(float), prob.max(1)

    def ece(a, b):
        return ev.expected_calibration_error(a.ravel(), b.ravel(), 10)

    expected = ev.bootstrap_interval(ece, (correct, confidence), 150, 3, groups=groups)
    np.testing.assert_allclose(bs.ece_interval(correct, confidence, 10, 150, 3, groups), expected)
    findings = np.random.default_rng(1).integers(0, 2, prob.shape).astype(float)
    expected = ev.bootstrap_interval(ece, (findings, prob), 150, 3, groups=groups)
    found = bs.ece_interval(findings.ravel(), prob.ravel(), 10, 150, 3, groups, per_row=3)
    np.testing.assert_allclose(found, expected)


def test_resamples_of_one_class_are_skipped_and_none_gives_nan_bounds():
    y = np.array([0] * 18 + [1, 1])
    score = np.random.default_rng(2).random(20)
    truth, prob = np.stack([1 - y, y], 1), np.stack([1 - score, score], 1)
    expected = ev.bootstrap_interval(ev.roc_auc, (y, score), 60, 1)
    np.testing.assert_allclose(bs.auc_intervals(truth, prob, [1], 60, 1)[1], expected)
    value, low, high = bs.auc_intervals(truth, prob, [1], 0, 1)[1]
    assert np.isfinite(value) and np.isnan(low) and np.isnan(high)


def tiny_run(tta_views=None):
    """An untrained 8-filter network, a config, the data and meta `split_outputs` reads."""
    cfg = {"evaluate": {"tta": tta_views is not None, "tta_views": tta_views or ["identity"]}}
    config = from_dict(Config, cfg)
    model = build_model(ModelConfig(filters=[8]), AugmentConfig(enabled=False), 3, [12, 12], 1)
    rng = np.random.default_rng(0)
    splits = {
        s: types.SimpleNamespace(
            images=rng.integers(0, 255, (n, 12, 12, 1)).astype(np.uint8),
            labels=np.arange(n) % 3,
        )
        for s, n in (("val", 9), ("test", 12))
    }
    meta = types.SimpleNamespace(task="multiclass", positive_index=None)
    return model, types.SimpleNamespace(splits=splits), meta, config


def test_tta_averages_the_models_probabilities_over_the_configured_views():
    model, data, meta, config = tiny_run(["identity", "hflip"])
    plain, augmented = split_outputs(model, data, meta, config)
    images = data.splits["test"].images
    direct, mirrored = (
        model.predict(images, verbose=0),
        model.predict(images[:, :, ::-1], verbose=0),
    )
    np.testing.assert_allclose(plain["test"][1], direct, atol=1e-6)
    np.testing.assert_allclose(augmented["test"][1], (direct + mirrored) / 2, atol=1e-6)
    # The model's temperature is 1: uncalibrated and calibrated agree.
    np.testing.assert_allclose(augmented["val"][0], augmented["val"][1], atol=1e-6)
    assert split_outputs(model, data, meta, tiny_run()[3])[1] == {}  # TTA off: no views


def test_tta_is_used_only_when_it_wins_on_validation_whatever_test_says():
    _, data, meta, _ = tiny_run()
    truth = {s: np.eye(3)[data.splits[s].labels] for s in ("val", "test")}
    noise = {
        s: np.full_like(truth[s], 1 / 3) + 0.01 * np.arange(len(truth[s]))[:, None] for s in truth
    }
    perfect = {s: (truth[s], truth[s]) for s in truth}
    poor = {s: (noise[s], noise[s]) for s in truth}
    report = tta_report(poor, perfect, data, meta, ["identity", "hflip"])
    assert report["used"] and report["validation"]["tta"] == 1.0
    assert report["chosen_on"] == "validation" and report["views"] == ["identity", "hflip"]
    mixed = {"val": poor["val"], "test": perfect["test"]}  # better on test only
    assert not tta_report(perfect, mixed, data, meta, ["identity"])["used"]


def test_an_unknown_tta_view_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="evaluate.tta_views: unknown test-time view 'spin'"):
        from_dict(Config, {"evaluate": {"tta_views": ["identity", "spin"]}})
