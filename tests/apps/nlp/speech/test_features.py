"""librosa features and their on-disk cache."""

import numpy as np
import pytest

from apps.nlp.speech import features as feat
from apps.nlp.speech.audio import fit_clip
from apps.nlp.speech.config import FeatureConfig
from tests.apps.nlp.speech.conftest import word_clip, write

CHECKS = {"min_seconds": 0.1, "silence_db": -50.0}


def params(**changes):
    return FeatureConfig(**changes).params(16000, 1.0)


@pytest.fixture
def clips(tmp_path):
    paths = [
        str(write(tmp_path / "audio" / f"{w}.wav", word_clip(w), subtype="PCM_16"))
        for w in ("up", "down", "left", "right")
    ]
    (tmp_path / "audio" / "bad.wav").write_bytes(b"")
    return paths + [str(tmp_path / "audio" / "bad.wav")]


@pytest.mark.parametrize(
    ("changes", "bins"),
    [
        ({}, 40),
        ({"n_mels": 24}, 24),
        ({"kind": "mfcc", "n_mfcc": 13}, 39),
        ({"kind": "mfcc", "n_mfcc": 13, "deltas": False}, 13),
    ],
)
def test_extract_shapes(changes, bins):
    p = params(**changes)
    out = feat.extract(np.asarray(word_clip("x", seconds=1.0)), p)
    assert out.shape == feat.feature_shape(p) == (51, bins) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_logmel_follows_loudness_only_in_absolute_db():
    clip = np.asarray(word_clip("x", seconds=1.0))
    p = params(top_db=0.0)
    quiet, loud = (feat.extract(clip * g, p) for g in (0.1, 1.0))
    np.testing.assert_allclose(loud - quiet, 20.0, atol=0.5)  # power dB: 10x amplitude = +20 dB
    quiet, loud = (feat.extract(clip * g, params()) for g in (0.1, 1.0))
    np.testing.assert_allclose(loud, quiet, atol=0.5)  # relative to the peak: level-free
    assert loud.max() == pytest.approx(0.0, abs=1e-4) and loud.min() >= -80.0 - 1e-3


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (16000, {"n_mels": 40, "n_fft": 512, "win_length": 400, "hop_length": 320}),
        (8000, {"n_mels": 32, "n_fft": 256, "win_length": 200, "hop_length": 160}),
    ],
)
def test_sizes_are_chosen_for_the_rate(rate, expected):
    p = FeatureConfig().params(rate, 1.0)
    assert {k: p[k] for k in expected} == expected and p["sample_rate"] == rate
    out = feat.extract(np.asarray(word_clip("x", rate=rate, seconds=1.0)), p)
    assert out.shape == feat.feature_shape(p) == (51, expected["n_mels"])
    assert FeatureConfig(n_fft=1024, hop_length=100).params(rate, 1.0)["n_fft"] == 1024


def test_cache_hit_skips_extraction(tmp_path, clips, monkeypatch):
    cache = tmp_path / "cache"
    first, rejects, stats = feat.extract_files(clips, params(), CHECKS, cache)
    assert stats["extracted"] == 5 and stats["cached"] == 0
    assert rejects == {clips[-1]: "empty file (0 bytes)"} and len(first) == 4

    def fail(*args):
        raise AssertionError("extract called on a cached file")

    monkeypatch.setattr(feat, "extract", fail)
    second, rejects, stats = feat.extract_files(clips, params(), CHECKS, cache)
    assert stats["cached"] == 4 and stats["extracted"] == 1  # only the bad file is read again
    for path in first:
        np.testing.assert_array_equal(first[path], second[path])


def test_cache_invalidated_by_parameters_and_content(tmp_path, clips):
    cache = tmp_path / "cache"
    feat.extract_files(clips[:2], params(), CHECKS, cache)
    out, _, stats = feat.extract_files(clips[:2], params(n_mels=32), CHECKS, cache)
    assert stats["extracted"] == 2 and out[clips[0]].shape == (51, 32)
    write(tmp_path / "audio" / "up.wav", word_clip("other", seed=5), subtype="PCM_16")
    _, _, stats = feat.extract_files(clips[:2], params(), CHECKS, cache)
    assert stats == {"files": 2, "cached": 1, "extracted": 1, "workers": 1}
    assert len(list(cache.iterdir())) == 2  # one folder per parameter set


def test_workers_give_the_same_features(tmp_path, clips, monkeypatch):
    monkeypatch.setattr(feat, "CHUNK", 2)
    one, _, stats = feat.extract_files(clips, params(), CHECKS, tmp_path / "c1", workers=2)
    assert stats["workers"] == 1  # five files: not worth starting processes
    two, rejects, stats = feat.extract_files(
        clips, params(), CHECKS, tmp_path / "c2", workers=2, min_parallel=4
    )
    assert stats["workers"] == 2 and len(rejects) == 1
    for path in one:
        np.testing.assert_array_equal(one[path], two[path])


def test_mfcc_params_keep_the_frames_and_switch_to_mfcc_with_deltas():
    p = feat.mfcc_params(params(), 13)
    assert p == params() | {"kind": "mfcc", "n_mfcc": 13, "deltas": True, "top_db": 0.0}
    assert feat.feature_shape(p) == (51, 39)  # same frames as the log-mel the network sees


def test_mfcc_statistics_are_each_coefficients_mean_and_std_over_time():
    frames = np.random.default_rng(0).normal(size=(3, 51, 39)).astype(np.float32)
    stats = feat.mfcc_statistics(frames, np.full(13, -632.0, np.float32))
    assert stats.shape == (3, 78)
    np.testing.assert_allclose(stats[:, :39], frames.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats[:, 39:], frames.std(axis=1), rtol=1e-5)


def test_mfcc_statistics_leave_out_the_padding_of_a_short_clip():
    """A clip shorter than clip_seconds is centred in zeros; its statistics are those of the
    recording, not of the recording plus digital silence."""
    p = feat.mfcc_params(params(), 13)
    silence = feat.silence_frame(p)
    assert silence.shape == (13,)
    word = np.asarray(word_clip("up", seconds=1.0))
    short = fit_clip(word[:12288], 16000)  # 0.77 s, as some Speech Commands clips
    full, padded = (feat.extract(x, p)[None] for x in (word, short))
    padding = np.isclose(padded[0, :, :13], silence, rtol=1e-4, atol=1e-3).all(axis=1)
    assert 8 <= padding.sum() <= 12  # about 0.23 s of padding at 20 ms a frame
    stats = feat.mfcc_statistics(padded, silence)
    np.testing.assert_allclose(stats[0, :39], padded[0][~padding].mean(axis=0), rtol=1e-5)
    naive = np.concatenate([padded[0].mean(axis=0), padded[0].std(axis=0)])
    reference = feat.mfcc_statistics(full, silence)[0]
    assert abs(stats[0, 0] - reference[0]) < 0.1 * abs(naive[0] - reference[0])
