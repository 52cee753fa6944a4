"""A seeded synthesizer of short "spoken word" clips: the sample data of the speech app.

Each word is a sequence of voiced segments (a glottal source through three formant resonators,
steady or gliding between vowels), noise bursts (fricatives and plosive releases) and closures.
Each speaker has a pitch, a vocal-tract length (all formants scaled together), a tempo and a
breathiness; each utterance varies them a little, starts at a random time and is mixed with
coloured background noise at a random SNR. The result is a keyword-spotting task whose test
speakers can be kept out of training.
"""

import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from shared.io import DataError, atomic_dir, generated_is_current, record_generated

# Adult formants (F1, F2, F3) in Hz of the vowels the words are made of (Peterson and Barney).
VOWELS = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "e": (530, 1840, 2480),
    "ae": (660, 1720, 2410), "a": (730, 1090, 2440), "o": (570, 840, 2410),
    "u": (300, 870, 2240), "U": (440, 1020, 2240), "r": (490, 1350, 1690),
    "m": (250, 1100, 2300),
}  # fmt: skip
BANDWIDTHS = (80.0, 100.0, 150.0)


def _v(start, end=None, seconds=0.3, amp=1.0):
    return ("voiced", VOWELS[start], VOWELS[end or start], seconds, amp)


def _n(centre, width, seconds, amp=0.5):
    return ("noise", centre, width, seconds, amp)


def _gap(seconds):
    return ("gap", seconds)


# The word inventory: what each word is made of, in order.
WORDS = {
    "see": [_n(5500, 3000, 0.13, 0.35), _v("i", seconds=0.28)],
    "shoe": [_n(3000, 1500, 0.14, 0.45), _v("u", seconds=0.28)],
    "ah": [_v("a", seconds=0.38)],
    "eye": [_v("a", "i", 0.36)],
    "go": [_gap(0.03), _n(1200, 800, 0.025, 0.6), _v("o", "U", 0.32)],
    "toy": [_gap(0.03), _n(4500, 3000, 0.03, 0.6), _v("o", "i", 0.34)],
    "how": [_n(1800, 2500, 0.07, 0.15), _v("a", "u", 0.34)],
    "fur": [_n(7000, 4000, 0.12, 0.2), _v("r", seconds=0.3)],
    "kit": [
        _gap(0.03),
        _n(2500, 1500, 0.03, 0.6),
        _v("I", seconds=0.14),
        _gap(0.07),
        _n(4500, 3000, 0.05, 0.5),
    ],
    "bat": [_n(700, 600, 0.015, 0.4), _v("ae", seconds=0.2), _gap(0.06), _n(4500, 3000, 0.05, 0.5)],
    "moon": [
        _v("m", seconds=0.08, amp=0.35),
        _v("u", seconds=0.22),
        _v("m", seconds=0.09, amp=0.35),
    ],
    "way": [_v("u", "e", 0.36)],
}
BLOCK = 80  # samples per block of the time-varying formant filters (5 ms at 16 kHz)


@dataclasses.dataclass
class Voice:
    """One synthetic speaker."""

    name: str
    pitch: float  # mean F0 (Hz)
    formant_scale: float  # vocal-tract length: every formant multiplied by this
    tempo: float  # speaking rate (> 1: faster)
    breath: float  # share of aspiration noise in the voiced source


def make_voices(n: int, rng: np.random.Generator, offset: int = 0) -> list[Voice]:
    """`n` voices from deep to high: pitch and formant scale go together, with scatter."""
    voices = []
    for i in range(n):
        size = rng.uniform(0.0, 1.0)  # 0: large adult, 1: child
        voices.append(
            Voice(
                name=f"spk{offset + i:03d}",
                pitch=float(85 * 3.0**size * rng.uniform(0.9, 1.1)),
                formant_scale=float(0.88 + 0.32 * size + rng.uniform(-0.04, 0.04)),
                tempo=float(rng.uniform(0.8, 1.25)),
                breath=float(rng.uniform(0.02, 0.25)),
            )
        )
    return voices


def utterance(word: str, voice: Voice, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The word alone (no padding, no background): float32 samples, peak 1."""
    tempo = voice.tempo * rng.uniform(0.92, 1.08)
    pitch = voice.pitch * rng.uniform(0.94, 1.06)
    scale = voice.formant_scale * rng.uniform(0.97, 1.03)
    parts = []
    for segment in WORDS[word]:
        kind, seconds = segment[0], segment[-2] if segment[0] != "gap" else segment[1]
        n = max(BLOCK, int(seconds / tempo * sample_rate))
        if kind == "gap":
            parts.append(np.zeros(n))
        elif kind == "noise":
            _, centre, width, _, amp = segment
            parts.append(amp * _noise_burst(n, centre * scale, width * scale, sample_rate, rng))
        else:
            _, start, end, _, amp = segment
            parts.append(amp * _voiced(n, start, end, pitch, scale, voice.breath, sample_rate, rng))
    samples = np.concatenate(parts)
    return (samples / (np.max(np.abs(samples)) + 1e-9)).astype(np.float32)


def _envelope(n: int, fade: int) -> np.ndarray:
    fade = min(fade, n // 2)
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    env[:fade], env[n - fade :] = ramp, ramp[::-1]
    return env


def _voiced(n, start, end, pitch, scale, breath, sample_rate, rng) -> np.ndarray:
    t = np.arange(n) / sample_rate
    contour = pitch * (1.05 - 0.1 * t / t[-1]) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = np.cumsum(2 * np.pi * contour / sample_rate)
    source = signal.sawtooth(phase) + breath * rng.standard_normal(n)
    source = signal.lfilter([1.0], [1.0, -0.9], source)  # glottal spectral tilt
    out = np.empty(n)
    states = [np.zeros(2) for _ in range(3)]
    for begin in range(0, n, BLOCK):
        frac = begin / max(1, n - 1)
        block = source[begin : begin + BLOCK]
        for k in range(3):
            freq = scale * ((1 - frac) * start[k] + frac * end[k])
            r = np.exp(-np.pi * BANDWIDTHS[k] * scale / sample_rate)
            a = [1.0, -2 * r * np.cos(2 * np.pi * freq / sample_rate), r * r]
            block, states[k] = signal.lfilter([sum(a)], a, block, zi=states[k])
        out[begin : begin + BLOCK] = block
    return out * _envelope(n, int(0.015 * sample_rate)) / (np.max(np.abs(out)) + 1e-9)


def _noise_burst(n, centre, width, sample_rate, rng) -> np.ndarray:
    nyquist = sample_rate / 2
    low = max(50.0, centre - width / 2) / nyquist
    high = min(nyquist - 100.0, centre + width / 2) / nyquist
    sos = signal.butter(2, [min(low, high * 0.9), high], btype="band", output="sos")
    burst = signal.sosfilt(sos, rng.standard_normal(n))
    return burst * _envelope(n, max(1, n // 4)) / (np.max(np.abs(burst)) + 1e-9)


def background(n: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise: white noise through a random one-pole low-pass (hiss to rumble)."""
    pole = rng.uniform(0.0, 0.97)
    noise = signal.lfilter([1.0], [1.0, -pole], rng.standard_normal(n))
    return noise / (np.std(noise) + 1e-9)


def clip(word, voice, sample_rate, seconds, snr_db, rng) -> np.ndarray:
    """One clip: the word at a random onset in `seconds` of background noise at a random SNR."""
    length = int(round(sample_rate * seconds))
    spoken = utterance(word, voice, sample_rate, rng)[:length]
    out = np.zeros(length)
    onset = int(rng.integers(0, length - len(spoken) + 1))
    out[onset : onset + len(spoken)] = spoken
    power = np.mean(spoken**2)
    snr = rng.uniform(*snr_db)
    out += background(length, rng) * np.sqrt(power / 10 ** (snr / 10))
    return (out / np.max(np.abs(out)) * rng.uniform(0.3, 0.9)).astype(np.float32)


def generator_params(synth, sample_rate: int, clip_seconds: float) -> dict:
    """Everything the generated files depend on (the regeneration stamp)."""
    stamp = {"sample_rate": sample_rate, "clip_seconds": clip_seconds, "version": 1}
    return dataclasses.asdict(synth) | stamp


def refuse_foreign_folder(folder: str | Path) -> None:
    """`write_dataset` replaces its whole folder when it (re)writes the sample: refuse a folder
    it did not write, such as real recordings named in data.path without data.source=files."""
    folder = Path(folder)
    stamp = folder.with_name(folder.name + ".simulator.json")  # shared.io.record_generated's
    if folder.exists() and any(folder.iterdir()) and not stamp.exists():
        raise DataError(
            f"{folder}: data.source=synthetic would replace this folder with the synthetic "
            "sample, and it holds files the synthesizer did not write; set data.source=files "
            "to read them (or delete the folder to have the sample written there)"
        )


def write_dataset(folder: str | Path, synth, sample_rate: int, clip_seconds: float) -> bool:
    """Write `{word}_{speaker}_{index}.wav` clips (Free Spoken Digit layout) unless current.

    Returns True when files were written.
    """
    folder = Path(folder)
    params = generator_params(synth, sample_rate, clip_seconds)
    if generated_is_current(folder, params):
        return False
    rng = np.random.default_rng(synth.seed)
    words = list(WORDS)[: synth.words]
    voices = make_voices(synth.speakers, rng)
    with atomic_dir(folder) as tmp:
        for voice in voices:
            for word in words:
                for index in range(synth.repetitions):
                    samples = clip(word, voice, sample_rate, clip_seconds, synth.snr_db, rng)
                    name = f"{word}_{voice.name}_{index}.wav"
                    sf.write(tmp / name, samples, sample_rate, subtype="PCM_16")
    record_generated(folder, params)
    n = len(voices) * len(words) * synth.repetitions
    print(
        f"prepare: synthesized {n:,} clips ({len(words)} words, {len(voices)} speakers) "
        f"-> {folder}",
        flush=True,
    )
    return True


def write_samples(folder: str | Path, sample_rate: int = 16000, seed: int = 2026) -> None:
    """The committed scoring sample: clips by unseen voices, a long recording, bad files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    voices = make_voices(3, rng, offset=900)
    for i, word in enumerate(["see", "go", "moon", "kit", "way", "fur"]):
        samples = clip(word, voices[i % 3], sample_rate, 1.0, [15.0, 25.0], rng)
        name = f"{word}_{voices[i % 3].name}_0.wav"
        sf.write(folder / name, samples, sample_rate, subtype="PCM_16")
    long = background(4 * sample_rate, rng) * 0.01
    spoken = utterance("toy", voices[0], sample_rate, rng) * 0.5
    start = int(2.2 * sample_rate)
    long[start : start + len(spoken)] += spoken
    sf.write(
        folder / "long_toy_at_2.2s.wav", long.astype(np.float32), sample_rate, subtype="PCM_16"
    )
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    sf.write(
        folder / "silence.wav",
        np.zeros(sample_rate // 2, np.float32),
        sample_rate,
        subtype="PCM_16",
    )
