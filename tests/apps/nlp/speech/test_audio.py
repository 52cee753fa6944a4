"""Reading audio: formats, sample rates, stereo, and every kind of bad file."""

import re

import numpy as np
import pytest

from apps.nlp.speech.audio import (
    AudioError,
    check_audio,
    fit_clip,
    load_clip,
    native_rate,
    read_audio,
    trim_silence,
    windows,
)
from tests.apps.nlp.speech.conftest import tone, write


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_wav_any_rate_is_resampled(tmp_path, rate):
    path = write(tmp_path / f"a{rate}.wav", tone(0.5, rate, 440.0), rate, "PCM_16")
    samples = read_audio(path, 16000)
    assert samples.dtype == np.float32 and abs(len(samples) - 8000) <= 1
    # The tone keeps its pitch: the spectral peak stays at 440 Hz after resampling.
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 440) < 5


def test_stereo_is_mixed_down(tmp_path):
    left, right = tone(0.5, freq=300.0), np.zeros(8000, np.float32)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(read_audio(path, 16000), left / 2, atol=1e-6)


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_flac_and_ogg(tmp_path, suffix):
    path = write(tmp_path / f"clip{suffix}", tone(0.5), 16000)
    samples = read_audio(path, 16000)
    assert len(samples) == 8000 and np.max(np.abs(samples)) > 0.3


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.wav", b"", "empty file (0 bytes)"),
        ("corrupt.wav", b"RIFF\x10\x00\x00\x00WAVEjunk", "corrupt or unreadable audio"),
        ("noise.flac", b"\x00\x01" * 50, "corrupt or unreadable audio"),
        ("talk.mp4", b"\x00" * 100, "unsupported file type '.mp4'"),
    ],
)
def test_bad_files_give_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=re.escape(reason)):
        read_audio(path, 16000)


def test_header_only_wav_is_empty(tmp_path):
    path = write(tmp_path / "none.wav", np.zeros(0, np.float32), subtype="PCM_16")
    with pytest.raises(AudioError, match="empty audio"):
        read_audio(path, 16000)


def test_silent_and_too_short(tmp_path):
    with pytest.raises(AudioError, match="silent"):
        check_audio(np.zeros(16000, np.float32), 16000, 0.2, -50.0)
    with pytest.raises(AudioError, match=r"too short \(800 samples = 0.0500 s < 3,200 samples"):
        check_audio(tone(0.05), 16000, 0.2, -50.0)
    check_audio(tone(0.05), 16000, 0.0, -50.0)  # min_seconds 0: any length is padded


def test_exactly_min_seconds_is_not_too_short():
    """0.2 s read back from a file may be 3,199.9999 samples' worth of float: compared in whole
    samples, 3,200 samples pass and 3,199 give both lengths apart."""
    check_audio(tone(0.2), 16000, 0.2, -50.0)
    with pytest.raises(AudioError, match=r"3,199 samples = 0.1999 s < 3,200 samples = 0.2 s"):
        check_audio(tone(0.2)[:-1], 16000, 0.2, -50.0)


def test_trim_silence_cuts_quiet_edges_only():
    rate = 16000
    word = tone(0.3, rate)
    clip = np.concatenate([np.zeros(8000, np.float32), word, 1e-4 * np.ones(8000, np.float32)])
    trimmed = trim_silence(clip, rate, 40.0)
    assert abs(len(trimmed) - len(word)) < 1024  # within a few analysis frames of the word
    assert len(trim_silence(clip, rate, 0.0)) == len(clip)  # 0: untouched
    click = np.zeros(16000, np.float32)
    click[100:300] = 0.9  # would leave 12 ms: a click, kept whole
    assert len(trim_silence(click, rate, 40.0)) == len(click)


def test_native_rate_is_shared_or_the_fallback(tmp_path):
    a = write(tmp_path / "a.wav", tone(0.2, 8000), 8000, "PCM_16")
    b = write(tmp_path / "b.wav", tone(0.2, 8000), 8000, "PCM_16")
    c = write(tmp_path / "c.wav", tone(0.2, 22050), 22050, "PCM_16")
    (tmp_path / "bad.wav").write_bytes(b"junk")
    assert native_rate([str(a), str(b), str(tmp_path / "bad.wav")], 16000) == 8000
    assert native_rate([str(a), str(c)], 16000) == 16000
    path = write(tmp_path / "quiet.wav", tone(0.5, amp=1e-4), subtype="FLOAT")
    with pytest.raises(AudioError, match="silent"):
        load_clip(path, 16000, 1.0, 0.2, -50.0)


def test_fit_clip_pads_and_keeps_the_loudest_part():
    short = np.ones(10, np.float32)
    padded = fit_clip(short, 20)
    assert len(padded) == 20 and padded[:5].sum() == 0 and padded[5:15].sum() == 10
    long = np.zeros(100, np.float32)
    long[60:70] = 1.0
    cropped = fit_clip(long, 20)
    assert len(cropped) == 20 and cropped.sum() == 10


def test_windows_reach_the_end():
    pieces, starts = windows(np.arange(25, dtype=np.float32), 10, 4)
    assert starts.tolist() == [0, 4, 8, 12, 15] and pieces.shape == (5, 10)
    assert pieces[-1, -1] == 24
