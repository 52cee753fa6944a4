"""The fraud app's model pieces on their own: the numeric embeddings, the in-model row
features, the blend, skops loading, and the credit-risk, drift and versus-random reports."""

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from apps.fraud import baselines as sk
from apps.fraud.config import ModelConfig
from apps.fraud.features import FeatureBuilder, FeatureSpec
from apps.fraud.layers import PeriodicEmbedding, PiecewiseLinearEmbedding, quantile_edges
from apps.fraud.metrics import auprc, credit_risk, drift_warning, versus_random
from apps.fraud.model import RowFeatureSpec, build_classifier, build_preprocessor
from shared.io import DataError


@pytest.mark.parametrize("kind", ["periodic", "piecewise", "none"])
def test_classifier_with_each_numeric_embedding_saves_and_reloads_to_the_same_scores(
    tmp_path, kind
):
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(32, 3)).astype("float32")
    vocabularies = {"shop": ["a", "b"]}
    config = ModelConfig(numeric_embedding=kind, block_width=8, residual_blocks=1)
    model = build_classifier(3, vocabularies, config, quantile_edges(numeric, 4))
    batch = {"numeric": numeric, "cat_shop": rng.integers(0, 3, (32, 1))}
    before = keras.ops.convert_to_numpy(model(batch, training=False))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(batch, training=False), before, atol=1e-6)
    expected = {"periodic": "periodic_embedding", "piecewise": "piecewise_embedding"}
    names = [layer.name for layer in model.layers]
    assert (
        (expected.get(kind) in names) if kind != "none" else not set(expected.values()) & set(names)
    )


def test_periodic_embedding_gives_each_column_its_own_vector():
    layer = PeriodicEmbedding(frequencies=4, dim=3, sigma=1.0)
    x = np.array([[0.0, 1.0], [0.5, 1.0]], "float32")
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == (2, 6)
    # Column 1 is the same in both rows, so its three units are too; column 0's differ.
    np.testing.assert_allclose(out[0, 3:], out[1, 3:])
    assert not np.allclose(out[0, :3], out[1, :3])


def test_quantile_edges_pad_a_column_with_few_values_with_bins_that_never_fire():
    values = np.c_[np.arange(100.0), np.r_[np.zeros(30), np.ones(70)]]
    edges = quantile_edges(values, 4)
    assert all(len(e) == 5 and np.all(np.diff(e) > 0) for e in edges)
    layer = PiecewiseLinearEmbedding(edges, dim=2)
    layer.build((None, 2))
    encoded = keras.ops.clip((values[:, :, None] - layer.left) / layer.width, 0.0, 1.0)
    encoded = keras.ops.convert_to_numpy(encoded)
    assert encoded[:, 1, 1:].max() == 0.0  # the binary column's padded bins stay 0
    assert encoded[-1, 0].tolist() == [1.0] * 4 and encoded[0, 0].tolist() == [0.0] * 4


def test_row_features_inside_the_model_match_the_feature_builder():
    spec = FeatureSpec("Time", "seconds", "Amount", None, ["1h"])
    rows = pd.DataFrame({"Time": [0.0, 3600.0 * 5.5, 170_000.0], "Amount": [0.0, 12.5, -3.0]})
    expected = FeatureBuilder(spec).transform(rows)
    in_model = RowFeatureSpec.of(spec)
    assert in_model.names == ["log_amount", "hour_sin", "hour_cos"] == spec.feature_names()
    preprocessor = build_preprocessor(in_model.names, {}, np.zeros(3), np.ones(3), in_model)
    assert sorted(preprocessor.input) == ["Amount", "Time"]
    out = preprocessor({c: rows[[c]].to_numpy("float32") for c in ("Time", "Amount")})
    np.testing.assert_allclose(out["numeric"], expected.to_numpy(), atol=1e-5)
    # With per-card history the features need earlier rows: they stay outside the model.
    assert RowFeatureSpec.of(FeatureSpec("Time", "seconds", "Amount", "card", ["1h"])) is None


def test_blend_weight_is_the_best_validation_auprc_of_the_grid():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    network = y + rng.normal(0, 1.0, 400)
    boosting = y + rng.normal(0, 3.0, 400)  # noisier: the blend should lean on the network
    weight = sk.fit_blend(y, network, boosting, auprc)
    best = max(auprc(y, sk.blend(w, network, boosting)) for w in sk.BLEND_WEIGHTS)
    assert auprc(y, sk.blend(weight, network, boosting)) == best and weight > 0.5


def test_skops_baseline_round_trips_and_untrusted_content_is_refused(tmp_path, monkeypatch):
    x, y = np.random.default_rng(2).normal(size=(50, 3)), np.r_[np.zeros(25), np.ones(25)]
    model = LogisticRegression().fit(x, y)
    sk.save(model, tmp_path / "m.skops")
    np.testing.assert_allclose(
        sk.load(tmp_path / "m.skops").predict_proba(x), model.predict_proba(x)
    )
    monkeypatch.setattr(
        sk.skops.io, "get_untrusted_types", lambda file: ["os.system", "sklearn.tree._tree.Tree"]
    )
    with pytest.raises(DataError, match=r"refusing to load untrusted types \['os.system'\]"):
        sk.load(tmp_path / "m.skops")


def test_credit_risk_ks_gini_and_brier_on_a_known_ranking():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    risk = credit_risk(y, p)
    assert risk["ks"] == pytest.approx(0.75)  # at 0.6: all 3 of 4 positives, no negative left
    assert risk["gini"] == pytest.approx(2 * (15 / 16) - 1)
    assert risk["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert risk["mean_pd"] == pytest.approx(0.45) and risk["observed_rate"] == 0.5


def test_drift_warning_only_beyond_twice_or_half_the_validation_fraction():
    assert drift_warning(0.10, 0.19) is None and drift_warning(0.10, 0.06) is None
    assert "3.0x" in drift_warning(0.10, 0.30) and "2.5x" in drift_warning(0.10, 0.04)
    assert drift_warning(0.0, 0.0) is None and "inf" in drift_warning(0.0, 0.05)


def test_an_anomaly_detector_below_random_says_so():
    y = np.array([1, 0, 0, 0])
    assert versus_random(y, 0.5)["beats_random"]
    below = versus_random(y, 0.2)
    assert not below["beats_random"] and "does NOT beat random" in below["verdict"]
    assert below["random_auprc"] == 0.25
