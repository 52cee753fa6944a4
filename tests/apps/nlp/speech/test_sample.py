"""The seeded spoken-word synthesizer."""

import numpy as np
import soundfile as sf

from apps.nlp.speech import sample
from apps.nlp.speech.config import SynthConfig


def test_words_and_voices():
    assert len(sample.WORDS) >= 10
    voices = sample.make_voices(8, np.random.default_rng(0))
    assert len({round(v.pitch) for v in voices}) == 8
    assert all(0.8 < v.formant_scale < 1.3 and 0.8 <= v.tempo <= 1.25 for v in voices)
    rng = np.random.default_rng(1)
    fast, slow = (sample.Voice("x", 120.0, 1.0, tempo, 0.1) for tempo in (1.25, 0.8))
    assert len(sample.utterance("kit", slow, 16000, rng)) > 1.3 * len(
        sample.utterance("kit", fast, 16000, rng)
    )


def test_clip_is_seeded_and_sized():
    voice = sample.make_voices(1, np.random.default_rng(0))[0]
    a, b = (sample.clip("see", voice, 16000, 1.0, [10, 20], np.random.default_rng(4)) for _ in "ab")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16000,) and 0.3 <= np.max(np.abs(a)) <= 0.9


def test_write_dataset_once(tmp_path):
    config = SynthConfig(words=3, speakers=3, repetitions=2, seed=1)
    assert sample.write_dataset(tmp_path / "clips", config, 16000, 1.0)
    files = sorted((tmp_path / "clips").glob("*.wav"))
    assert len(files) == 18 and files[0].name == "ah_spk000_0.wav"
    info = sf.info(files[0])
    assert info.samplerate == 16000 and info.channels == 1 and info.frames == 16000
    assert not sample.write_dataset(tmp_path / "clips", config, 16000, 1.0)  # current: kept
    assert sample.write_dataset(tmp_path / "clips", SynthConfig(words=2, speakers=3), 16000, 1.0)
    assert len(list((tmp_path / "clips").glob("*.wav"))) == 2 * 3 * 5
