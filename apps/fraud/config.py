"""The fraud app's typed config: data, model, training, evaluation costs and scoring."""

import dataclasses
from typing import Literal

import pandas as pd

from apps.fraud.simulate import SimulatorConfig
from shared.config import ConfigError, RunConfig, TrainConfig, bounded, listed

CREDITCARD_FEATURES = [f"V{i}" for i in range(1, 29)]


@dataclasses.dataclass
class DataConfig:
    """Where the transactions are and which column is which."""

    source: Literal["simulator", "file"] = (
        "simulator"  # simulator: write the seeded sample to `path` first
    )
    path: str = "datasets/fraud/generated/transactions.parquet"  # CSV, TSV or Parquet file
    layout: Literal["generic", "creditcard"] = "generic"  # creditcard: Time, V1..V28, Amount, Class
    label: str = "is_fraud"  # 0/1 label column (generic layout)
    id: str | None = "transaction_id"  # unique row id, copied to the scores (optional)
    timestamp: str | None = (
        "timestamp"  # transaction time; enables time splits and history features
    )
    timestamp_unit: Literal["datetime", "seconds"] = "datetime"  # seconds: numeric offsets
    entity: str | None = "card_id"  # card/customer column for per-entity history (optional)
    amount: str | None = "amount"  # amount column; enables amount features and amount-based cost
    categorical: list[str] | None = None  # None: every remaining non-numeric column
    numeric: list[str] | None = None  # None: every remaining numeric column
    exclude: list[str] = listed([])  # columns never used as features
    windows: list[str] = listed(["1h", "24h", "7d"])  # trailing history windows (pandas offsets)
    max_categories: int = bounded(1000, low=1)  # most frequent values kept per categorical column
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)  # validation share
    test_fraction: float = bounded(
        0.15, low=0.0, high=0.5, low_open=True
    )  # test share (latest rows)
    simulator: SimulatorConfig = dataclasses.field(
        default_factory=SimulatorConfig
    )  # sample generator

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

    def resolved(self) -> "DataConfig":
        """The config with the fixed column names of the credit-card layout filled in."""
        if self.layout != "creditcard":
            return self
        return dataclasses.replace(
            self,
            label="Class",
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

    hidden_units: list[int] = bounded([128, 64], low=1)  # MLP widths of the supervised network
    dropout: float = bounded(0.2, low=0.0, high=0.9)  # dropout after each hidden layer
    embedding_dim: int = bounded(0, low=0)  # per categorical column; 0: from the vocabulary size
    loss: Literal["bce", "focal"] = "bce"  # binary cross-entropy or focal loss
    focal_gamma: float = bounded(2.0, low=0.0)  # focusing parameter of the focal loss
    class_weight: Literal["none", "sqrt", "balanced"] = "sqrt"  # up-weighting of the rare class
    autoencoder_units: list[int] = bounded(
        [32, 8], low=1
    )  # encoder widths; the decoder mirrors them
    autoencoder_max_onehot: int = bounded(
        50, low=0
    )  # categoricals with more values stay out of the AE
    autoencoder_epochs: int = bounded(15, low=1)  # epochs for the autoencoder


@dataclasses.dataclass
class EvaluateConfig:
    """Costs that pick the decision threshold, and the alert budgets reported."""

    fn_cost: float = bounded(
        100.0, low=0.0
    )  # cost of a missed fraud (if not taken from the amount)
    fn_cost_from_amount: bool = True  # a missed fraud costs its amount (needs an amount column)
    fp_cost: float = bounded(5.0, low=0.0)  # cost of reviewing one false alarm
    alert_budgets: list[float] = bounded(
        [0.005, 0.01], low=0.0, high=1.0, low_open=True
    )  # top shares


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
