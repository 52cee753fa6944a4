"""The speech app's typed config: data, features, augmentation, model, baselines, training,
scoring."""

import dataclasses
from typing import Literal

from shared.config import ConfigError, RunConfig, TrackConfig, TrainConfig, TuneConfig, bounded


@dataclasses.dataclass
class SpeechTrainConfig(TrainConfig):
    """The shared training settings, and how a small training split fills an epoch."""

    # a smaller training split is repeated within an epoch (augmented afresh each time) to at
    # least this many clips: 7 clips a word give a few steps an epoch, too few to learn from
    min_epoch_clips: int = bounded(2000, low=0)


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
    # every file is resampled to this rate (Hz); 0: the rate all files share (8 kHz stays
    # 8 kHz), 16 kHz when they differ
    sample_rate: int = bounded(0, low=0)
    clip_seconds: float = bounded(1.0, low=0.1)  # clips are trimmed or padded to this length
    min_seconds: float = bounded(0.0, low=0.0)  # > 0: shorter recordings are rejected (0: padded)
    # peak level (dBFS) below which a file is silent: -80 is a few steps of 16-bit audio, below
    # any real quiet recording (Speech Commands holds words peaking at -53 dBFS)
    silence_db: float = bounded(-80.0, high=0.0)
    trim_db: float = bounded(40.0, low=0.0)  # cut leading/trailing audio this far below the peak
    words: list[str] = bounded([])  # only clips of these words (e.g. the digits); []: every word
    test_speakers: list[str] = bounded([])  # named speakers form the test split (overrides draw)
    val_speakers: list[str] = bounded([])  # named speakers form the validation split
    # >= 0: recordings whose {index} is at most this are the test split (Free Spoken Digit: 4)
    test_index_max: int = bounded(-1, low=-1)
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)

    def validate(self) -> None:
        if 0 < self.sample_rate < 1000:
            raise ConfigError(
                f"data.sample_rate must be 0 (the files' own) or >= 1000, got {self.sample_rate}"
            )
        if set(self.test_speakers) & set(self.val_speakers):
            both = sorted(set(self.test_speakers) & set(self.val_speakers))
            raise ConfigError(f"data.test_speakers and data.val_speakers share {both}")
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
    # 0 in the next four: chosen for the sample rate (40 bands from 16 kHz, 32 below; a 25 ms
    # window, a 20 ms hop, the FFT the next power of two above the window)
    n_mels: int = bounded(0, low=0)  # mel bands
    n_fft: int = bounded(0, low=0)  # FFT size (samples)
    win_length: int = bounded(0, low=0)  # analysis window (samples, <= n_fft)
    hop_length: int = bounded(0, low=0)  # frame step (samples)
    top_db: float = bounded(80.0, low=0.0)  # dB relative to the clip's peak, floored this far
    # below it (a level-free input); 0: absolute dB (power 1 = 0 dB)
    fmin: float = bounded(20.0, low=0.0)  # lowest mel frequency (Hz)
    fmax: float = bounded(7600.0, low=0.0, low_open=True)  # highest mel frequency (Hz)
    n_mfcc: int = bounded(20, low=2)  # mfcc: coefficients kept
    deltas: bool = True  # mfcc: append first and second time derivatives
    workers: int = bounded(2, low=1)  # processes for >= 5,000 uncached files (1: in-process)
    cache_dir: str = ""  # per-file feature cache; empty: <run.root>/speech/feature-cache

    def validate(self) -> None:
        smallest = {"n_mels": 4, "n_fft": 16, "win_length": 16}
        for key, low in smallest.items():
            if 0 < getattr(self, key) < low:
                raise ConfigError(f"features.{key} must be 0 (auto) or >= {low}")
        if self.n_fft and self.win_length > self.n_fft:
            raise ConfigError(
                "features.win_length must be <= features.n_fft, got "
                f"{self.win_length} > {self.n_fft}"
            )
        if self.fmin >= self.fmax:
            raise ConfigError(
                f"features.fmin must be below features.fmax, got {self.fmin} >= {self.fmax}"
            )

    def params(self, sample_rate: int, clip_seconds: float, trim_db: float = 0.0) -> dict:
        """Everything that changes the numbers a model sees (not where or how fast), with the
        sizes left at 0 chosen for `sample_rate`."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_PARAMS}
        win = self.win_length or int(round(0.025 * sample_rate))
        n_fft = self.n_fft or max(win, 1 << (win - 1).bit_length())
        sizes = {
            "n_mels": self.n_mels or (40 if sample_rate >= 16000 else 32),
            "n_fft": n_fft,
            "win_length": min(win, n_fft),
            "hop_length": self.hop_length or int(round(0.02 * sample_rate)),
        }
        fixed = {"sample_rate": sample_rate, "clip_seconds": clip_seconds, "trim_db": trim_db}
        return values | sizes | fixed


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
    # speaker change, as resampling the voice would make it: a random warp of the mel axis up
    # to this fraction (vocal-tract-length perturbation) and of the time axis (tempo)
    vtlp: float = bounded(0.15, low=0.0, high=0.5)
    tempo: float = bounded(0.15, low=0.0, high=0.5)


@dataclasses.dataclass
class ModelConfig:
    """The network: a 2-D CNN with residual blocks, or a CRNN (convolutions + bidirectional GRU)."""

    architecture: Literal["cnn", "crnn"] = "cnn"  # which builder
    filters: list[int] = bounded([16, 32, 64], low=1)  # channels per convolution stage
    rnn_units: int = bounded(64, low=1)  # crnn: GRU units per direction
    dropout: float = bounded(0.2, low=0.0, high=0.9)  # dropout before the classifier
    label_smoothing: float = bounded(0.05, low=0.0, high=0.5)  # cross-entropy label smoothing
    # utterance: each clip's bins to zero mean and unit spread over its own frames (CMVN, after
    # augmentation), which removes the microphone's and the room's colouring; none: only the
    # training set's per-bin statistics
    cmvn: Literal["utterance", "none"] = "utterance"


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
    # leave-one-speaker-out: train the network and the baselines again without each speaker
    # (or group of speakers) and test on it; per-speaker accuracy and the mean in metrics.json
    loso: bool = False
    loso_folds: int = bounded(10, low=2)  # at most this many trainings: speakers grouped in folds


@dataclasses.dataclass
class ScoreConfig:
    """Batch scoring of audio files."""

    chunk_files: int = bounded(256, low=1)  # files read, checked and scored at a time
    batch_size: int = bounded(128, low=1)  # clips or windows per model call
    top_k: int = bounded(3, low=1)  # words with probabilities written per file
    window_hop_seconds: float = bounded(0.25, low=0.01)  # long recordings: window step
    window_min_db: float = bounded(-12.0, high=0.0)  # skip windows this far below the loudest


@dataclasses.dataclass
class SequenceConfig:
    """task=sequence: word sequences (speech-to-text for a small vocabulary) with a CTC model.

    Without sentence-level data (a `path,transcript` manifest or LibriSpeech-style
    `*.trans.txt` folders), utterances are made from the single-word clips of each split:
    several clips of one speaker in a row, with random gaps, levels and background noise."""

    unit: Literal["word", "char"] = "word"  # CTC tokens: words (small vocabulary) or characters
    words: list[int] = bounded([3, 5], low=1)  # generated utterances: fewest and most words
    utterances: list[int] = bounded([3000, 300, 300], low=1)  # generated train, val, test
    gap_seconds: list[float] = bounded([0.05, 0.3], low=0.0)  # silence between two words
    level_db: float = bounded(6.0, low=0.0)  # each word's level varies by up to +- this
    snr_db: list[float] = bounded([10.0, 30.0])  # background noise of a generated utterance
    # each word of a generated training utterance is played up to +- this fraction faster or
    # slower (speed perturbation: tempo and pitch, another voice); 0: as recorded
    speed: float = bounded(0.1, low=0.0, high=0.5)
    # generated utterances draw each word from any speaker of the split, not all from one: for
    # sets of a clip or two per speaker (the Speech Commands subset), where one speaker's
    # utterances would repeat one word; the splits stay speaker-disjoint
    mix_speakers: bool = False
    max_seconds: float = bounded(4.0, low=0.5)  # utterances are padded (or cut) to this length
    filters: list[int] = bounded([16, 32], low=1)  # convolution stages (each halves frequency)
    # time subsampling of the strided convolutions (a power of two up to 2 ** stages): frames
    # per output step of the CTC model
    subsample: int = bounded(4, low=1, choices=[1, 2, 4, 8])
    rnn_units: int = bounded(96, low=1)  # GRU units per direction, two layers
    dropout: float = bounded(0.2, low=0.0, high=0.9)
    beam_width: int = bounded(8, low=1)  # beam search width (1: greedy)

    def validate(self) -> None:
        if len(self.words) != 2 or self.words[0] > self.words[1]:
            raise ConfigError(f"sequence.words must be [fewest, most], got {self.words}")
        if len(self.utterances) != 3:
            raise ConfigError(
                f"sequence.utterances must be [train, val, test], got {self.utterances}"
            )
        if self.subsample > 2 ** len(self.filters):
            raise ConfigError(
                f"sequence.subsample must be <= 2 ** len(sequence.filters) (each stage halves "
                f"time at most once), got {self.subsample} with {len(self.filters)} stage(s)"
            )


@dataclasses.dataclass
class Config:
    task: Literal["word", "sequence"] = "word"  # one word per clip, or word sequences (CTC)
    sequence: SequenceConfig = dataclasses.field(default_factory=SequenceConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    train: SpeechTrainConfig = dataclasses.field(default_factory=SpeechTrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)

    def validate(self) -> None:
        bands = self.features.n_mels or 32  # 0 (auto): 32 bands at the lowest rates
        if self.baseline.models and self.baseline.n_mfcc > bands:
            raise ConfigError(
                f"baseline.n_mfcc must be <= features.n_mels (MFCCs come from the mel bands), got "
                f"{self.baseline.n_mfcc} > {bands}"
                + ("" if self.features.n_mels else " (features.n_mels 0 gives 32 at 8 kHz)")
            )
