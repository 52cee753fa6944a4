"""The recsys app's steps: prepare, train, evaluate, score, export, and recommend."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.recsys import data as rs_data
from apps.recsys.config import Config
from apps.recsys.metrics import ranking_metrics, rating_metrics, recall_at_k, recall_curve
from apps.recsys.model import (
    build_item_tower,
    build_mf,
    build_ncf,
    build_retrieval,
    build_two_tower_trainer,
    build_user_tower,
    in_batch_softmax_loss,
)
from apps.recsys.simulate import simulate_ratings
from shared import evaluation as ev
from shared import leaderboard, training
from shared.config import ConfigError, load_config, to_dict
from shared.input_pipeline import in_memory_dataset
from shared.io import (
    DataError,
    atomic_dir,
    atomic_path,
    generated_is_current,
    read_json,
    record_generated,
    write_json,
    write_table,
)
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir, config_digest, load_meta
from shared.scoring import (
    Column,
    InputSchema,
    default_output_paths,
    predict_in_batches,
    print_counts,
    score_file,
)

APP = "recsys"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
RATING_MODELS = ("mf", "ncf")
MAX_K = 100  # recommend serves at most this many items per user
RETRIEVAL_K = 10  # the retrieval leaderboard's cut-off (Recall@10, NDCG@10)
RECALL_COLUMN = f"val_recall@{RETRIEVAL_K}"  # the two-tower history's validation Recall@10
CARD_TITLE = "Recommender: model card"


@dataclasses.dataclass
class Prepared:
    frame: pd.DataFrame  # user, item, rating, timestamp, rating_split, retrieval_split
    items: pd.DataFrame  # item, title, genres (empty when there is no metadata)
    folder: Path
    info: dict


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options=None) -> Prepared:
    """Read (or generate) the interactions, drop repeated pairs, split, check the splits."""
    data = config.data
    if data.source == "simulator":
        _ensure_sample(config)
    files = [Path(p) for p in (data.path, data.items_path, data.test_path) if p]
    stamp = [
        [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.exists()
    ]
    digest = config_digest({"data": to_dict(data), "seed": config.train.seed, "files": stamp})
    folder = Path(config.run.root) / APP / "prepared" / digest[:12]
    if (folder / "prepare.json").exists():
        print(f"prepare: using cached splits in {folder}", flush=True)
        return Prepared(
            pd.read_parquet(folder / "interactions.parquet"),
            pd.read_parquet(folder / "items.parquet"),
            folder,
            read_json(folder / "prepare.json"),
        )
    start = time.perf_counter()
    ratings_path, items_path = Path(data.path), Path(data.items_path) if data.items_path else None
    if not ratings_path.exists():
        raise DataError(f"{ratings_path}: no such file or folder (data.path)")
    if data.layout == "movielens" and ratings_path.is_dir():
        ratings_path, found = rs_data.find_movielens(ratings_path)
        items_path = items_path if items_path and items_path.is_file() else found
    frame, rejects = _read_interactions(data, ratings_path)
    items = _read_items(data, items_path)
    has_rating = bool(frame["rating"].notna().all())
    rating, retrieval, temporal = _split(frame, data, config.train.seed)
    frame = frame.drop(columns="given", errors="ignore")
    frame["rating_split"], frame["retrieval_split"] = rating, retrieval
    _check_splits(frame, temporal, has_rating, data)
    info = {
        "source": str(ratings_path),
        "test_source": data.test_path,
        "split_column": data.split_column,
        "items_source": str(items_path) if items_path and len(items) else None,
        "rows": int(len(frame)),
        "users": int(frame["user"].nunique()),
        "items": int(frame["item"].nunique()),
        "explicit_ratings": has_rating,
        "rejected_rows": int(len(rejects)),
        "rating_split": {s: int((frame.rating_split == s).sum()) for s in rs_data.SPLITS},
        "retrieval_split": {s: int((frame.retrieval_split == s).sum()) for s in rs_data.SPLITS},
        "retrieval_holdout": data.holdout_order,
        "simulated": data.source == "simulator",
        "leak_checks": "passed",
    }
    if training.is_chief():
        write_table(folder / "interactions.parquet", frame)
        write_table(folder / "items.parquet", items)
        write_table(folder / "rejects.csv", rejects)
        write_json(folder / "prepare.json", info)
    print(
        f"prepare: {len(frame):,} interactions, {info['users']:,} users, {info['items']:,} items "
        f"from {ratings_path} in {time.perf_counter() - start:.1f}s; {len(rejects):,} rows "
        f"set aside (repeated pairs) -> {folder / 'rejects.csv'}; splits pass the leak checks",
        flush=True,
    )
    return Prepared(frame, items, folder, info)


def _read_ratings(data, path: Path) -> pd.DataFrame:
    if data.layout == "movielens":
        return rs_data.read_movielens_ratings(path)
    return rs_data.read_interactions(
        path,
        data.user,
        data.item,
        data.rating,
        data.timestamp,
        data.separator,
        data.split_column,
        data.dev_split,
    )


def _read_interactions(data, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The interactions, each (user, item) pair once, and the rows set aside with the reason.

    With a given test file the frame gains `given`: train for the base file's rows, test for
    the test file's. A test pair that is also in the base file would be scored on a rating the
    models trained on: it is set aside, the base row kept.
    """
    frame, rejects = rs_data.deduplicate(_read_ratings(data, path))
    if not data.test_path:
        return frame, rejects.assign(file=str(path))
    test, test_rejects = rs_data.deduplicate(_read_ratings(data, Path(data.test_path)))
    in_base = pd.MultiIndex.from_frame(test[["user", "item"]]).isin(
        pd.MultiIndex.from_frame(frame[["user", "item"]])
    )
    both = test[in_base].copy()
    both.insert(0, "reason", "pair also in the base file (data.path): the base row is kept")
    frame = pd.concat(
        [frame.assign(given="train"), test[~in_base].assign(given="test")], ignore_index=True
    )
    rejects = pd.concat(
        [
            rejects.assign(file=str(path)),
            test_rejects.assign(file=data.test_path),
            both.assign(file=data.test_path),
        ],
        ignore_index=True,
    )
    return frame, rejects


def _split(frame: pd.DataFrame, data, seed: int):
    """(rating split, retrieval split, rows whose retrieval hold-out is by time or None).

    Random: a seeded 80/10/10-style split of the ratings, and per user the last (or randomly
    chosen) interactions held out for retrieval. Given (a test file or a split column): its
    test rows are the test set of both; validation is the split's own, else drawn from its
    training rows (a random share of the ratings; per user a hold-out for retrieval).
    """
    order, k, least = data.holdout_order, data.leave_out, data.min_user_interactions
    if "given" not in frame:
        rating = rs_data.random_split(len(frame), data.val_fraction, data.test_fraction, seed)
        retrieval = rs_data.per_user_holdout(frame, k, least, order, seed)
        return rating, retrieval, np.ones(len(frame), bool) if order == "time" else None
    given = frame["given"].to_numpy(object)
    rating, retrieval = given.copy(), given.copy()
    if (given == "val").any():
        return rating, retrieval, None
    base = np.flatnonzero(given == "train")
    val = rs_data.random_split(len(base), data.val_fraction, 0.0, seed) == "val"
    rating[base[val]] = "val"
    retrieval[base] = rs_data.per_user_holdout(
        frame.iloc[base], k, least, order, seed, held=("val",)
    )
    return rating, retrieval, (given == "train") if order == "time" else None


def _check_splits(frame: pd.DataFrame, temporal, has_rating: bool, data) -> None:
    """Leak checks, and one line for a split left empty (nothing to fit or measure on)."""
    rs_data.check_no_leak(frame, "rating_split", temporal=False)
    rs_data.check_no_leak(frame, "retrieval_split", temporal=False)
    if temporal is not None:
        rs_data.check_no_leak(frame[temporal], "retrieval_split", temporal=True)
    empty = [s for s in ("train", "test") if not (frame.retrieval_split == s).any()]
    if empty:
        raise DataError(
            f"{data.path}: the retrieval {' and '.join(empty)} split is empty "
            f"({len(frame):,} interactions, {frame['user'].nunique():,} users): a user is held "
            "out only with at least max(data.min_user_interactions, 2 * data.leave_out + 1) "
            "interactions"
        )
    parts = _rating_parts(frame) if has_rating else {}
    empty = [s for s, rows in parts.items() if not len(rows)]
    if empty:
        raise DataError(
            f"{data.path}: no {' or '.join(empty)} rating has a user and an item from the "
            f"rating training split ({len(frame):,} interactions); no model could be measured "
            "on it (a given test file of users or items not in the base file; too small a "
            "data.val_fraction)"
        )


def _read_items(data, path: Path | None) -> pd.DataFrame:
    if path is None:
        return pd.DataFrame({"item": [], "title": [], "genres": []}, dtype=str)
    if data.layout == "movielens":
        return rs_data.read_movielens_items(path)
    return rs_data.read_items(path, data.items_id or data.item, data.title, data.genres)


def _ensure_sample(config: Config) -> None:
    path = Path(config.data.path)
    wanted = to_dict(config.data.simulator)
    if generated_is_current(path, wanted):
        return
    start = time.perf_counter()
    try:
        ratings, items = simulate_ratings(config.data.simulator)
    except ValueError as exc:
        raise ConfigError(f"data.simulator: {exc}") from exc
    write_table(path, ratings)
    if config.data.items_path:
        write_table(config.data.items_path, items)
    record_generated(path, wanted)
    print(
        f"prepare: generated {len(ratings):,} ratings of {items.shape[0]:,} items -> {path} in "
        f"{time.perf_counter() - start:.1f}s",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# train


def train(config: Config, options=None) -> RunDir:
    """Fit the bias baseline, MF and NCF (ratings), the two-tower model and the popularity
    baseline (retrieval); save the models, the top-K index and what recommend needs.

    A network that diverges is marked failed and never saved or served; when every network
    failed the run fails (exit 1) and never becomes `latest`.
    """
    run, strategy, policy, prepared = training.start_run(APP, config, prepare)
    frame, explicit = prepared.frame, prepared.info["explicit_ratings"]
    meta = {
        "app": APP,
        "prepared": str(prepared.folder),
        "precision_policy": policy,
        "explicit_ratings": explicit,
        "xla_compiled": {},  # per network: whether its train step ran under XLA
        "baseline_seconds": {},  # each baseline's measured fit time
    }
    models, failures, baseline = _train_rating_models(config, strategy, frame, run, meta)
    start = time.perf_counter()
    catalogue, popularity = _popularity(frame)
    meta["baseline_seconds"]["popularity"] = time.perf_counter() - start
    try:
        models["two_tower"], meta["xla_compiled"]["two_tower"] = _fit_two_tower(
            config, strategy, prepared, catalogue, run
        )
    except training.Diverged as exc:
        failures["two_tower"] = str(exc)
    meta["networks"] = {
        name: {"status": "failed", "reason": failures[name]}
        if name in failures
        else {"status": "ok"}
        for name in (RATING_MODELS if explicit else ()) + ("two_tower",)
    }
    if not models:
        training.fail_run(run, CARD_TITLE, failures)
    meta.update(
        {
            "rating_models": [n for n in RATING_MODELS if n in models],
            "retrieval_model": "two_tower" in models,
            "schema": InputSchema(
                [Column(config.data.user, "id"), Column(config.data.item, "id")]
            ).to_dict(),
            "max_k": MAX_K,
            "popularity": popularity,
            "items": len(catalogue),
        }
    )
    if failures:
        print(
            f"train: {', '.join(failures)} failed and will not be served; the run ships "
            f"{', '.join(models)}",
            flush=True,
        )
    if run.is_chief:
        _save(run, models, baseline, prepared, catalogue, meta)
        rating_model, _ = _rating_model(meta, config.serve.rating_model)
        _export(run, run.saved_model_path, rating_model)
    run.finish()
    digests = " ".join(f"{name} {training.weights_digest(m)}" for name, m in models.items())
    print(f"train: finished; weights sha256 {digests}; models -> {run.path}", flush=True)
    return run


def _train_rating_models(config: Config, strategy, frame: pd.DataFrame, run: RunDir, meta: dict):
    """The bias baseline, MF and NCF on explicit ratings (nothing for implicit data): the
    trained networks, the failed ones with why, and the baseline's validation and test
    predictions. Fills in the baseline's fit seconds, the rating range and XLA flags."""
    if not meta["explicit_ratings"]:
        return {}, {}, {}
    parts = _rating_parts(frame)
    start = time.perf_counter()
    bias = _bias_baseline(parts["train"], config.model.bias_damping)
    meta["baseline_seconds"]["bias_baseline"] = time.perf_counter() - start
    models, failures = {}, {}
    for name in RATING_MODELS:
        try:
            models[name], meta["xla_compiled"][name] = _fit_rating(
                name, parts, config, run, strategy
            )
        except training.Diverged as exc:
            failures[name] = str(exc)
    ratings = parts["train"]["rating"]
    meta["rating_range"] = [float(ratings.min()), float(ratings.max())]
    return models, failures, {s: _bias_predict(bias, parts[s]) for s in ("val", "test")}


def _save(run: RunDir, models: dict, baseline: dict, prepared, catalogue, meta: dict) -> None:
    for name, model in models.items():
        with atomic_path(_model_path(run, name), suffix=".keras") as tmp:
            model.save(tmp)
    if baseline:
        with atomic_path(run.path / "baseline_predictions.npz", suffix=".npz") as tmp:
            np.savez(tmp, **baseline)
    write_table(
        run.path / "known_items.parquet", prepared.frame[["user", "item"]].drop_duplicates()
    )
    write_table(run.path / "items.parquet", prepared.items)
    write_json(run.path / "catalogue.json", catalogue)
    write_json(run.meta_path, meta)


def _model_path(run: RunDir, name: str) -> Path:
    """MF is the run's model.keras (what `score` and `export` use by default)."""
    return {"mf": run.model_path, "two_tower": run.path / "retrieval.keras"}.get(
        name, run.path / f"{name}.keras"
    )


def _rating_parts(frame: pd.DataFrame) -> dict:
    """The rating splits; validation and test keep only pairs whose user and item are in the
    training split (no model can know the others: they are counted, not scored)."""
    parts = {s: frame[frame.rating_split == s] for s in rs_data.SPLITS}
    tr = parts["train"]
    for s in ("val", "test"):
        rows = parts[s]
        parts[s] = rows[rows["user"].isin(tr["user"]) & rows["item"].isin(tr["item"])]
    return parts


def _bias_baseline(rows: pd.DataFrame, damping: float) -> dict:
    """Global mean plus damped item then user biases (Koren's baseline predictor)."""
    mean = float(rows["rating"].mean())
    resid = rows["rating"] - mean
    grouped = resid.groupby(rows["item"])
    item_bias = grouped.sum() / (grouped.count() + damping)
    resid = resid - rows["item"].map(item_bias)
    grouped = resid.groupby(rows["user"])
    user_bias = grouped.sum() / (grouped.count() + damping)
    return {"mean": mean, "item": item_bias, "user": user_bias}


def _bias_predict(bias: dict, rows: pd.DataFrame) -> np.ndarray:
    return (
        bias["mean"]
        + rows["item"].map(bias["item"]).fillna(0.0).to_numpy()
        + rows["user"].map(bias["user"]).fillna(0.0).to_numpy()
    ).astype(np.float32)


def _id_arrays(rows: pd.DataFrame) -> dict:
    return {"user": rows["user"].to_numpy(str), "item": rows["item"].to_numpy(str)}


def _fit_rating(
    name: str, parts: dict, config: Config, run: RunDir, strategy
) -> tuple[keras.Model, bool]:
    """Build and fit a rating model; returns it and whether its train step ran under XLA.
    Raises `training.Diverged` if it diverged."""
    cfg, tr = config.train, parts["train"]
    users, items = sorted(tr["user"].unique()), sorted(tr["item"].unique())
    builder = {"mf": build_mf, "ncf": build_ncf}[name]
    with strategy.scope():  # the optimizer's variables belong to the strategy too
        model = builder(users, items, config.model, float(tr["rating"].mean()))
        # The id lookups do not compile with XLA: under `xla` they run in tf.data.
        head, core = training.xla_split(model, cfg, ["user_lookup", "item_lookup"])
        training.compile_model(
            core,
            cfg,
            len(tr),
            "mean_squared_error",
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        )
    print(f"train: {name} on {len(tr):,} ratings", flush=True)
    target = {s: parts[s]["rating"].to_numpy(np.float32) for s in ("train", "val")}
    training.fit(
        core,
        training.through_head(
            head,
            in_memory_dataset(_id_arrays(tr), target["train"], cfg.batch_size, True, cfg.seed),
            training=True,
        ),
        training.through_head(
            head,
            in_memory_dataset(_id_arrays(parts["val"]), target["val"], cfg.batch_size, False),
            training=False,
        ),
        run,
        cfg,
        name=name,
        monitor="val_rmse",
        examples=len(tr),
    )
    return model, bool(core.jit_compile)


def _predict_ratings(model: keras.Model, rows: pd.DataFrame, batch_size: int) -> np.ndarray:
    return np.asarray(predict_in_batches(model, _id_arrays(rows), batch_size)).reshape(-1)


def _popularity(frame: pd.DataFrame) -> tuple[list[str], dict]:
    """The retrieval catalogue (every training item, sorted) and the most-popular list: the
    popularity baseline's whole fit."""
    tr = frame[frame.retrieval_split == "train"]
    counts = tr["item"].value_counts()
    n = MAX_K + int(frame.groupby("user")["item"].size().max())
    popularity = {
        "items": counts.index[:n].tolist(),
        "counts": counts.to_numpy()[:n].tolist(),
        "interactions": int(len(tr)),
    }
    return sorted(tr["item"].unique()), popularity


def _fit_two_tower(config: Config, strategy, prepared: Prepared, items: list[str], run: RunDir):
    """In-batch-softmax two-tower model on the retrieval training split; returns the retrieval
    model (user id -> top-K over every catalogue item) and whether the train step ran under
    XLA. Each epoch logs validation Recall@10 (`val_recall@10`), which picks the best epoch.
    Raises `training.Diverged` if it diverged."""
    frame, cfg_model = prepared.frame, config.model
    tr = frame[frame.retrieval_split == "train"]
    va = frame[frame.retrieval_split == "val"]
    users = sorted(tr["user"].unique())
    item_row = {item: n for n, item in enumerate(items)}
    probability = tr["item"].value_counts(normalize=True)
    va = va[va["item"].isin(item_row) & va["user"].isin(users)]
    genres = rs_data.genre_vocabulary(prepared.items) if cfg_model.item_features else []
    item_genres = prepared.items.set_index("item")["genres"] if len(prepared.items) else None

    def genre_rows(ids: np.ndarray) -> np.ndarray:
        text = (
            pd.Series(ids).map(item_genres).fillna("")
            if item_genres is not None
            else pd.Series([""] * len(ids))
        )
        return rs_data.genre_matrix(text, genres)

    def features(rows: pd.DataFrame) -> dict:
        out = _id_arrays(rows)
        out["item_index"] = rows["item"].map(item_row).to_numpy(np.int32)
        if cfg_model.sampling_correction:
            out["item_probability"] = rows["item"].map(probability).to_numpy(np.float32)
        if genres:
            out["genres"] = genre_rows(out["item"])
        return out

    cfg = dataclasses.replace(
        config.train,
        epochs=cfg_model.retrieval_epochs,
        batch_size=cfg_model.retrieval_batch_size,
        learning_rate=cfg_model.retrieval_learning_rate,
    )
    with strategy.scope():
        user_tower = build_user_tower(users, cfg_model)
        item_tower = build_item_tower(items, len(genres), cfg_model)
        trainer = build_two_tower_trainer(users, items, user_tower, item_tower, cfg_model)
        passed = ["item_index"] + ["genres"] * bool(genres)
        passed += ["item_probability"] * cfg_model.sampling_correction
        head, core = training.xla_split(trainer, cfg, ["user_lookup", "item_lookup", *passed])
        training.compile_model(core, cfg, len(tr), in_batch_softmax_loss)
    print(
        f"train: two-tower on {len(tr):,} interactions, {len(users):,} users, {len(items):,} items"
        f"{f', {len(genres)} genres' if genres else ''}",
        flush=True,
    )
    item_inputs = {"item": np.asarray(items, dtype=str)}
    if genres:
        item_inputs["genres"] = genre_rows(item_inputs["item"])
    val = held_out(frame, "val", items, users, config.evaluate.relevant_min_rating)

    def val_recall(_model) -> float:
        embeddings = np.asarray(predict_in_batches(item_tower, item_inputs, 8192))
        scores = _tower_scores(user_tower, embeddings, val.users)
        return recall_at_k(scores, val.relevant, val.exclude, RETRIEVAL_K)

    scores = [training.EpochScore(f"recall@{RETRIEVAL_K}", val_recall)] if val.users else []
    dummy = {"tr": np.zeros(len(tr), np.float32), "va": np.zeros(len(va), np.float32)}
    training.fit(
        core,
        training.through_head(
            head,
            in_memory_dataset(features(tr), dummy["tr"], cfg.batch_size, True, cfg.seed),
            training=True,
        ),
        training.through_head(
            head,
            in_memory_dataset(features(va), dummy["va"], cfg.batch_size, False)
            if len(va)
            else None,
            training=False,
        ),
        run,
        cfg,
        name="two_tower",
        monitor=RECALL_COLUMN if val.users else ("val_loss" if len(va) else "loss"),
        mode="max" if val.users else "min",
        examples=len(tr),
        scores=scores,
    )
    embeddings = np.asarray(predict_in_batches(item_tower, item_inputs, 8192))
    known_counts = frame.groupby("user")["item"].size()
    k = min(len(items), MAX_K + int(known_counts.max()))
    return build_retrieval(user_tower, embeddings, k), bool(core.jit_compile)


def _tower_scores(user_tower: keras.Model, item_embeddings: np.ndarray, users: list[str]):
    """[users, items] two-tower scores: each user's embedding dotted with every item's."""
    queries = predict_in_batches(user_tower, np.asarray(users, dtype=str), 8192)
    # float32 whatever the precision policy: NumPy's matmul on bfloat16 is slow and inexact.
    return np.asarray(queries, np.float32) @ np.asarray(item_embeddings, np.float32).T


@dataclasses.dataclass
class HeldOut:
    """One retrieval split's held-out interactions as matrices over the catalogue."""

    users: list[str]  # users with at least one relevant held-out item, one row each
    relevant: np.ndarray  # [users, items] bool: the relevant held-out items
    exclude: np.ndarray  # [users, items] bool: the user's earlier items, never ranked
    counts: dict  # held-out rows, and why some are not measured


def held_out(
    frame: pd.DataFrame,
    split: str,
    catalogue: list[str],
    known_users: list[str],
    min_rating: float | None,
) -> HeldOut:
    """The `split` ('val' or 'test') rows of the retrieval split as a ranking task.

    Relevant: every held-out item, or (with `min_rating`) those rated at least that; a held-out
    item rated lower stays rankable and counts as a miss. Excluded from the ranking: the
    user's items in the splits before this one. Held-out rows whose user or item the models
    never saw in training are counted, not measured.
    """
    column = pd.Series(np.arange(len(catalogue)), index=catalogue)
    rows = frame[frame.retrieval_split == split]
    new_user = ~rows["user"].isin(known_users)
    new_item = ~new_user & ~rows["item"].isin(column.index)
    below = ~(new_user | new_item)
    below &= rows["rating"] < min_rating if min_rating is not None else False
    keep = rows[~(new_user | new_item | below)]
    users = sorted(keep["user"].unique())
    row = pd.Series(np.arange(len(users)), index=users)
    relevant = np.zeros((len(users), len(catalogue)), bool)
    relevant[keep["user"].map(row).to_numpy(), keep["item"].map(column).to_numpy()] = True
    earlier = frame[
        frame.retrieval_split.isin(("train",) if split == "val" else ("train", "val"))
        & frame["user"].isin(row.index)
        & frame["item"].isin(column.index)
    ]
    exclude = np.zeros(relevant.shape, bool)
    exclude[earlier["user"].map(row).to_numpy(), earlier["item"].map(column).to_numpy()] = True
    counts = {
        "held_out": int(len(rows)),
        "relevant": int(len(keep)),
        "user_not_in_training": int(new_user.sum()),
        "item_not_in_training_catalogue": int(new_item.sum()),
        "rated_below_relevant_min_rating": int(below.sum()),
    }
    return HeldOut(users, relevant, exclude, counts)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """RMSE/MAE against the bias baseline; Recall/NDCG/MAP/hit rate/coverage at K against the
    popularity baseline; the leaderboards, the test split for `score`, plots, model card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    run_config = load_config(Config, run.path / "config.yaml")
    prepared = prepare(run_config)
    frame = prepared.frame
    plots = run.subdir("plots")
    failed = {n: v["reason"] for n, v in meta["networks"].items() if v["status"] == "failed"}
    report = {"data": prepared.info, "failed_networks": failed, "rating": {}}
    boards = {}
    if meta["explicit_ratings"]:
        report["rating"], report["rating_pairs"], boards["rating"] = _evaluate_ratings(
            run, meta, frame, run_config, plots
        )
    report["retrieval"], report["retrieval_held_out"], boards["retrieval"] = _evaluate_retrieval(
        run, meta, frame, run_config, plots
    )
    report["leaderboard"] = boards
    report["test_input"] = _write_test_input(run, meta, frame)
    ev.plot_history(
        run.history_path, plots / "history.png", metrics=("loss", "rmse", f"recall@{RETRIEVAL_K}")
    )
    write_json(run.metrics_path, report)
    ks = sorted(set(run_config.evaluate.ks))
    _write_card(run, report, ks)
    _print_summary(report, ks)
    return report


def _evaluate_ratings(run: RunDir, meta: dict, frame: pd.DataFrame, config: Config, plots: Path):
    """Test metrics per model, the pairs scored and left out, and the rating leaderboard."""
    parts = _rating_parts(frame)
    baseline = np.load(run.path / "baseline_predictions.npz", allow_pickle=False)
    predictions = {"bias_baseline": {s: baseline[s] for s in ("val", "test")}}
    for name in meta["rating_models"]:
        model = _load_model(_model_path(run, name))
        predictions[name] = {
            s: _predict_ratings(model, parts[s], config.serve.batch_size) for s in ("val", "test")
        }
    y = {s: parts[s]["rating"].to_numpy(np.float64) for s in ("val", "test")}
    metrics = {
        name: {s: rating_metrics(y[s], p[s]) for s in ("val", "test")}
        for name, p in predictions.items()
    }
    pairs = {
        f"{s}_{what}": count
        for s in ("val", "test")
        for what, count in (
            ("rows", int((frame.rating_split == s).sum())),
            ("scored", len(parts[s])),
            ("user_or_item_not_in_training", int((frame.rating_split == s).sum() - len(parts[s]))),
        )
    }
    entries = {name: _network_entry(run, meta, name, metrics.get(name)) for name in RATING_MODELS}
    entries["bias_baseline"] = leaderboard.model_entry(
        leaderboard.BASELINE,
        metrics["bias_baseline"]["test"],
        metrics["bias_baseline"]["val"],
        meta["baseline_seconds"]["bias_baseline"],
    )
    selected, _ = _rating_model(meta, config.serve.rating_model)
    board = leaderboard.build("rmse", False, entries, selected, "val_rmse")
    _plot_errors(
        y["test"], {n: p["test"] for n, p in predictions.items()}, plots / "rating_errors.png"
    )
    return {n: m["test"] for n, m in metrics.items()}, pairs, board


def _network_entry(run: RunDir, meta: dict, name: str, metrics: dict | None) -> dict:
    """A network's leaderboard row: its metrics, fit seconds and history, or failed with why."""
    summary = training.fit_summary(run, name) or {}
    seconds = summary.get("seconds")
    if meta["networks"][name]["status"] == "failed":
        return leaderboard.model_entry(
            leaderboard.NETWORK,
            train_seconds=seconds,
            status="failed",
            reason=meta["networks"][name]["reason"],
        )
    return leaderboard.model_entry(
        leaderboard.NETWORK,
        metrics["test"],
        metrics["val"],
        seconds,
        history=run.path / f"history-{name}.csv",
    )


def _evaluate_retrieval(run: RunDir, meta: dict, frame: pd.DataFrame, config: Config, plots):
    """Ranking metrics per model on test, what was held out, and the retrieval leaderboard."""
    catalogue = _catalogue_from_run(run)
    train_users = sorted(frame.loc[frame.retrieval_split == "train", "user"].unique())
    ks = sorted(set(config.evaluate.ks) | {RETRIEVAL_K})
    held = {
        s: held_out(frame, s, catalogue, train_users, config.evaluate.relevant_min_rating)
        for s in ("val", "test")
    }
    popularity = _popularity_scores(meta, catalogue).astype(np.float32)
    model = _load_model(_model_path(run, "two_tower")) if meta["retrieval_model"] else None
    candidates = np.asarray(model.get_layer("index").candidate_embeddings) if model else None
    metrics, curves = {}, {}
    for s, h in held.items():
        scores = {"popularity": np.broadcast_to(popularity, h.relevant.shape)}
        if model is not None:
            scores["two_tower"] = _tower_scores(model.get_layer("user_tower"), candidates, h.users)
        metrics[s] = {
            name: ranking_metrics(v, h.relevant, h.exclude, ks) if h.users else None
            for name, v in scores.items()
        }
        if s == "test":
            max_k = min(config.evaluate.max_k_plot, len(catalogue))
            curves = {n: recall_curve(v, h.relevant, h.exclude, max_k) for n, v in scores.items()}

    def at_k(m: dict | None) -> dict:
        at = m[f"@{RETRIEVAL_K}"] if m else {}
        return {f"{k}@{RETRIEVAL_K}": at[k] for k in ("recall", "ndcg") if k in at}

    entries = {}
    if "two_tower" in meta["networks"]:
        two_tower = {s: at_k(metrics[s].get("two_tower")) for s in held}
        entries["two_tower"] = _network_entry(run, meta, "two_tower", two_tower)
    entries["popularity"] = leaderboard.model_entry(
        leaderboard.BASELINE,
        at_k(metrics["test"]["popularity"]),
        at_k(metrics["val"]["popularity"]),
        meta["baseline_seconds"]["popularity"],
    )
    selected = "two_tower" if meta["retrieval_model"] else None
    board = leaderboard.build(f"recall@{RETRIEVAL_K}", True, entries, selected, RECALL_COLUMN)
    _plot_recall(curves, plots / "recall_at_k.png")
    counts = {s: h.counts for s, h in held.items()} | {
        "relevance": _relevance_text(config.evaluate.relevant_min_rating),
        "excluded": "each user's earlier items (training; validation too on test)",
    }
    tested = {n: m for n, m in metrics["test"].items() if m is not None}
    return tested, counts, board


def _relevance_text(min_rating: float | None) -> str:
    if min_rating is None:
        return "every held-out item is relevant"
    return f"held-out items rated at least {min_rating:g} are relevant; lower ones count as misses"


def _write_test_input(run: RunDir, meta: dict, frame: pd.DataFrame) -> str:
    """test_split.csv in the columns `score` reads: the rating test pairs, or for implicit data
    the retrieval test pairs. Pairs with a user or item not in training land in the rejects."""
    split = "rating_split" if meta["explicit_ratings"] else "retrieval_split"
    rows = frame[frame[split] == "test"]
    user, item = InputSchema.from_dict(meta["schema"]).names
    write_table(
        run.path / "test_split.csv",
        pd.DataFrame({user: rows["user"].to_numpy(), item: rows["item"].to_numpy()}),
    )
    return "test_split.csv"


def _load_model(path: Path) -> keras.Model:
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _catalogue_from_run(run: RunDir) -> list[str]:
    """The item ids that the retrieval index's rows stand for, in row order."""
    return read_json(run.path / "catalogue.json")


def _popularity_scores(meta: dict, items: list[str]) -> np.ndarray:
    """Most-popular ranking as exact scores (n - rank); ties by catalogue order."""
    counts = dict(zip(meta["popularity"]["items"], meta["popularity"]["counts"], strict=True))
    order = np.argsort(-np.array([counts.get(i, 0) for i in items]), kind="stable")
    scores = np.empty(len(items), np.float64)
    scores[order] = len(items) - np.arange(len(items))
    return scores


def _plot_errors(y: np.ndarray, predictions: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-4, 4, 81)
    for name, p in predictions.items():
        ax.hist(p - y, bins=bins, histtype="step", linewidth=1.5, label=name)
    ax.set(xlabel="predicted - true rating", ylabel="test ratings", title="Rating error (test)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ev.save_figure(fig, path)


def _plot_recall(curves: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set(xlabel="K", ylabel="Recall@K", title="Recall@K (test, known items excluded)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ev.save_figure(fig, path)


def _print_summary(report: dict, ks: list[int]) -> None:
    for name, m in report["rating"].items():
        print(f"{name:<16} RMSE {m['rmse']:.4f}  MAE {m['mae']:.4f}")
    for name, m in report["retrieval"].items():
        cells = "  ".join(
            f"R@{k} {m[f'@{k}']['recall']:.4f} NDCG@{k} {m[f'@{k}']['ndcg']:.4f}" for k in ks
        )
        print(f"{name:<16} {cells}")
    for name, reason in report["failed_networks"].items():
        print(f"{name:<16} FAILED: {reason}")


def _data_text(data: dict) -> str:
    """The model card's Data section: source, counts and both splits."""

    def split_text(counts: dict) -> str:
        return ", ".join(f"{name} {count:,}" for name, count in counts.items())

    given = data["test_source"] or (data["split_column"] and "the split column")
    holdout = "last in time" if data["retrieval_holdout"] == "time" else "seeded random"
    test = "the given test rows" if given else f"each user's {holdout} interactions"
    text = (
        f"Source `{data['source']}`: {data['rows']:,} interactions, {data['users']:,} users, "
        f"{data['items']:,} items"
    )
    if data["explicit_ratings"]:
        how = f"given ({given})" if given else "random"
        text += f", explicit ratings. Rating split ({how}): {split_text(data['rating_split'])}"
    else:
        text += ", implicit feedback (no ratings: retrieval only)"
    return text + (
        f". Retrieval split (test: {test}; validation: each user's {holdout} training "
        f"interactions): {split_text(data['retrieval_split'])}. The splits pass the leak checks."
    )


def _write_card(run: RunDir, report: dict, ks: list[int]) -> None:
    data = report["data"]
    metrics = ("recall", "ndcg", "map", "hit_rate", "coverage")
    rows = {
        n: {f"{metric}@{k}": m[f"@{k}"][metric] for k in ks for metric in metrics}
        for n, m in report["retrieval"].items()
    }
    columns = [f"{metric}@{k}" for k in ks for metric in metrics]
    held = report["retrieval_held_out"]

    sections = {
        "Intended use": "Predicts a user's rating of an item and retrieves top-K items per user "
        "for candidate generation; unknown users get the most popular items, flagged.",
        "Data": _data_text(data),
    }
    if report["failed_networks"]:
        sections["Failed networks"] = "\n".join(
            f"- `{name}` failed and is never served: {reason}"
            for name, reason in report["failed_networks"].items()
        )
    if "rating" in report["leaderboard"]:
        pairs = report["rating_pairs"]
        sections["Leaderboard: rating prediction (RMSE)"] = leaderboard.to_markdown(
            report["leaderboard"]["rating"]
        ) + (
            f"\n\nMeasured on the {pairs['test_scored']:,} of {pairs['test_rows']:,} test "
            f"ratings whose user and item are in the training split "
            f"({pairs['test_user_or_item_not_in_training']:,} left out: no model knows them)."
        )
    test = held["test"]
    sections[f"Leaderboard: retrieval (Recall@{RETRIEVAL_K})"] = leaderboard.to_markdown(
        report["leaderboard"]["retrieval"]
    ) + (
        f"\n\nRelevance: {held['relevance']}. {test['relevant']:,} of {test['held_out']:,} "
        f"held-out test interactions are relevant and measured ({test['user_not_in_training']:,}"
        f" with a user and {test['item_not_in_training_catalogue']:,} with an item not in "
        f"training, {test['rated_below_relevant_min_rating']:,} rated below the threshold)."
    )
    if rows:
        sections["Retrieval (test)"] = metrics_table(rows, columns) + (
            "\n\nEach user's earlier (training and validation) items are excluded from the "
            "ranking. Recall, NDCG and MAP come from keras-rs; MAP@K divides by all of the "
            "user's relevant held-out items (keras-rs's definition). Hit rate: share of users "
            "with a relevant item in the top K; coverage: share of the catalogue recommended "
            "to at least one user."
        )
    limits = "Models know only the users and items seen in training; new ones need a retrain."
    if data["simulated"]:
        limits += " The sample data is generated; figures on it say nothing about a real catalogue."
    sections["Limits"] = limits
    write_model_card(run.card_path, CARD_TITLE, sections)


# ---------------------------------------------------------------------------------------------
# recommend


def recommend(config: Config, options) -> pd.DataFrame:
    """Top-K items for each user; items the user already has are excluded; unknown users get
    the most popular items and are flagged in the `source` column."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    k = options.k if getattr(options, "k", None) is not None else config.serve.k
    if not 1 <= k <= meta["max_k"]:
        raise DataError(f"--k must be between 1 and {meta['max_k']}, got {k}")
    users = _read_users(options.users)
    recommender = Recommender(run)
    result = recommender.recommend(users, k, config.serve.batch_size)
    output = Path(options.output) if options.output else run.path / "recommendations.csv"
    write_table(output, result)
    unknown = len(set(users) - recommender.users_)
    broken = recommender.non_finite_users_
    print(
        f"recommend: {len(users):,} users ({unknown:,} unknown: popularity fallback"
        f"{f'; {broken:,} with no finite model score: popularity fallback' if broken else ''}"
        f"), top {k} -> {output}",
        flush=True,
    )
    return result


class Recommender:
    """Loads a run's retrieval model, catalogue, known items and titles; `recommend` returns the
    table of top-K items."""

    def __init__(self, run: RunDir):
        self.meta = load_meta(run)
        if not self.meta["retrieval_model"]:
            raise DataError(
                f"{run.path}: the two-tower retrieval model failed to train in this run "
                f"({self.meta['networks']['two_tower']['reason']}); there is nothing to "
                "recommend with: train again with a lower model.retrieval_learning_rate"
            )
        self.model = _load_model(_model_path(run, "two_tower"))
        self.catalogue = np.asarray(_catalogue_from_run(run), dtype=object)
        lookup = self.model.get_layer("user_tower").get_layer("user_lookup")
        self.user_row_ = {u: n for n, u in enumerate(lookup.get_vocabulary()[1:])}
        self.users_ = set(self.user_row_)
        known = pd.read_parquet(run.path / "known_items.parquet")
        # Known (user, item) pairs as sorted integer keys, for a vectorised exclusion.
        self.column_ = pd.Series(np.arange(len(self.catalogue)), index=self.catalogue)
        rows = known["user"].map(self.user_row_)
        cols = known["item"].map(self.column_)
        both = rows.notna() & cols.notna()
        self.n_items_ = len(self.catalogue)
        self.known_keys_ = np.unique(
            rows[both].to_numpy(np.int64) * self.n_items_ + cols[both].to_numpy(np.int64)
        )
        items = pd.read_parquet(run.path / "items.parquet")
        self.titles_ = items.set_index("item")["title"].to_dict() if len(items) else None
        pop = self.meta["popularity"]
        total = max(pop["interactions"], 1)
        self.popular_items_ = np.asarray(pop["items"], dtype=object)
        self.popular_scores_ = np.asarray(pop["counts"], np.float64) / total
        self.non_finite_users_ = 0  # users of the last call whose model scores were not finite

    def recommend(self, users: list[str], k: int, batch_size: int = 8192) -> pd.DataFrame:
        known_users = [u for u in users if u in self.users_]
        parts, self.non_finite_users_ = {}, 0
        if known_users:
            out = predict_in_batches(self.model, np.asarray(known_users, dtype=str), batch_size)
            rows, scores = np.asarray(out["items"], np.int64), np.asarray(out["scores"])
            user_rows = np.array([self.user_row_[u] for u in known_users], np.int64)
            keys = user_rows[:, None] * self.n_items_ + rows
            # A non-finite score is never served: such a candidate is dropped like a seen one.
            seen = np.isin(keys, self.known_keys_) | ~np.isfinite(scores)
            # Unseen candidates first, each group in score order (a stable sort on the flag).
            order = np.argsort(seen, axis=1, kind="stable")[:, :k]
            rows = np.take_along_axis(rows, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            fresh = ~np.take_along_axis(seen, order, axis=1)  # False only for a user who has
            # seen nearly the whole catalogue: they get fewer than k items, never a seen one
            for n, user in enumerate(known_users):
                keep = fresh[n]
                if not keep.any() and not np.isfinite(scores[n]).any():
                    self.non_finite_users_ += 1
                    parts[user] = self._popular_unseen(user_rows[n], k)
                    continue
                parts[user] = (self.catalogue[rows[n][keep]], scores[n][keep], "two_tower")
        fallback = (self.popular_items_[:k], self.popular_scores_[:k], "popularity_fallback")
        picks = [parts.get(user, fallback) for user in users]
        counts = [len(p[0]) for p in picks]
        frame = pd.DataFrame(
            {
                "user": np.repeat(np.asarray(users, dtype=object), counts),
                "rank": np.concatenate([np.arange(1, c + 1) for c in counts]),
                "item": np.concatenate([p[0] for p in picks]),
                "score": np.round(np.concatenate([p[1] for p in picks]).astype(np.float64), 6),
                "source": np.repeat([p[2] for p in picks], counts),
            }
        )
        if self.titles_ is not None:
            frame.insert(3, "title", frame["item"].map(self.titles_).fillna(""))
        return frame

    def _popular_unseen(self, user_row: int, k: int) -> tuple:
        """The most popular items a known user has not seen, as the popularity fallback."""
        keys = user_row * self.n_items_ + self.column_[self.popular_items_].to_numpy(np.int64)
        unseen = ~np.isin(keys, self.known_keys_)
        picked = np.flatnonzero(unseen)[:k]
        return self.popular_items_[picked], self.popular_scores_[picked], "popularity_fallback"


def _read_users(spec: str | None) -> list[str]:
    """Comma-separated ids, or a file with one id per line (a `user`/`user_id` header is skipped)."""
    if not spec or not spec.strip():
        raise DataError("--users is empty: give comma-separated ids or a file of ids")
    path = Path(spec)
    if path.is_file():
        lines = [
            line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        ]
        ids = [line.split(",")[0].strip() for line in lines if line]
        if ids and ids[0].lower() in ("user", "user_id", "userid"):
            ids = ids[1:]
        if not ids:
            raise DataError(f"{path}: no user ids in the file")
    else:
        if ("/" in spec or spec.endswith((".csv", ".txt"))) and "," not in spec:
            raise DataError(f"{spec}: no such users file")
        ids = [part.strip() for part in spec.split(",")]
        if any(not i for i in ids):
            raise DataError(f"--users {spec!r}: an empty user id between commas")
    return list(dict.fromkeys(ids))  # each user once, in the order given


# ---------------------------------------------------------------------------------------------
# score and export


class PairSchema(InputSchema):
    """User and item id columns; a pair with an id the model never saw is rejected, with why."""

    def __init__(self, columns, users: set, items: set):
        super().__init__(columns)
        self.users, self.items = users, items

    def validate(self, chunk):
        typed, reasons = super().validate(chunk)
        for column, vocabulary, what in (
            (self.columns[0].name, self.users, "user"),
            (self.columns[1].name, self.items, "item"),
        ):
            values = typed[column]
            unknown = (reasons == "") & ~values.isin(vocabulary)
            reasons[unknown] = (
                f"unknown {what} '" + values[unknown].str.slice(0, 40) + "' (not in training data)"
            )
        return typed, reasons


def score(config: Config, options) -> dict:
    """User-item pairs in -> predicted ratings (or, for implicit data, the two-tower score that
    recommend ranks by); pairs with unknown users or items are rejected."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    schema = InputSchema.from_dict(meta["schema"])
    user_col, item_col = schema.names
    if meta["explicit_ratings"]:
        vocab, values, column = _rating_scorer(run, meta, config)
    else:
        vocab, values, column = _affinity_scorer(run, config)
    checked = PairSchema(schema.columns, vocab["user"], vocab["item"])
    output, rejects = default_output_paths(options.input, options.output, options.rejects)

    def predict(typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        rows = pd.DataFrame({"user": typed[user_col], "item": typed[item_col]})
        return pd.DataFrame(
            {
                "row": typed.index,
                user_col: rows["user"].to_numpy(),
                item_col: rows["item"].to_numpy(),
                column: values(rows),
            }
        )

    columns = ["row", user_col, item_col, column]
    counts = score_file(
        options.input, output, rejects, checked, predict, columns, config.serve.chunk_rows
    )
    print_counts(counts, output, rejects)
    return {
        "rows": counts.rows,
        "scored": counts.scored,
        "rejected": counts.rejected,
        "output": str(output),
        "rejects": str(rejects),
    }


def _rating_model(meta: dict, wanted: str) -> tuple[str | None, str | None]:
    """The rating model that serves: `wanted` if it trained, else the other one (with a note
    saying why); (None, why) when no rating model trained."""
    trained = meta["rating_models"]
    failed = {n: v["reason"] for n, v in meta["networks"].items() if v["status"] == "failed"}
    if wanted in trained:
        return wanted, None
    if trained:
        return trained[0], f"serve.rating_model={wanted} failed in this run ({failed[wanted]}); "
    if not meta["explicit_ratings"]:
        return None, "the data had no explicit ratings"
    return None, "every rating model failed in this run: " + "; ".join(failed.values())


def _rating_scorer(run: RunDir, meta: dict, config: Config):
    """(vocabularies, rows -> predicted ratings, output column) of the serving rating model."""
    name, why = _rating_model(meta, config.serve.rating_model)
    if name is None:
        raise DataError(f"{run.path}: no rating model to score with ({why})")
    if why:
        print(f"note: {why}scoring with {name}", flush=True)
    model = _load_model(_model_path(run, name))
    vocab = {
        what: set(model.get_layer(f"{what}_lookup").get_vocabulary()[1:])
        for what in ("user", "item")
    }
    low, high = meta["rating_range"]

    def values(rows: pd.DataFrame) -> np.ndarray:
        rating = np.clip(_predict_ratings(model, rows, config.serve.batch_size), low, high)
        return np.round(rating, 4)

    return vocab, values, "predicted_rating"


def _affinity_scorer(run: RunDir, config: Config):
    """(vocabularies, rows -> two-tower scores, output column) for implicit data: the score is
    the dot product of the user's and the item's embeddings, as in recommend's `score`."""
    retrieval = _load_model(_model_path(run, "two_tower"))
    user_tower = retrieval.get_layer("user_tower")
    candidates = np.asarray(retrieval.get_layer("index").candidate_embeddings)
    catalogue = _catalogue_from_run(run)
    item_row = pd.Series(np.arange(len(catalogue)), index=catalogue)
    users = user_tower.get_layer("user_lookup").get_vocabulary()[1:]
    print("score: implicit data: each pair's two-tower score (what recommend ranks by)", flush=True)

    def values(rows: pd.DataFrame) -> np.ndarray:
        queries = predict_in_batches(
            user_tower, rows["user"].to_numpy(str), config.serve.batch_size
        )
        items = candidates[rows["item"].map(item_row).to_numpy(np.int64)]
        return np.round((np.asarray(queries) * items).sum(axis=1).astype(np.float64), 6)

    return {"user": set(users), "item": set(catalogue)}, values, "score"


def _export(run: RunDir, target: Path, rating_model: str | None) -> None:
    with atomic_dir(target) as tmp:
        for sub, name in (("rating", rating_model), ("retrieval", "two_tower")):
            if name and _model_path(run, name).exists():
                model = _load_model(_model_path(run, name))
                model.export(str(tmp / sub), format="tf_saved_model", verbose=False)


def export(config: Config, options) -> Path:
    """SavedModels of the serving rating model (user, item -> rating) and the retrieval model
    (user -> top-K scores and catalogue rows) under saved_model/rating and saved_model/retrieval;
    a model that failed to train is left out."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    rating_model, _ = _rating_model(meta, config.serve.rating_model)
    _export(run, target, rating_model)
    parts = [f"{target}/rating ({rating_model})"] * bool(rating_model)
    parts += [f"{target}/retrieval"] * meta["retrieval_model"]
    print(f"export: SavedModels -> {', '.join(parts)}", flush=True)
    return target
