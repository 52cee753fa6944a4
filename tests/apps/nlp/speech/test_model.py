"""Augmentation layers, the two networks (behaviour, validation, save/load round trips) and the
MFCC-statistics baselines."""

import keras
import numpy as np
import pytest

from apps.nlp.speech.augment import (
    BackgroundNoise,
    SpecAugment,
    SpeedWarp,
    TimeShift,
    augmentation,
)
from apps.nlp.speech.config import AugmentConfig, BaselineConfig, Config, ModelConfig
from apps.nlp.speech.model import UtteranceCMVN, baseline_scores, build_baseline, build_model
from shared.config import ConfigError, load_config

X = np.random.default_rng(0).normal(-40.0, 10.0, size=(4, 20, 8)).astype("float32")


@pytest.mark.parametrize(
    "layer",
    [
        TimeShift(0.3, seed=1),
        BackgroundNoise(1.0, (0.0, 5.0), seed=1),
        SpecAugment(2, 4, 2, 3, seed=1),
        SpeedWarp(0.2, 0.2, seed=1),
    ],
)
def test_augmentation_only_in_training(layer):
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(X, training=False)), X)
    out = keras.ops.convert_to_numpy(layer(X, training=True))
    assert out.shape == X.shape and not np.allclose(out, X)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_what_each_augmentation_does():
    shifted = keras.ops.convert_to_numpy(TimeShift(0.3, seed=2)(X, training=True))
    for row, original in zip(shifted, X, strict=True):  # rows are whole shifted frames or floor
        assert all(
            any(np.array_equal(f, g) for g in original) or (f == original.min()).all() for f in row
        )
    noisy = keras.ops.convert_to_numpy(BackgroundNoise(1.0, (0.0, 0.0), seed=2)(X, training=True))
    assert (noisy >= X - 1e-3).all()  # noise adds power
    masked = keras.ops.convert_to_numpy(SpecAugment(1, 5, 1, 3, seed=3)(X, training=True))
    changed = masked != X
    assert changed.any()
    means = X.mean(axis=(1, 2))
    for i in range(len(X)):
        np.testing.assert_allclose(masked[i][changed[i]], means[i], rtol=1e-5)


def test_speed_warp_moves_a_formant_by_its_factor():
    """A peak at bin 10 of 40 read at position bin * factor lands at 10 / factor."""
    x = np.full((1, 5, 40), -60.0, np.float32)
    x[:, :, 10] = 0.0
    layer = SpeedWarp(0.2, 0.0, seed=4)
    warped = keras.ops.convert_to_numpy(layer(x, training=True))
    peak = float(np.average(np.arange(40), weights=warped[0, 0] + 60.0))
    assert peak != pytest.approx(10.0, abs=0.05) and 10 / 1.2 - 0.5 <= peak <= 10 / 0.8 + 0.5
    steady = np.tile(np.linspace(-50, 0, 40, dtype=np.float32), (1, 12, 1))
    stretched = keras.ops.convert_to_numpy(SpeedWarp(0.0, 0.3, seed=5)(steady, training=True))
    np.testing.assert_allclose(stretched, steady, atol=1e-4)  # tempo leaves a steady sound


def test_utterance_cmvn_removes_each_clips_level_and_colouring():
    gain = np.linspace(-20.0, 20.0, 8, dtype=np.float32)[None, None, :]  # a microphone's tilt
    out = keras.ops.convert_to_numpy(UtteranceCMVN()(X))
    shifted = keras.ops.convert_to_numpy(UtteranceCMVN()(X + gain - 7.0))
    np.testing.assert_allclose(out, shifted, atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-4)
    flat = keras.ops.convert_to_numpy(UtteranceCMVN(floor=1.0)(np.ones((1, 5, 3), np.float32)))
    assert np.abs(flat).max() == 0.0  # a flat band stays zero instead of dividing by zero
    with pytest.raises(ValueError, match="Received: floor=0"):
        UtteranceCMVN(floor=0)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (TimeShift, {"max_fraction": 1.0}, "Received: max_fraction=1.0"),
        (BackgroundNoise, {"probability": 2.0}, "Received: probability=2.0"),
        (BackgroundNoise, {"snr_db": (10.0, 0.0)}, "Received: snr_db"),
        (SpecAugment, {"time_width": 0}, "Received: time_width=0"),
        (SpeedWarp, {"vtlp": 0.6}, "Received: vtlp=0.6"),
    ],
)
def test_augmentation_validation(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("architecture", ["cnn", "crnn"])
def test_model_save_load_round_trip(tmp_path, architecture):
    config = ModelConfig(architecture=architecture, filters=[4, 8], rnn_units=4, cmvn="none")
    model = build_model(config, AugmentConfig(), 3, (20, 8), X.mean((0, 1)), X.var((0, 1)))
    assert model.input.shape == (None, 20, 8) and model.output.shape == (None, 3)
    assert model.get_layer("augment") is not None
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    expected = model.predict(X, verbose=0)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    # The normalisation is inside: the training statistics travel with the model.
    normalize = loaded.get_layer("normalize")
    np.testing.assert_allclose(np.ravel(normalize.mean), X.mean((0, 1)), rtol=1e-5)


def test_no_augmentation_and_bad_classes():
    model = build_model(
        ModelConfig(filters=[4]), AugmentConfig(enabled=False), 2, (20, 8), np.zeros(8), np.ones(8)
    )
    assert "augment" not in [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match="Received: n_classes=1"):
        build_model(ModelConfig(), AugmentConfig(), 1, (20, 8), np.zeros(8), np.ones(8))


def test_noise_only_on_logmel():
    kinds = {
        k: [type(la).__name__ for la in augmentation(AugmentConfig(), k).layers]
        for k in ("logmel", "mfcc")
    }
    assert kinds["logmel"] == ["TimeShift", "BackgroundNoise", "SpeedWarp", "SpecAugment"]
    assert kinds["mfcc"] == ["TimeShift", "SpeedWarp", "SpecAugment"]


def test_default_network_normalises_each_utterance_inside_the_model():
    model = build_model(
        ModelConfig(filters=[4]), AugmentConfig(), 3, (20, 8), X.mean((0, 1)), X.var((0, 1))
    )
    assert model.get_layer("cmvn") is not None
    np.testing.assert_allclose(np.ravel(model.get_layer("normalize").mean), 0.0)


def _clusters(n_classes=3, per=8, seed=0):
    """Well-separated classes of 78-value MFCC statistics."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per)
    return rng.normal(size=(len(y), 78)) + 5.0 * y[:, None], y


@pytest.mark.parametrize("kind", ["svm", "logistic"])
def test_baseline_fits_standardised_statistics_and_ranks_every_word(kind):
    x, y = _clusters()
    model = build_baseline(kind, BaselineConfig(), seed=0).fit(x, y)
    assert [name for name, _ in model.steps] == ["standardise", kind]
    scores = baseline_scores(model, x, 4)  # the fourth word never appeared in training
    assert scores.shape == (24, 4) and (scores[:, 3] == -np.inf).all()
    np.testing.assert_array_equal(scores.argmax(axis=1), model.predict(x))
    assert (scores.argmax(axis=1) == y).all()


def test_two_word_svm_scores_have_one_column_per_word():
    x, y = _clusters(n_classes=2)
    model = build_baseline("svm", BaselineConfig(), seed=0).fit(x, y)
    scores = baseline_scores(model, x, 2)
    assert scores.shape == (16, 2) and (scores.argmax(axis=1) == y).all()


def test_baseline_config_is_checked():
    with pytest.raises(ValueError, match="Received: kind='knn'"):
        build_baseline("knn", BaselineConfig(), seed=0)
    with pytest.raises(ConfigError, match="baseline.models names a baseline twice"):
        load_config(Config, None, ["baseline.models=[svm, svm]"])
    with pytest.raises(ConfigError, match="baseline.models"):
        load_config(Config, None, ["baseline.models=[knn]"])
    with pytest.raises(ConfigError, match="baseline.n_mfcc must be <= features.n_mels"):
        load_config(Config, None, ["baseline.n_mfcc=64"])
    assert (
        load_config(Config, None, ["baseline.models=[]", "baseline.n_mfcc=64"]).baseline.models
        == []
    )


def test_saved_model_takes_waveforms_with_the_features_front_end(tmp_path):
    """serve_waveform computes the log-mel in the graph: the same probabilities as the model
    on `features.extract` of the same clips (8 kHz: 32 bands, 256-point FFT)."""
    import tensorflow as tf

    from apps.nlp.speech.config import FeatureConfig
    from apps.nlp.speech.features import extract
    from apps.nlp.speech.model import write_saved_model
    from tests.apps.nlp.speech.conftest import word_clip

    params = FeatureConfig().params(8000, 1.0, 40.0)
    waves = np.stack([word_clip(w, rate=8000, seconds=1.0) for w in ("up", "down", "go")])
    feats = np.stack([extract(w, params) for w in waves])
    model = build_model(
        ModelConfig(filters=[4]), AugmentConfig(), 3, feats.shape[1:], feats.mean((0, 1)),
        feats.var((0, 1)),
    )  # fmt: skip
    write_saved_model(model, str(tmp_path / "saved"), params)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    from_waves = served.serve_waveform(tf.constant(waves)).numpy()
    np.testing.assert_allclose(from_waves, model.predict(feats, verbose=0), atol=1e-4)
    np.testing.assert_allclose(served.serve(tf.constant(feats)).numpy(), from_waves, atol=1e-4)
