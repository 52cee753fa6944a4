"""The recsys app's typed config: data layout and splits, models, training, evaluation, serving."""

import dataclasses
from typing import Literal

from apps.recsys.sample import SimulatorConfig
from shared.config import ConfigError, RunConfig, TrackConfig, TrainConfig, TuneConfig, bounded


@dataclasses.dataclass
class DataConfig:
    """Where the interactions are, their layout, and how they are split."""

    source: Literal["simulator", "file"] = "simulator"  # simulator: write the sample to `path`
    path: str = "datasets/recsys/generated/ratings.csv"  # ratings file (see `layout`)
    layout: Literal["generic", "movielens"] = "generic"  # movielens: u.data, ratings.csv or .dat
    items_path: str | None = "datasets/recsys/generated/items.csv"  # item metadata (optional)
    test_path: str | None = None  # a given test file (u1.test) paired with `path` (u1.base)
    separator: str | None = None  # generic layout: field separator; None: `,` for .csv, tab for
    # .tsv, else read off the header line (tab, `::`, `,`, `;` or `|`); `\t` or `tab`: a tab
    user: str = "user_id"  # user id column (generic layout)
    item: str = "item_id"  # item id column (generic layout)
    rating: str | None = "rating"  # explicit rating column; None: implicit interactions only
    # (play counts, clicks): no rating models, retrieval only
    timestamp: str | None = "timestamp"  # time column (seconds or dates): the temporal split
    split_column: str | None = None  # generic layout: a column naming each row's split (train,
    # validation/dev/val, test); needs rating_split=given
    dev_split: Literal["validation", "test"] = "validation"  # what dev/val/valid in the split
    # column mean
    items_id: str | None = None  # item id column of the item metadata (generic layout);
    # None: the same name as data.item
    title: str = "title"  # title column of the item metadata (generic layout)
    genres: str | None = "genres"  # pipe-separated genres column of the item metadata
    tags_path: str | None = None  # item tags (MovieLens tags.csv: userId, movieId, tag, ...;
    # or any table with the item column and a `tag` column); a MovieLens folder's tags.csv is
    # found without it. Tags join the genres as item-tower features (cold start included)
    min_tag_items: int = bounded(2, low=1)  # a tag is a feature only if this many items have it
    # (a tag on one item says nothing about another)
    rating_split: Literal["random", "given"] = "random"  # given: the data names the test set
    # (data.test_path or data.split_column); validation then comes from the training rows
    val_fraction: float = bounded(0.1, low=0.0, high=0.5, low_open=True)  # rating validation share
    test_fraction: float = bounded(0.1, low=0.0, high=0.5, low_open=True)  # rating test share
    retrieval_holdout: Literal["auto", "time", "random"] = "auto"  # which of each user's
    # interactions are held out for retrieval: the last in time, or a seeded random choice;
    # auto: time when the data has timestamps, else random
    leave_out: int = bounded(2, low=1)  # retrieval: each user's k held-out interactions to test
    # (and k more to validation)
    cv_folds: int = bounded(5, low=2)  # cv without u1.base/u1.test ... files in data.path: this
    # many seeded random folds of the ratings
    min_user_interactions: int = bounded(5, low=1)  # fewer: the user stays in training only
    simulator: SimulatorConfig = dataclasses.field(default_factory=SimulatorConfig)  # sample

    @property
    def has_time(self) -> bool:
        """Whether the interactions carry a time (every MovieLens ratings file does)."""
        return self.layout == "movielens" or self.timestamp is not None

    @property
    def holdout_order(self) -> str:
        """'time' or 'random': how each user's retrieval hold-out is chosen."""
        if self.retrieval_holdout == "auto":
            return "time" if self.has_time else "random"
        return self.retrieval_holdout

    def validate(self) -> None:
        if self.source == "simulator" and self.layout != "generic":
            raise ConfigError(
                "data.source=simulator writes the generic layout; set data.layout=generic"
            )
        given = [key for key in ("test_path", "split_column") if getattr(self, key)]
        if self.rating_split == "given" and len(given) != 1:
            raise ConfigError(
                "data.rating_split=given needs one of data.test_path (the *.test file) or "
                "data.split_column"
            )
        if self.rating_split == "random" and given:
            raise ConfigError(f"data.{given[0]} is set: it needs data.rating_split=given")
        if self.split_column and self.layout != "generic":
            raise ConfigError("data.split_column needs data.layout=generic")
        if self.retrieval_holdout == "time" and not self.has_time:
            raise ConfigError("data.retrieval_holdout=time needs data.timestamp")
        if self.separator == "":
            raise ConfigError("data.separator: expected a separator, got an empty string")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                "data.val_fraction + data.test_fraction must leave rows to train on, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


@dataclasses.dataclass
class ModelConfig:
    """The rating models (MF, NCF) and the two-tower retrieval model."""

    mf_dim: int = bounded(32, low=1)  # matrix factorisation: latent factors
    mf_l2: float = bounded(0.1, low=0.0)  # L2 on the batch's user/item factors and biases (summed)
    ncf_dim: int = bounded(16, low=1)  # neural CF: GMF and MLP embedding width
    ncf_hidden: list[int] = bounded([64, 32], low=1)  # neural CF: MLP widths
    ncf_dropout: float = bounded(0.2, low=0.0, high=0.9)  # neural CF: dropout after MLP layers
    ncf_l2: float = bounded(1e-5, low=0.0)  # neural CF: L2 penalty on the embeddings
    tower_dim: int = bounded(32, low=1)  # two-tower: output embedding width
    tower_hidden: list[int] = bounded([64], low=1)  # two-tower: hidden widths of each tower
    user_history: bool = False  # two-tower: the user tower also reads the user's training
    # items (a weighted mean of learned item embeddings, YouTube-DNN style); not yet with
    # train.xla under mixed_bfloat16 (its loss went NaN in the first epoch there)
    history_length: int = bounded(100, low=1)  # two-tower history: at most this many of each
    # user's training items (the latest, when the data has times)
    history_half_life: float = bounded(0.0, low=0.0)  # two-tower history: an item's weight
    # halves every this many later items of the user (recency); 0: every item weighs the same
    item_features: bool = True  # two-tower: feed item genres to the item tower when known
    item_tags: bool = True  # two-tower: and the item's tags, when the data has a tags file
    sampling_correction: bool = True  # two-tower: logQ correction of the in-batch negatives
    temperature: float = bounded(0.2, low=0.0, low_open=True)  # two-tower: logits / temperature
    retrieval_epochs: int = bounded(20, low=1)  # two-tower: epochs
    retrieval_batch_size: int = bounded(256, low=2)  # two-tower: batch (= in-batch negatives + 1)
    retrieval_patience: int | None = bounded(None, low=0)  # two-tower: epochs without a
    # better validation Recall@10 before stopping (its per-epoch recall is noisy); None:
    # train.patience
    retrieval_learning_rate: float = bounded(3e-3, low=0.0, low_open=True)  # two-tower: peak rate
    bias_damping: float = bounded(10.0, low=0.0)  # bias baseline: shrinkage of user/item biases
    mf_implicit: bool = False  # MF: add SVD++'s implicit term (each user's set of rated items)
    surprise_svd: bool = False  # rating leaderboard: the `surprise` package's SVD at its
    # defaults on the same split (a benchmark-only extra; not installed: a failed row)


@dataclasses.dataclass
class EvaluateConfig:
    """Offline ranking evaluation."""

    ks: list[int] = bounded([10, 20], low=1)  # cut-offs reported for the ranking metrics
    max_k_plot: int = bounded(50, low=1)  # recall@K is plotted for K = 1..this
    relevant_min_rating: float | None = None  # a held-out item is relevant for the top-K
    # metrics if rated at least this; None: every held-out item is (needs explicit ratings)


@dataclasses.dataclass
class ServeConfig:
    """`recommend` and `score`."""

    k: int = bounded(10, low=1)  # items per user (recommend --k overrides)
    rating_model: Literal["mf", "ncf"] = "mf"  # which model `score` predicts ratings with
    chunk_rows: int = bounded(100_000, low=1)  # score: rows read, checked and scored at a time
    batch_size: int = bounded(8192, low=1)  # rows or users per model call
    index: Literal["brute_force", "ivf"] = "brute_force"  # recommend's top-K: exact, or an
    # inverted-file index (approximate: k-means lists, `ivf_probe` of them scored per user)
    ivf_lists: int = bounded(0, low=0)  # IVF lists; 0: the square root of the catalogue size
    ivf_probe: int = bounded(8, low=1)  # IVF lists scored per user (more: slower, exact-er)
    cold_items: bool = False  # recommend also items with metadata but no interactions (their
    # item-tower embedding from the genres alone, written by train as cold_items.npz)


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)

    def validate(self) -> None:
        if self.evaluate.relevant_min_rating is not None and self.data.rating is None:
            raise ConfigError(
                "evaluate.relevant_min_rating needs explicit ratings; the data is implicit "
                "(data.rating=null): every held-out item is relevant"
            )
