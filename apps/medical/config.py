"""The medical app's typed config: data, augmentation, model, training, calibration and scoring."""

import dataclasses
from typing import Literal

from shared.config import (
    ConfigError,
    ExportConfig,
    RunConfig,
    ScheduledTrainConfig,
    TrackConfig,
    TuneConfig,
    bounded,
)
from shared.images import DEFAULT_MAX_PIXELS
from shared.tta import parse_views

WINDOW_PRESETS = {  # (centre, width) in the file's rescaled units (Hounsfield units for CT)
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


@dataclasses.dataclass
class DataConfig:
    """Where the images are, in which format, how DICOM pixels become 8-bit, how to split."""

    source: Literal["generated", "files"] = "generated"  # generated: write the sample to `path`
    path: str = "datasets/medical/generated/chest.npz"  # .npz, image/DICOM folder or .csv manifest
    format: Literal["auto", "npz", "folder", "csv"] = "auto"  # auto: from the path
    image_size: list[int] = bounded([64, 64], low=8)  # [height, width] the model works at
    channels: int | None = bounded(None, choices=[1, 3])  # 1 gray, 3 RGB; None: from the data
    window: str = ""  # DICOM window: '' the file's own centre/width (else min-max), or a preset
    negative_class: str = ""  # binary tasks: the 'no finding' class ('' guesses normal/negative)
    split_column: str | None = None  # CSV manifests: the column naming each row's split
    # (train/validation/test); None: a column named `split` if there is one, else drawn
    dev_split: Literal["validation", "test"] = "validation"  # what dev/val/valid folders and
    # split values mean: validation, or the test set (data that publishes only train and val)
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # when no own val split
    test_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # when no own test
    allow_patient_overlap: bool = False  # true: a patient in two given splits is only reported
    max_image_pixels: int = bounded(DEFAULT_MAX_PIXELS, low=1)  # larger files are rejected
    generated_images: int = bounded(3000, low=60)  # images the sample generator writes
    generated_seed: int = bounded(7, low=0)  # the generator's seed

    def validate(self) -> None:
        if len(self.image_size) != 2:
            raise ConfigError(f"data.image_size: expected [height, width], got {self.image_size!r}")
        if self.window and self.window not in WINDOW_PRESETS:
            raise ConfigError(
                f"data.window: expected '' (from the file) or one of "
                f"{', '.join(WINDOW_PRESETS)}, got {self.window!r}"
            )
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                "data.val_fraction + data.test_fraction must leave images to train on, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


@dataclasses.dataclass
class AugmentConfig:
    """Radiograph augmentation, active in training only: small rotations, shifts, contrast."""

    enabled: bool = True  # off: no augmentation layers at all
    flip: bool = False  # mirror left-right (off: anatomy has a side, e.g. the heart)
    rotation: float = bounded(0.02, low=0.0, high=0.5)  # max rotation, fraction of a full turn
    translation: float = bounded(0.05, low=0.0, high=0.5)  # max shift, fraction of the size
    zoom: float = bounded(0.05, low=0.0, high=0.9)  # max zoom in or out, fraction of the size
    contrast: float = bounded(0.2, low=0.0, high=1.0)  # max contrast change factor (0: off)


@dataclasses.dataclass
class ModelConfig:
    """The network: a small CNN, a residual network or a local KerasHub backbone."""

    architecture: Literal["cnn", "resnet", "transfer"] = "cnn"  # which builder
    filters: list[int] = bounded([16, 32, 64], low=1)  # channels per stage (cnn and resnet)
    blocks_per_stage: int = bounded(1, low=1)  # residual blocks per stage (resnet)
    # cnn: 3x3 conv-BN-ReLU layers per stage. One per stage costs what a plain 3-block CNN
    # does per epoch (batch norm is most of the difference on a CPU); two see more per stage.
    convs_per_stage: int = bounded(2, low=1)
    dropout: float = bounded(0.2, low=0.0, high=0.9)  # dropout before the classifier
    backbone: str = ""  # transfer: local KerasHub preset folder (no downloads)
    class_weight: Literal["balanced", "sqrt", "none"] = "balanced"  # single-label imbalance

    def validate(self) -> None:
        if self.architecture == "transfer" and not self.backbone:
            raise ConfigError(
                "model.backbone: architecture 'transfer' needs a local KerasHub preset folder"
            )


@dataclasses.dataclass
class BaselineConfig:
    """Pixels + logistic regression (scikit-learn), fitted in the same run on the same split
    with the network's class weights (`model.class_weight`)."""

    enabled: bool = True  # off: the leaderboard has the network alone
    # Inverse L2 strengths tried; the one with the lowest validation log-loss is kept. Tens of
    # thousands of standardised pixels want a strong penalty: the grid reaches C = 1e-6.
    C: list[float] = bounded([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0], low=0.0, low_open=True)
    max_iter: int = bounded(300, low=1)  # lbfgs iterations per fit
    max_train_images: int = bounded(20_000, low=10)  # a larger train split is subsampled
    # (stratified, seeded): one float per pixel per image must fit in memory
    recipe_cnn: bool = False  # also train the plain 3-block CNN recipe (apps/medical/recipe.py)
    recipe_epochs: int = bounded(60, low=1)  # its epoch limit (early stopping, patience 5)


@dataclasses.dataclass
class OperatingPointConfig:
    """How the decision threshold is chosen on the validation split."""

    metric: Literal["sensitivity", "specificity"] = "sensitivity"  # which rate must hold
    target: float = bounded(0.9, low=0.0, high=1.0, low_open=True)  # its minimum on validation


@dataclasses.dataclass
class EvaluateConfig:
    """What the evaluation computes and shows."""

    bootstrap: int = bounded(1000, low=0)  # bootstrap resamples for the 95% intervals (0: none)
    calibration_bins: int = bounded(10, low=2)  # equal-width bins of the ECE and diagram
    gradcam_per_group: int = bounded(4, low=0)  # Grad-CAM images per group (TP, FP, FN)
    focus_class: str = ""  # class whose TP/FP/FN are explained ('' positive or most common)
    # Test-time augmentation: also score the mean probability over `tta_views` (shared/tta.py
    # names them); the leaderboard shows both and the run ships TTA only if it wins on
    # validation AUC. Default views are small shifts: no mirroring, which anatomy with a side
    # (chest radiographs) forbids; add hflip for fundus photos or skin images.
    tta: bool = False
    tta_views: list[str] = dataclasses.field(
        default_factory=lambda: [
            "identity",
            "shift:0.04:0",
            "shift:-0.04:0",
            "shift:0:0.04",
            "shift:0:-0.04",
        ]
    )

    def validate(self) -> None:
        try:
            parse_views(self.tta_views)
        except ValueError as exc:
            raise ConfigError(f"evaluate.tta_views: {exc}") from None


@dataclasses.dataclass
class ScoreConfig:
    """Batch scoring of NPZ arrays, image files and DICOM files."""

    chunk_files: int = bounded(512, low=1)  # files read, checked and scored at a time
    batch_size: int = bounded(128, low=1)  # images per model call
    gradcam: bool = False  # write a Grad-CAM overlay PNG per scored image beside the output
    max_image_pixels: int = bounded(DEFAULT_MAX_PIXELS, low=1)  # larger files are rejected


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # TrainConfig plus train.schedule (cosine or one_cycle), train.lr_find (a range test picks
    # the peak rate) and the callback switches (shared.config.ScheduledTrainConfig)
    train: ScheduledTrainConfig = dataclasses.field(default_factory=ScheduledTrainConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    operating_point: OperatingPointConfig = dataclasses.field(default_factory=OperatingPointConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
