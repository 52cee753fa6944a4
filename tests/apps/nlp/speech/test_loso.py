"""Leave-one-speaker-out evaluation and the repetition of a small training split."""

import numpy as np
import pytest

from apps.nlp.speech.config import Config
from apps.nlp.speech.loso import folds, loso_leaderboard, run_loso
from apps.nlp.speech.pipeline import repeat_small
from shared.config import load_config


def test_small_training_split_is_cycled_to_the_epoch_size():
    x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    rx, ry = repeat_small(x, y, 12)
    assert len(ry) == 12 and ry.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    np.testing.assert_array_equal(rx[ry], rx)  # rows travel with their labels
    same_x, same_y = repeat_small(x, y, 5)
    assert same_x is x and same_y is y  # large enough (or 0): untouched


def test_folds_deal_every_speaker_once_and_are_bounded():
    speakers = np.array([f"s{i % 7}" for i in range(40)])
    dealt = folds(speakers, 3, seed=1)
    assert len(dealt) == 3 and sorted(np.concatenate(dealt)) == [f"s{i}" for i in range(7)]
    assert [len(f) for f in folds(speakers, 10, seed=1)] == [1] * 7  # one speaker a fold
    again = folds(speakers, 3, seed=1)
    assert all((a == b).all() for a, b in zip(dealt, again, strict=True))  # seeded


def _pooled(n_speakers=6, per=4, classes=3, bins=8, frames=12):
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(classes), n_speakers * per)
    speakers = np.repeat([f"spk{i}" for i in range(n_speakers)], classes * per)
    x = rng.normal(-40.0, 3.0, size=(len(y), frames, bins)).astype(np.float32)
    x[np.arange(len(y)), :, y * 2] += 30.0  # each word lights its own band
    stats = np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)
    return {"x": x, "y": y, "speakers": speakers, "n_classes": classes}, stats


def test_loso_tests_every_clip_once_with_per_speaker_accuracy():
    config = load_config(
        Config,
        "apps/nlp/speech/configs/smoke.yaml",
        ["evaluate.loso_folds=2", "train.epochs=1", "model.filters=[4]"],
    )
    pooled, stats = _pooled()
    result = run_loso(config, pooled, stats, {"kind": "logmel"})
    assert result["folds"] == 2 and result["speakers"] == 6 and result["clips"] == 72
    assert set(result["per_speaker"]) == {f"spk{i}" for i in range(6)}
    assert sum(s["clips"] for s in result["per_speaker"].values()) == 72
    names = {"cnn", "mfcc_svm", "mfcc_logistic"}
    assert set(result["mean_per_speaker"]) == names
    for name in names:
        per = [s[name] for s in result["per_speaker"].values()]
        assert result["mean_per_speaker"][name] == pytest.approx(np.mean(per), abs=1e-4)
    assert result["mean_per_speaker"]["mfcc_svm"] >= 0.9  # separable bands: nearly all right
    board = loso_leaderboard(result, "cnn")
    assert board["selected"] == "cnn" and board["models"]["cnn"]["kind"] == "network"
    unknown = dict(pooled, speakers=np.array([""] * 72))
    assert "skipped" in run_loso(config, unknown, stats, {"kind": "logmel"})


def test_loso_fold_stops_early_on_its_validation_speakers():
    """A fold whose validation speaker's words are relabelled gets worse on it as it learns the
    training speakers: it stops after `patience` epochs without improvement, not at `epochs`."""
    from apps.nlp.speech.loso import _fit_fold

    config = load_config(
        Config,
        "apps/nlp/speech/configs/smoke.yaml",
        ["train.epochs=12", "train.patience=1", "model.filters=[4]", "baseline.models=[]"],
    )
    pooled, _ = _pooled()
    val = pooled["speakers"] == "spk4"
    pooled["y"] = np.where(val, (pooled["y"] + 1) % 3, pooled["y"])
    test = pooled["speakers"] == "spk5"
    masks = (~val & ~test, val, test)
    found = _fit_fold(config, pooled, None, {"kind": "logmel"}, masks, seed=0)
    epochs = found["cnn"][3]
    assert 2 <= epochs < 12
