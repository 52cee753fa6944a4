"""Reading audio files: decode (WAV, FLAC, OGG), mix down to mono, resample, check, fit a clip.

Every problem is an AudioError whose message is the reason a scorer or reader writes to its
rejects: empty, corrupt, unsupported, silent or (when `data.min_seconds` asks) too short.
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
    """Raise AudioError for a recording that is silent or (with min_seconds > 0) too short.

    Lengths are compared in whole samples: a clip of exactly `min_seconds` passes, and the
    message gives both lengths with the precision that tells them apart.
    """
    needed = int(round(min_seconds * sample_rate))
    if len(samples) < needed:
        raise AudioError(
            f"too short ({len(samples):,} samples = {len(samples) / sample_rate:.4f} s < "
            f"{needed:,} samples = {min_seconds:g} s)"
        )
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


def trim_silence(samples: np.ndarray, sample_rate: int, trim_db: float) -> np.ndarray:
    """The recording without its leading and trailing frames quieter than `trim_db` below its
    loudest frame (0: untouched). A trim that would leave under 0.1 s keeps the recording
    whole: that is a click or a burst, not a word with silence around it."""
    if trim_db <= 0 or len(samples) < 2048:
        return samples
    trimmed, _ = librosa.effects.trim(samples, top_db=trim_db, frame_length=512, hop_length=128)
    return trimmed if len(trimmed) >= 0.1 * sample_rate else samples


def load_clip(
    path,
    sample_rate: int,
    clip_seconds: float,
    min_seconds: float,
    silence_db: float,
    trim_db: float = 0.0,
):
    """Read, check, trim silence from and fit one clip to the configured length (a short clip
    is padded, never dropped)."""
    samples = read_audio(path, sample_rate)
    check_audio(samples, sample_rate, min_seconds, silence_db)
    samples = trim_silence(samples, sample_rate, trim_db)
    return fit_clip(samples, clip_length(sample_rate, clip_seconds))


def native_rate(paths: list[str], fallback: int) -> int:
    """The sample rate every readable file shares (a header read), else `fallback`: 8 kHz
    recordings stay at 8 kHz instead of gaining empty bands above 4 kHz."""
    rates = set()
    for path in paths:
        try:
            rates.add(sf.info(os.fsencode(path)).samplerate)
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
            continue  # an unreadable file is rejected, with its reason, when it is read
        if len(rates) > 1:
            return fallback
    return rates.pop() if rates else fallback


def clip_length(sample_rate: int, clip_seconds: float) -> int:
    return int(round(sample_rate * clip_seconds))
