"""The vision app's typed config: data, augmentation, model, training, evaluation and scoring."""

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
    listed,
)
from shared.images import DEFAULT_MAX_PIXELS
from shared.tta import parse_views

AUTO_SIZE_MAX = 64  # data.image_size []: larger images are shrunk to this long side
AUTO_SIZE_MIN = 16  # ... and smaller ones grown to this short side (the CNN pools twice)


@dataclasses.dataclass
class DataConfig:
    """Where the images are, in which format, and how they are split and sized."""

    source: Literal["digits", "files"] = "digits"  # digits: write scikit-learn's digits to `path`
    path: str = "datasets/vision/generated/digits"  # image folder, IDX folder, .npz or .csv file
    format: Literal["auto", "folder", "idx", "npz", "csv"] = "auto"  # auto: from the path
    # [height, width] the model works at; [] (the default): the data's own size, the long side
    # at most AUTO_SIZE_MAX px (aspect kept), the short side at least AUTO_SIZE_MIN px
    image_size: list[int] = bounded([], low=1)
    channels: int | None = bounded(None, choices=[1, 3])  # 1 gray, 3 RGB; None: from the data
    split_column: str | None = None  # CSV manifests: the column naming each row's split
    # (train/validation/test); None: a column named `split` if there is one, else drawn
    dev_split: Literal["validation", "test"] = "validation"  # what dev/val/valid folders and
    # split values mean: validation, or the test set (data that publishes only train and val)
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # when no own val split
    test_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # when no own test
    cache: Literal["memory", "disk", "none"] = "memory"  # decoded-image cache of file sources
    max_image_pixels: int = bounded(DEFAULT_MAX_PIXELS, low=1)  # larger files are rejected

    def validate(self) -> None:
        if len(self.image_size) not in (0, 2):
            raise ConfigError(
                f"data.image_size: expected [height, width] or [] (from the data), got "
                f"{self.image_size!r}"
            )
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                "data.val_fraction + data.test_fraction must leave images to train on, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


@dataclasses.dataclass
class AugmentConfig:
    """Random augmentation layers, active in training only (inference passes images through)."""

    enabled: bool = True  # off: no augmentation layers at all
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"  # mirror
    rotation: float = bounded(0.03, low=0.0, high=0.5)  # max rotation, fraction of a full turn
    zoom: float = bounded(0.1, low=0.0, high=0.9)  # max zoom in or out, fraction of the size
    translation: float = bounded(0.1, low=0.0, high=0.5)  # max shift, fraction of the size
    contrast: float = bounded(0.0, low=0.0, high=1.0)  # max contrast change factor (0: off)
    # Random resized crops (shared.layers.RandomResizedCrop): the smallest share of the image's
    # area a crop covers, aspect 3:4 to 4:3, resized back; one op that zooms and shifts (use it
    # instead of `zoom` and `translation`). 0: off.
    crop_scale: float = bounded(0.0, low=0.0, high=1.0)


@dataclasses.dataclass
class ModelConfig:
    """The network: a small CNN, a residual network or a KerasHub backbone with a new head."""

    architecture: Literal["cnn", "resnet", "transfer"] = "cnn"  # which builder
    filters: list[int] = bounded([32, 64], low=1)  # channels per stage (cnn and resnet)
    blocks_per_stage: int = bounded(2, low=1)  # residual blocks per stage (resnet)
    # cnn: 3x3 conv-BN-ReLU layers per stage. One costs about what the keras-io MNIST convnet
    # does per epoch at the same size; two see more per stage at twice the cost.
    convs_per_stage: int = bounded(2, low=1)
    dense_units: int = bounded(128, low=0)  # hidden units before the softmax (0: none)
    dropout: float = bounded(0.3, low=0.0, high=0.9)  # dropout before the classifier
    label_smoothing: float = bounded(0.0, low=0.0, high=0.5)  # cross-entropy label smoothing
    backbone: str = ""  # transfer: local KerasHub preset folder (no downloads)
    fine_tune_epochs: int = bounded(3, low=0)  # transfer: epochs with the backbone unfrozen
    fine_tune_learning_rate_ratio: float = bounded(0.1, low=0.0, high=1.0, low_open=True)  # of lr

    def validate(self) -> None:
        if self.architecture == "transfer" and not self.backbone:
            raise ConfigError(
                "model.backbone: architecture 'transfer' needs a local KerasHub preset folder"
            )


@dataclasses.dataclass
class BaselineConfig:
    """Pixels + logistic regression (scikit-learn), fitted in the same run on the same split."""

    enabled: bool = True  # off: the leaderboard has the network alone
    # Inverse L2 strengths tried; the one with the lowest validation log-loss is kept. Tens of
    # thousands of standardised pixels want a strong penalty: the grid reaches C = 1e-6.
    C: list[float] = bounded([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0], low=0.0, low_open=True)
    max_iter: int = bounded(300, low=1)  # lbfgs iterations per fit
    max_train_images: int = bounded(20_000, low=10)  # a larger train split is subsampled
    # (stratified, seeded): one float per pixel per image must fit in memory
    # Also train the keras-io "Simple MNIST convnet" recipe on the same split and input
    # pipeline (apps/vision/recipe.py): its accuracy and fit time sit on the leaderboard.
    recipe_cnn: bool = False
    recipe_epochs: int = bounded(15, low=1)  # the example's 15 epochs, no early stopping


@dataclasses.dataclass
class EvaluateConfig:
    """What the evaluation shows."""

    top_k: int = bounded(5, low=2)  # top-k accuracy, reported when there are more than k classes
    wrong_images: int = bounded(16, low=0)  # most-confidently-wrong test images in the grid
    gradcam_images: int = bounded(8, low=0)  # test images with a Grad-CAM overlay (0: none)
    gradcam_paths: list[str] = listed([])  # image files to explain besides the test images
    # Test-time augmentation: also score the mean probability over `tta_views` (names in
    # shared/tta.py) as the leaderboard row <architecture>_tta, with whether it beats the plain
    # network on validation. Evaluate only: `score` and the exports use the plain network.
    # Default views mirror and shift; drop hflip for images with a side (text, digits).
    tta: bool = False
    tta_views: list[str] = listed(["identity", "hflip", "shift:0.05:0", "shift:0:0.05"])

    def validate(self) -> None:
        try:
            parse_views(self.tta_views)
        except ValueError as exc:
            raise ConfigError(f"evaluate.tta_views: {exc}") from None


@dataclasses.dataclass
class ScoreConfig:
    """Batch scoring of image files."""

    chunk_files: int = bounded(512, low=1)  # files read, checked and scored at a time
    batch_size: int = bounded(128, low=1)  # images per model call
    top_k: int = bounded(3, low=1)  # labels with probabilities written per image
    max_image_pixels: int = bounded(DEFAULT_MAX_PIXELS, low=1)  # larger files are rejected


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # TrainConfig plus train.schedule (cosine or one_cycle), train.lr_find and the callback
    # switches (shared.config.ScheduledTrainConfig)
    train: ScheduledTrainConfig = dataclasses.field(default_factory=ScheduledTrainConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
