"""Reading audio files: decode (WAV, FLAC, OGG), mix down to mono, resample, check, fit a clip.

Every problem is an AudioError whose message is the reason a scorer or reader writes to its
rejects: empty, corrupt, unsupported, silent or too short.
"""

import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SUFFIXES = (".wav", ".flac", ".ogg")


class AudioError(ValueError):
    """A file that cannot be used, with the reason (without the path)."""


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at `sample_rate`; AudioError for a file that cannot be used."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise AudioError(
            f"unsupported file type {path.suffix or '(none)'!r}; expected {', '.join(SUFFIXES)}"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioError(f"cannot read the file ({exc.strerror})") from exc
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    if path.suffix.lower() == ".wav":
        _check_wav_length(path, size)
    try:
        # As bytes: soundfile encodes a str path strictly, which fails on a file name that
        # is not valid UTF-8 (its undecodable bytes are surrogates in the str).
        samples, rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        detail = (
            str(exc).strip().splitlines()[0].split("': ", 1)[-1]
        )  # drop "Error opening '<path>'"
        raise AudioError(f"corrupt or unreadable audio ({detail})") from exc
    if samples.shape[0] == 0:
        raise AudioError("empty audio (no samples)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("corrupt audio (samples that are not finite)")
    if rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_wav_length(path: Path, size: int) -> None:
    """AudioError for a RIFF WAV whose data chunk claims more bytes than the file holds:
    libsndfile reads such a cut-off file without a word, as a shorter recording."""
    with open(path, "rb") as handle:
        riff = handle.read(12)
        if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
            return  # RF64, or not a WAV at all: libsndfile says what is wrong
        while len(header := handle.read(8)) == 8:
            name, length = header[:4], int.from_bytes(header[4:], "little")
            if name == b"data":
                held = size - handle.tell()
                # 0 and 0xFFFFFFFF mark a length the writer did not know (a stream)
                if length not in (0, 0xFFFFFFFF) and length > held:
                    raise AudioError(
                        f"truncated audio (the header declares {length:,} bytes of samples, "
                        f"the file holds {held:,})"
                    )
                return
            handle.seek(length + length % 2, 1)  # chunks are padded to an even length


def check_audio(samples: np.ndarray, sample_rate: int, min_seconds: float, silence_db: float):
    """Raise AudioError for a recording that is too short or silent."""
    seconds = len(samples) / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"too short ({seconds:.3f} s < {min_seconds:g} s)")
    peak = float(np.max(np.abs(samples)))
    level = 20 * np.log10(peak) if peak > 0 else -np.inf
    if level < silence_db:
        raise AudioError(f"silent (peak {level:.1f} dBFS < {silence_db:g} dBFS)")


def fit_clip(samples: np.ndarray, length: int) -> np.ndarray:
    """Exactly `length` samples: a short clip is centred in zeros, a long one keeps its loudest
    part."""
    if len(samples) == length:
        return samples
    if len(samples) < length:
        before = (length - len(samples)) // 2
        return np.pad(samples, (before, length - len(samples) - before))
    energy = np.cumsum(np.concatenate([[0.0], samples.astype(np.float64) ** 2]))
    window = energy[length:] - energy[:-length]
    start = int(np.argmax(window))
    return samples[start : start + length]


def windows(samples: np.ndarray, length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `length` samples every `hop` (the last one flush with the end), and their
    starts."""
    starts = list(range(0, len(samples) - length + 1, hop))
    if starts[-1] != len(samples) - length:
        starts.append(len(samples) - length)
    starts = np.array(starts)
    return np.stack([samples[s : s + length] for s in starts]), starts


def load_clip(path, sample_rate: int, clip_seconds: float, min_seconds: float, silence_db: float):
    """Read, check and fit one training clip to the configured length."""
    samples = read_audio(path, sample_rate)
    check_audio(samples, sample_rate, min_seconds, silence_db)
    return fit_clip(samples, clip_length(sample_rate, clip_seconds))


def clip_length(sample_rate: int, clip_seconds: float) -> int:
    return int(round(sample_rate * clip_seconds))
