"""The speech app's typed config: data, features, augmentation, model, baselines, training,
scoring."""

import dataclasses
from typing import Literal

from shared.config import ConfigError, RunConfig, TrainConfig, bounded


@dataclasses.dataclass
class SynthConfig:
    """The seeded spoken-word synthesizer that makes the sample data."""

    words: int = bounded(12, low=2, high=12)  # word classes (the first n of the inventory)
    speakers: int = bounded(40, low=3)  # synthetic voices
    repetitions: int = bounded(5, low=1)  # clips per word and speaker
    snr_db: list[float] = bounded([8.0, 30.0])  # background noise level range (dB SNR)
    seed: int = bounded(7, low=0)  # seeds voices, utterances and noise


@dataclasses.dataclass
class DataConfig:
    """Where the recordings are, how labels and speakers are read, and how they are split."""

    source: Literal["synthetic", "files"] = "synthetic"  # synthetic: write the sample to `path`
    path: str = "datasets/speech/generated/clips"  # audio folder or CSV manifest
    format: Literal["auto", "folder", "pattern", "csv"] = "auto"  # auto: from the path's contents
    filename_pattern: str = "{label}_{speaker}_{index}.wav"  # pattern layout (Free Spoken Digit)
    speaker_pattern: str = "{speaker}_nohash_{index}.wav"  # folder layout: speaker from file name
    split: Literal["auto", "speaker", "random"] = "auto"  # auto: speaker-disjoint when known
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # without own lists
    test_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # without own lists
    sample_rate: int = bounded(16000, low=1000)  # every file is resampled to this rate (Hz)
    clip_seconds: float = bounded(1.0, low=0.1)  # clips are trimmed or padded to this length
    min_seconds: float = bounded(0.2, low=0.0)  # shorter recordings are rejected as too short
    silence_db: float = bounded(-50.0, high=0.0)  # peak level (dBFS) below which a file is silent
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)

    def validate(self) -> None:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                "data.val_fraction + data.test_fraction must leave clips to train on, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.min_seconds > self.clip_seconds:
            raise ConfigError(
                f"data.min_seconds must be <= data.clip_seconds, got {self.min_seconds} > "
                f"{self.clip_seconds}"
            )


@dataclasses.dataclass
class FeatureConfig:
    """librosa features; saved with the model, and scoring refuses different ones."""

    kind: Literal["logmel", "mfcc"] = "logmel"  # log-mel spectrogram (dB) or MFCC
    n_mels: int = bounded(40, low=4)  # mel bands
    n_fft: int = bounded(512, low=16)  # FFT size (samples)
    win_length: int = bounded(400, low=16)  # analysis window (samples, <= n_fft)
    hop_length: int = bounded(320, low=1)  # frame step (samples); 320 at 16 kHz is 20 ms
    fmin: float = bounded(20.0, low=0.0)  # lowest mel frequency (Hz)
    fmax: float = bounded(7600.0, low=0.0, low_open=True)  # highest mel frequency (Hz)
    n_mfcc: int = bounded(20, low=2)  # mfcc: coefficients kept
    deltas: bool = True  # mfcc: append first and second time derivatives
    workers: int = bounded(2, low=1)  # processes for >= 5,000 uncached files (1: in-process)
    cache_dir: str = ""  # per-file feature cache; empty: <run.root>/speech/feature-cache

    def validate(self) -> None:
        if self.win_length > self.n_fft:
            raise ConfigError(
                "features.win_length must be <= features.n_fft, got "
                f"{self.win_length} > {self.n_fft}"
            )
        if self.fmin >= self.fmax:
            raise ConfigError(
                f"features.fmin must be below features.fmax, got {self.fmin} >= {self.fmax}"
            )

    def params(self, sample_rate: int, clip_seconds: float) -> dict:
        """Everything that changes the numbers a model sees (not where or how fast)."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_PARAMS}
        return values | {"sample_rate": sample_rate, "clip_seconds": clip_seconds}


NOT_PARAMS = ("workers", "cache_dir")


@dataclasses.dataclass
class AugmentConfig:
    """Random augmentation of the features, active in training only."""

    enabled: bool = True  # off: no augmentation layers at all
    time_shift: float = bounded(0.1, low=0.0, high=0.5)  # max shift, fraction of the clip
    noise_probability: float = bounded(0.5, low=0.0, high=1.0)  # chance of noise (logmel only)
    noise_snr_db: list[float] = bounded([5.0, 25.0])  # added background noise SNR range (dB)
    time_masks: int = bounded(2, low=0)  # SpecAugment time masks per clip
    time_mask_frames: int = bounded(6, low=1)  # max width of a time mask (frames)
    freq_masks: int = bounded(2, low=0)  # SpecAugment frequency masks per clip
    freq_mask_bins: int = bounded(5, low=1)  # max width of a frequency mask (bins)


@dataclasses.dataclass
class ModelConfig:
    """The network: a 2-D CNN with residual blocks, or a CRNN (convolutions + bidirectional GRU)."""

    architecture: Literal["cnn", "crnn"] = "cnn"  # which builder
    filters: list[int] = bounded([16, 32, 64], low=1)  # channels per convolution stage
    rnn_units: int = bounded(64, low=1)  # crnn: GRU units per direction
    dropout: float = bounded(0.2, low=0.0, high=0.9)  # dropout before the classifier
    label_smoothing: float = bounded(0.05, low=0.0, high=0.5)  # cross-entropy label smoothing


@dataclasses.dataclass
class BaselineConfig:
    """Classic baselines, fitted by `evaluate` on the network's own split and clips: the mean
    and standard deviation over time of each MFCC (with first and second deltas), standardised,
    into a scikit-learn classifier. Not shipped: scoring uses the network."""

    models: list[Literal["svm", "logistic"]] = bounded(["svm", "logistic"])  # []: none
    n_mfcc: int = bounded(13, low=2)  # MFCCs per frame (6 x n_mfcc statistics with the deltas)
    svm_c: float = bounded(10.0, low=0.0, low_open=True)  # SVM: inverse regularisation strength
    logistic_c: float = bounded(1.0, low=0.0, low_open=True)  # logistic: inverse regularisation

    def validate(self) -> None:
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"baseline.models names a baseline twice: {self.models}")


@dataclasses.dataclass
class EvaluateConfig:
    """What the evaluation shows."""

    top_k: int = bounded(3, low=2)  # top-k accuracy, reported when there are more than k classes
    example_inputs: int = bounded(8, low=0)  # test inputs (features) plotted with their predictions


@dataclasses.dataclass
class ScoreConfig:
    """Batch scoring of audio files."""

    chunk_files: int = bounded(256, low=1)  # files read, checked and scored at a time
    batch_size: int = bounded(128, low=1)  # clips or windows per model call
    top_k: int = bounded(3, low=1)  # words with probabilities written per file
    window_hop_seconds: float = bounded(0.25, low=0.01)  # long recordings: window step
    window_min_db: float = bounded(-12.0, high=0.0)  # skip windows this far below the loudest


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def validate(self) -> None:
        if self.baseline.models and self.baseline.n_mfcc > self.features.n_mels:
            raise ConfigError(
                f"baseline.n_mfcc must be <= features.n_mels (MFCCs come from the mel bands), got "
                f"{self.baseline.n_mfcc} > {self.features.n_mels}"
            )
