"""Scoring audio files with a trained run: each file's word, probability and top-k words.

A recording longer than a clip is scored in windows near its loudest level; the most confident
window answers.
"""

import numpy as np

from apps.nlp.speech.audio import (
    AudioError,
    check_audio,
    clip_length,
    fit_clip,
    read_audio,
    trim_silence,
)
from apps.nlp.speech.audio import windows as audio_windows
from apps.nlp.speech.config import Config
from apps.nlp.speech.features import extract, feature_params, feature_shape
from apps.nlp.speech.model import Meta, load_model, predict_features
from shared.io import DataError
from shared.run import RunDir


class SpeechScorer:
    """Audio files in -> predicted word, probability, top-k words; long files in windows."""

    def __init__(self, run: RunDir, config: Config):
        self.meta = Meta.read(run)
        self.params = self.meta.features
        # data.sample_rate 0 resolves to the rate the run found in its files
        check_features(feature_params(config, self.params["sample_rate"]), self.params, run)
        self.model = load_model(run)
        expected = (None, *feature_shape(self.params))
        if tuple(self.model.input.shape) != expected:
            raise DataError(
                f"{run.path}: the model takes {tuple(self.model.input.shape)} but its feature "
                f"parameters give {expected}; the run folder is inconsistent"
            )
        self.class_names = self.meta.class_names
        self.top_k = min(config.score.top_k, len(self.class_names))
        self.batch_size = config.score.batch_size
        rate = self.params["sample_rate"]
        self.length = clip_length(rate, self.params["clip_seconds"])
        self.hop = max(1, int(round(config.score.window_hop_seconds * rate)))
        self.min_db = config.score.window_min_db
        top = [
            f"top{i}_{kind}" for i in range(1, self.top_k + 1) for kind in ("word", "probability")
        ]
        self.columns = ["path", "predicted_word", "probability", *top, "window_offset_s", "windows"]

    def windows(self, path: str) -> tuple[np.ndarray, np.ndarray] | str:
        """Features of the file's clip (or of each loud-enough window), and window starts (s);
        or the reason the file cannot be scored."""
        rate = self.params["sample_rate"]
        try:
            samples = read_audio(path, rate)
            check_audio(samples, rate, **self.meta.checks)
        except AudioError as exc:
            return str(exc)
        samples = trim_silence(samples, rate, self.params.get("trim_db", 0.0))  # as in training
        if len(samples) <= self.length:
            return extract(fit_clip(samples, self.length), self.params)[None], np.zeros(1)
        pieces, starts = audio_windows(samples, self.length, self.hop)
        energy = 10 * np.log10(np.mean(pieces.astype(np.float64) ** 2, axis=1) + 1e-12)
        keep = energy >= energy.max() + self.min_db
        features = np.stack([extract(piece, self.params) for piece in pieces[keep]])
        return features, starts[keep] / rate

    def predict(self, paths: list[str]) -> list[list | str]:
        """Per path, in order: its output row, or the reason it cannot be scored."""
        found = [self.windows(path) for path in paths]
        ready = [f for f in found if not isinstance(f, str)]
        if not ready:
            return found
        prob = predict_features(
            self.model, np.concatenate([features for features, _ in ready]), self.batch_size
        )
        out, begin = [], 0
        for path, result in zip(paths, found, strict=True):
            if isinstance(result, str):
                out.append(result)
                continue
            features, offsets = result
            out.append(self._row(path, prob[begin : begin + len(features)], offsets))
            begin += len(features)
        return out

    def _row(self, path: str, windows: np.ndarray, offsets: np.ndarray) -> list:
        """One file's output row from its windows' probabilities: the most confident window's."""
        best = int(np.argmax(windows.max(axis=1)))
        row_prob = windows[best]
        order = np.argsort(-row_prob)[: self.top_k]
        row = [path, self.class_names[order[0]], round(float(row_prob[order[0]]), 6)]
        for k in order:
            row += [self.class_names[k], round(float(row_prob[k]), 6)]
        return row + [round(float(offsets[best]), 3), len(windows)]


def check_features(current: dict, saved: dict, run: RunDir) -> None:
    """Scoring with other feature parameters than training would feed the model other numbers."""
    differ = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k))
    if differ:
        detail = ", ".join(
            f"{k}: run {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ
        )
        raise DataError(
            f"feature parameters differ from those {run.path.name} was trained with ({detail}); "
            "score with the run's config or train again"
        )
