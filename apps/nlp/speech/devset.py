"""A development set of spoken words from espeak-ng: many voices, pitches and speeds, with room
reverberation, background noise and resampling; a stand-in for real speakers that is far
closer to them than the formant synthesizer of `sample.py`.

A development tool, not a runtime dependency: it needs the `espeak-ng` program (Debian:
`apt-get install espeak-ng`), and nothing in the app or its tests calls it.

    python -m apps.nlp.speech.devset OUT [--words zero,one,...] [--speakers 40]
        [--repetitions 5] [--rate 16000] [--seed 0]

writes `OUT/{word}_{speaker}_{index}.wav` (the pattern layout): train with
`--set data.source=files --set data.path=OUT`, and the speaker-disjoint split holds whole
voices apart.
"""

import argparse
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve, resample_poly

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
    "klatt3", "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "belinda", "benjamin",
    "caleb", "david", "ed", "edward", "grandma", "grandpa", "Hugo", "Lee", "Mike", "michel",
    "norbert", "quincy", "robert", "steph", "travis", "Tweaky", "victor", "zac",
]  # fmt: skip
ESPEAK_RATE = 22050  # espeak-ng's output rate


def speakers(count: int, rng: np.random.Generator) -> list[dict]:
    """Distinct voices: an accent, a voice variant, a base pitch and a speaking rate each."""
    out, seen = [], set()
    while len(out) < count:
        voice = (str(rng.choice(ACCENTS)), str(rng.choice(VARIANTS)))
        if voice in seen and len(seen) < len(ACCENTS) * len(VARIANTS):
            continue
        seen.add(voice)
        pitch, speed = int(rng.integers(25, 75)), int(rng.integers(130, 190))
        out.append({"voice": f"{voice[0]}+{voice[1]}", "pitch": pitch, "speed": speed})
    return out


def speak(text: str, voice: dict, rng: np.random.Generator) -> np.ndarray:
    """One utterance at 22,050 Hz, its pitch and speed jittered around the voice's own."""
    command = [
        "espeak-ng",
        "-v", voice["voice"],
        "-p", str(int(np.clip(voice["pitch"] + rng.integers(-8, 9), 0, 99))),
        "-s", str(int(voice["speed"] * rng.uniform(0.9, 1.1))),
        "--stdout", text,
    ]  # fmt: skip
    wav = subprocess.run(command, capture_output=True, check=True).stdout
    samples, _ = sf.read(io.BytesIO(wav), dtype="float32")
    return samples


def room(samples: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Reverberation (an exponentially decaying noise impulse response, RT60 0.1-0.5 s), then
    coloured background noise at 5-30 dB SNR and a random level."""
    rt60 = rng.uniform(0.1, 0.5)
    t = np.arange(int(rt60 * rate)) / rate
    impulse = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    impulse[0] = 1.0 / rng.uniform(0.3, 1.0)  # the direct path against the reflections
    wet = fftconvolve(samples, impulse / np.abs(impulse).sum() * 4)[: len(samples) + rate // 10]
    noise = np.cumsum(rng.standard_normal(len(wet))) * rng.uniform(0.0, 0.05)  # brownish part
    noise = (
        noise - np.convolve(noise, np.ones(256) / 256, mode="same") + rng.standard_normal(len(wet))
    )
    snr = rng.uniform(5.0, 30.0)
    power = np.mean(wet**2) + 1e-12
    wet = wet + noise * np.sqrt(power / (np.mean(noise**2) + 1e-12) / 10 ** (snr / 10))
    return (wet / (np.abs(wet).max() + 1e-9) * rng.uniform(0.05, 0.9)).astype(np.float32)


def write_devset(out: Path, words, count: int, repetitions: int, rate: int, seed: int) -> int:
    """Every word by every voice `repetitions` times; returns the number of files written."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for number, voice in enumerate(speakers(count, rng)):
        for word in words:
            for index in range(repetitions):
                samples = room(speak(word, voice, rng), ESPEAK_RATE, rng)
                resampled = resample_poly(samples, rate, ESPEAK_RATE).astype(np.float32)
                sf.write(out / f"{word}_v{number:03d}_{index}.wav", resampled, rate, "PCM_16")
                written += 1
        print(f"devset: voice {number + 1}/{count} ({voice['voice']}) done", flush=True)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--words", default=",".join(DIGITS))
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    words = [w for w in args.words.split(",") if w]
    n = write_devset(args.out, words, args.speakers, args.repetitions, args.rate, args.seed)
    print(f"devset: {n:,} clips -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
