"""The fraud app's typed config: data, model, training, evaluation costs and scoring."""

import dataclasses
from typing import Literal

import pandas as pd

from apps.fraud.sample import SimulatorConfig
from shared.config import (
    ConfigError,
    RunConfig,
    TrackConfig,
    TrainConfig,
    TuneConfig,
    bounded,
    listed,
)

CREDITCARD_FEATURES = [f"V{i}" for i in range(1, 29)]


@dataclasses.dataclass
class DataConfig:
    """Where the rows are, how the file is written, which column is which, and how to split."""

    source: Literal["simulator", "file"] = "simulator"  # simulator: write the seeded sample to
    # `path` first; file: read `path` as it is
    path: str = "datasets/fraud/generated/transactions.parquet"  # CSV, TSV, text or Parquet file
    names: list[str] | None = None  # column names of a file without a header row, in file
    # order (the Statlog German credit file); None: the first line is the header
    separator: str = "auto"  # auto: tab for .tsv/.txt, else comma; whitespace: runs of spaces
    # or tabs (Statlog files); or any one character
    layout: Literal["generic", "creditcard"] = "generic"  # creditcard: Time, V1..V28, Amount, Class
    label: str = "is_fraud"  # label column (generic layout)
    positive_label: str = "1"  # label value of the positive class (fraud; bad credit)
    negative_label: str = "0"  # label value of the negative class; any other value is a reject
    id: str | None = "transaction_id"  # unique row id, copied to the scores (optional)
    timestamp: str | None = "timestamp"  # transaction time; enables time splits and history
    # features
    timestamp_unit: Literal["datetime", "seconds", "year"] = "datetime"  # seconds: numeric
    # offsets; year: whole years (order and splits only, no calendar or history features); a
    # datetime column holding whole numbers 1000..9999 is read as years
    entity: str | None = "card_id"  # card/customer column for per-entity history (optional)
    amount: str | None = "amount"  # amount column; enables amount features and amount-based cost
    categorical: list[str] | None = None  # None: every remaining non-numeric column
    numeric: list[str] | None = None  # None: every remaining numeric column
    exclude: list[str] = listed([])  # columns never used as features
    windows: list[str] = listed(["1h", "24h", "7d"])  # trailing history windows (pandas offsets)
    max_categories: int = bounded(1000, low=1)  # most frequent values kept per categorical column
    split: Literal["auto", "time", "stratified"] = "auto"  # auto: data.split_column if set, else
    # time order (data.split_by, else data.timestamp) if there is one, else stratified at random
    split_column: str | None = None  # column naming each row's split: train, validation, test
    # (dev/val/valid as data.dev_split says); never a feature
    dev_split: Literal["validation", "test"] = "validation"  # what dev/val/valid mean
    split_by: str | None = None  # date, year or numeric time column to split on (None: the
    # timestamp); a column other than data.timestamp is never a feature
    test_period: str | None = None  # time split: the test set is every row from the start of
    # this period on (a year 2019, a month 2019-06, a date, or a number for a numeric column;
    # quote dates in YAML); None: the latest data.test_fraction of the rows
    val_period: str | None = None  # with test_period: rows from this period up to the test
    # period are validation; None: the latest data.val_fraction of the rows before the test
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # validation share
    test_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # test share
    # (the latest rows, for a time split)
    simulator: SimulatorConfig = dataclasses.field(default_factory=SimulatorConfig)  # the sample

    def validate(self) -> None:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction must leave rows to train on, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        for window in self.windows:
            try:
                if pd.Timedelta(window).total_seconds() <= 0:
                    raise ValueError
            except ValueError as exc:
                raise ConfigError(
                    f"data.windows: {window!r} is not a positive duration such as 1h or 7d"
                ) from exc
        self._validate_reading()
        self._validate_split()

    def _validate_reading(self) -> None:
        if self.names is not None:
            repeated = sorted({n for n in self.names if self.names.count(n) > 1})
            if not self.names or repeated or "" in self.names:
                raise ConfigError(
                    f"data.names: expected distinct, non-empty column names, got {self.names!r}"
                )
        if self.separator not in ("auto", "whitespace") and len(self.separator) != 1:
            raise ConfigError(
                "data.separator: expected auto, whitespace or one character, got "
                f"{self.separator!r}"
            )
        if self.positive_label.strip() == self.negative_label.strip():
            raise ConfigError(
                "data.positive_label and data.negative_label must differ, both are "
                f"{self.positive_label!r}"
            )

    def _validate_split(self) -> None:
        if self.split_column and (self.split != "auto" or self.split_by or self.test_period):
            raise ConfigError(
                f"data.split_column={self.split_column!r} gives every row's split: leave "
                "data.split=auto and data.split_by / data.test_period unset"
            )
        if self.split == "stratified" and (self.split_by or self.test_period):
            raise ConfigError(
                "data.split=stratified splits at random: data.split_by and data.test_period "
                "need data.split=time or auto"
            )
        if self.val_period and not self.test_period:
            raise ConfigError("data.val_period needs data.test_period (the end of validation)")
        resolved = self.resolved()
        if (self.split == "time" or self.test_period) and not (
            resolved.split_by or resolved.timestamp
        ):
            raise ConfigError(
                "a time split (data.split=time, data.test_period) needs a time column: set "
                "data.split_by (a date, year or time column) or data.timestamp"
            )

    def resolved(self) -> "DataConfig":
        """The config with the fixed column names of the credit-card layout filled in."""
        if self.layout != "creditcard":
            return self
        return dataclasses.replace(
            self,
            label="Class",
            positive_label="1",
            negative_label="0",
            id=None,
            timestamp="Time",
            timestamp_unit="seconds",
            entity=None,
            amount="Amount",
            categorical=[],
            numeric=list(CREDITCARD_FEATURES),
        )


@dataclasses.dataclass
class ModelConfig:
    """The supervised network and the autoencoder."""

    hidden_units: list[int] = bounded([128, 64], low=1)  # widths of the plain MLP (used when
    # model.residual_blocks is 0)
    dropout: float = bounded(0.2, low=0.0, high=0.9)  # dropout after each hidden layer
    numeric_embedding: Literal["periodic", "piecewise", "none"] = "periodic"  # per-column
    # embedding of the numerics (Gorishniy et al. 2022): periodic (PLR), piecewise-linear on
    # training quantile bins (PLE), or none (the standardised values only)
    numeric_embedding_dim: int = bounded(8, low=1)  # units per numeric column's embedding
    embedding_frequencies: int = bounded(16, low=1)  # periodic: frequencies per column
    embedding_sigma: float = bounded(0.1, low=0.0, low_open=True)  # periodic: spread of the
    # initial frequencies (the paper's most sensitive knob)
    piecewise_bins: int = bounded(16, low=2)  # piecewise: quantile bins per column
    residual_blocks: int = bounded(2, low=0)  # pre-norm residual MLP blocks (0: plain MLP)
    block_width: int = bounded(64, low=1)  # width of the residual blocks
    blend: bool = True  # also report a blend of the network and gradient boosting (weight
    # fitted on validation); the run ships whichever model is best on validation AUPRC
    embedding_dim: int = bounded(0, low=0)  # per categorical column; 0: from the vocabulary size
    loss: Literal["bce", "focal"] = "bce"  # binary cross-entropy or focal loss
    focal_gamma: float = bounded(2.0, low=0.0)  # focusing parameter of the focal loss
    class_weight: Literal["none", "sqrt", "balanced"] = "sqrt"  # up-weighting of the rare class
    autoencoder_units: list[int] = bounded([32, 8], low=1)  # encoder widths; the decoder
    # mirrors them
    autoencoder_max_onehot: int = bounded(50, low=0)  # categoricals with more values stay out
    # of the autoencoder
    autoencoder_epochs: int = bounded(15, low=1)  # epochs for the autoencoder
    autoencoder_learning_rate: float | None = bounded(None, low=0.0, low_open=True)  # its peak
    # rate; None: train.learning_rate


@dataclasses.dataclass
class EvaluateConfig:
    """The rule that picks the decision threshold, its costs, and the alert budgets reported."""

    threshold_rule: Literal["auto", "cost", "f1"] = "auto"  # cost: minimise expected cost on
    # validation; f1: maximise F1 on validation; auto: cost when costs are known (a missed
    # positive costs its amount, or evaluate.fn_cost is set), else f1
    fn_cost: float | None = bounded(None, low=0.0)  # cost of a missed positive when not its
    # amount (None: not given)
    fn_cost_from_amount: bool = True  # a missed fraud costs its amount (needs an amount column)
    fp_cost: float = bounded(5.0, low=0.0)  # cost of reviewing one false alarm
    alert_budgets: list[float] = bounded([0.005, 0.01], low=0.0, high=1.0, low_open=True)  # top
    # shares of rows by score whose recall is reported

    def costs_known(self, amount: str | None) -> bool:
        """Whether a missed positive has a cost: its amount, or the configured constant."""
        return bool(self.fn_cost_from_amount and amount) or self.fn_cost is not None


@dataclasses.dataclass
class ScoreConfig:
    """Batch scoring."""

    chunk_rows: int = bounded(100_000, low=1)  # rows read, checked and scored at a time
    batch_size: int = bounded(8192, low=1)  # rows per model call


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
