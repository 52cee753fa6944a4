"""librosa features of audio clips (with the parameters a config gives), and an on-disk cache
keyed by file content and parameters.

Training, evaluation and scoring all call `extract`, so a model always sees the numbers it was
trained on. Extraction is the slow part of a run: files are hashed, features of files seen
before with the same parameters are read from the cache, and the rest are computed in worker
processes.
"""

import functools
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import librosa
import numpy as np

from apps.nlp.speech.audio import AudioError, clip_length, load_clip
from apps.nlp.speech.config import Config
from shared.io import atomic_path, write_json

CHUNK = 64  # files per task sent to a worker process
# Starting a worker process (spawn, importing librosa) costs seconds, and one process extracts
# about 600 one-second clips/s: fewer uncached files than this are faster in-process.
MIN_PARALLEL_FILES = 5000


DEFAULT_RATE = 16000  # data.sample_rate 0 with files of several rates


def feature_params(config: Config, native: int | None = None) -> dict:
    """The run's feature parameters: the features config at the data's rate (data.sample_rate,
    else the files' own `native` rate) and clip length."""
    rate = config.data.sample_rate or native or DEFAULT_RATE
    return config.features.params(rate, config.data.clip_seconds, config.data.trim_db)


def audio_checks(config: Config) -> dict:
    """What makes a file usable (`extract_files`' `checks`): its length and level."""
    return {"min_seconds": config.data.min_seconds, "silence_db": config.data.silence_db}


def cache_root(config: Config) -> Path:
    """features.cache_dir, else <run.root>/speech/feature-cache."""
    return Path(config.features.cache_dir or Path(config.run.root) / "speech" / "feature-cache")


def extract(samples: np.ndarray, params: dict) -> np.ndarray:
    """(frames, bins) float32: log-mel power in dB, or MFCCs (with deltas) from the same mel."""
    fb = _mel_filters(
        params["sample_rate"], params["n_fft"], params["n_mels"], params["fmin"], params["fmax"]
    )
    spectrum = librosa.stft(
        samples,
        n_fft=params["n_fft"],
        hop_length=params["hop_length"],
        win_length=params["win_length"],
        center=True,
    )
    mel = fb @ (np.abs(spectrum) ** 2)
    # Relative to the clip's peak (floored top_db below it): real recordings differ in level by
    # tens of dB; absolute dB for top_db 0 and for the baselines' silence detection.
    top_db = params.get("top_db", 0.0)
    ref = max(float(mel.max()), 1e-10) if top_db else 1.0
    logmel = librosa.power_to_db(mel, ref=ref, amin=1e-10, top_db=top_db or None)
    if params["kind"] == "logmel":
        return np.ascontiguousarray(logmel.T, dtype=np.float32)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=params["n_mfcc"])
    if params["deltas"]:
        width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
        deltas = [librosa.feature.delta(mfcc, width=width, order=order) for order in (1, 2)]
        mfcc = np.concatenate([mfcc, *deltas])
    return np.ascontiguousarray(mfcc.T, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _mel_filters(sample_rate, n_fft, n_mels, fmin, fmax) -> np.ndarray:
    return librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=min(fmax, sample_rate / 2)
    )


def feature_shape(params: dict) -> tuple[int, int]:
    """(frames, bins) of one clip's features."""
    frames = 1 + clip_length(params["sample_rate"], params["clip_seconds"]) // params["hop_length"]
    if params["kind"] == "logmel":
        return frames, params["n_mels"]
    return frames, params["n_mfcc"] * (3 if params["deltas"] else 1)


def mfcc_params(params: dict, n_mfcc: int) -> dict:
    """The parameters of MFCCs with deltas on the same clips, mel bands and frames as `params`
    (absolute dB, so that `mfcc_statistics` can tell digital silence by its value)."""
    return params | {"kind": "mfcc", "n_mfcc": n_mfcc, "deltas": True, "top_db": 0.0}


def mfcc_statistics(features: np.ndarray, silence: np.ndarray) -> np.ndarray:
    """(clips, frames, coefficients) -> (clips, 2 x coefficients): each coefficient's mean and
    standard deviation over time, the classic fixed-length summary of a clip.

    Frames of digital silence (whose static coefficients equal `silence`, from `silence_frame`)
    are left out: the padding of a clip shorter than clip_seconds, and runs of zeros some
    recordings hold, are not part of the spoken word, and their -100 dB floor would pull a short
    clip's statistics far from a full clip's. (Deltas are not compared: near the signal they are
    not zero.)
    """
    out = np.empty((len(features), 2 * features.shape[2]), np.float32)
    statics = len(silence)
    for i, clip in enumerate(features):
        padding = np.isclose(clip[:, :statics], silence, rtol=1e-4, atol=1e-3).all(axis=1)
        kept = clip[~padding]
        kept = kept if len(kept) else clip
        out[i] = np.concatenate([kept.mean(axis=0), kept.std(axis=0)])
    return out


def silence_frame(params: dict) -> np.ndarray:
    """The static MFCCs (no deltas) of one frame of digital silence."""
    length = clip_length(params["sample_rate"], params["clip_seconds"])
    return extract(np.zeros(length, np.float32), params)[0, : params["n_mfcc"]]


def params_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FeatureCache:
    """features/<params digest>/<content hash>.npy: one entry per distinct file and parameters."""

    def __init__(self, root: str | Path, params: dict):
        self.folder = Path(root) / params_digest(params)
        self.params = params
        if not (self.folder / "params.json").exists():
            write_json(self.folder / "params.json", params)

    def path(self, content: str) -> Path:
        return self.folder / content[:2] / f"{content}.npy"

    def get(self, content: str) -> np.ndarray | None:
        path = self.path(content)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is computed again

    def put(self, content: str, features: np.ndarray) -> None:
        with atomic_path(self.path(content), suffix=".npy") as tmp:
            np.save(tmp, features, allow_pickle=False)


def extract_files(
    paths: list[str],
    params: dict,
    checks: dict,
    cache_root: str | Path,
    workers: int = 1,
    min_parallel: int = MIN_PARALLEL_FILES,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    """Features of every usable file, the reason for every other, and cache statistics.

    `checks` holds `min_seconds` and `silence_db` (they decide which files are usable, not the
    numbers). Files already in the cache are read; the rest are extracted by `workers` processes
    when there are at least `min_parallel` of them.
    """
    cache = FeatureCache(cache_root, params)
    features, rejects, todo = {}, {}, []
    for path in paths:
        try:
            content = file_digest(path)
        except OSError as exc:
            rejects[path] = f"cannot read the file ({exc.strerror})"
            continue
        cached = cache.get(content)
        if cached is not None:
            features[path] = cached
        else:
            todo.append((path, content))
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    parallel = workers > 1 and len(todo) >= min_parallel and len(chunks) > 1
    if parallel:
        # spawn, not fork: the parent has TensorFlow's threads running, which fork would copy.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
            task = functools.partial(
                _extract_chunk, params=params, checks=checks, cache_root=str(cache_root)
            )
            done = [item for chunk in pool.map(task, chunks) for item in chunk]
    else:
        done = [item for c in chunks for item in _extract_chunk(c, params, checks, cache_root)]
    for path, result in done:
        if isinstance(result, str):
            rejects[path] = result
        else:
            features[path] = result
    stats = {
        "files": len(paths),
        "cached": len(paths) - len(todo) - _unreadable(rejects, todo),
        "extracted": len(todo),
        "workers": min(workers, len(chunks)) if parallel else 1,
    }
    return features, rejects, stats


def _unreadable(rejects: dict, todo: list) -> int:
    pending = {path for path, _ in todo}
    return sum(1 for path in rejects if path not in pending)


def _extract_chunk(chunk, params: dict, checks: dict, cache_root) -> list:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cache = FeatureCache(cache_root, params)
    out = []
    for path, content in chunk:
        try:
            rate, seconds = params["sample_rate"], params["clip_seconds"]
            samples = load_clip(path, rate, seconds, **checks, trim_db=params.get("trim_db", 0.0))
        except AudioError as exc:
            out.append((path, str(exc)))
            continue
        features = extract(samples, params)
        cache.put(content, features)
        out.append((path, features))
    return out
