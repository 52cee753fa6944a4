"""The recsys app's steps: prepare, train, evaluate, score, export, recommend, and cv."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.recsys import data as rs_data
from apps.recsys.baselines import interaction_matrix, item_knn_scores, surprise_svd
from apps.recsys.card import CARD_TITLE, print_summary, relevance_text, write_card
from apps.recsys.config import Config
from apps.recsys.data import HeldOut, Prepared, TowerInputs, held_out, id_arrays, rating_parts
from apps.recsys.index import SeenItems, ivf_recall
from apps.recsys.metrics import ranking_metrics, rating_metrics, recall_at_k, recall_curve
from apps.recsys.model import (
    MAX_K,
    RATING_MODELS,
    RETRIEVAL_K,
    Meta,
    bias_baseline,
    bias_predict,
    build_item_tower,
    build_mf,
    build_ncf,
    build_retrieval,
    build_two_tower_trainer,
    build_user_tower,
    fit_popularity,
    in_batch_softmax_loss,
    load_model,
    model_path,
    popularity_scores,
    read_catalogue,
    served_text,
    serving_models,
    write_saved_models,
)
from apps.recsys.plots import plot_errors, plot_recall
from apps.recsys.sample import ensure_sample
from apps.recsys.scorer import (
    PairSchema,
    Recommender,
    pair_scorer,
    predict_ratings,
    read_preferences,
    read_users,
    tower_scores,
)
from shared import evaluation as ev
from shared import leaderboard, training
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, atomic_dir, atomic_path, write_json, write_table
from shared.run import RunDir
from shared.scoring import (
    Column,
    InputSchema,
    default_output_paths,
    predict_in_batches,
    print_counts,
    score_file,
)
from shared.steps import (
    NO_OPTIONS,
    StepOptions,
    export_step,
    locate,
    open_run,
    prepared_folder,
    save_model,
)

APP = "recsys"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
RECALL_COLUMN = f"val_recall@{RETRIEVAL_K}"
RATING_BASELINES = (
    "bias_baseline",
    "surprise_svd",
)  # the rating leaderboard's baselines  # the two-tower history's validation Recall@10


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(config: Config, options: StepOptions | None = None) -> Prepared:
    """Read (or generate) the interactions, drop repeated pairs, split, check the splits."""
    data = config.data
    if data.source == "simulator":
        ensure_sample(data.path, data.items_path, data.simulator)
    sources = [p for p in (data.path, data.items_path, data.test_path, data.tags_path) if p]
    folder = prepared_folder(APP, config, sources)
    if (folder / "prepare.json").exists():
        print(f"prepare: using cached splits in {folder}", flush=True)
        return Prepared.load(folder)
    start = time.perf_counter()
    prepared, rejects = _read_and_split(config, folder)
    if training.is_chief():
        prepared.save(rejects)
    info = prepared.info
    print(
        f"prepare: {info['rows']:,} interactions, {info['users']:,} users, {info['items']:,} "
        f"items from {info['source']} in {time.perf_counter() - start:.1f}s; {len(rejects):,} "
        f"rows set aside (repeated pairs) -> {folder / 'rejects.csv'}; splits pass the leak "
        "checks",
        flush=True,
    )
    return prepared


def _read_and_split(config: Config, folder: Path) -> tuple[Prepared, pd.DataFrame]:
    """The configured interactions and items, split and leak-checked, and the rejected rows."""
    data = config.data
    ratings_path, items_path = Path(data.path), Path(data.items_path) if data.items_path else None
    if not ratings_path.exists():
        raise DataError(f"{ratings_path}: no such file or folder (data.path)")
    if data.layout == "movielens" and ratings_path.is_dir():
        ratings_path, found = rs_data.find_movielens(ratings_path)
        items_path = items_path if items_path and items_path.is_file() else found
    frame, rejects = rs_data.read_configured(data, ratings_path)
    items = rs_data.read_configured_items(data, items_path)
    tags_path = Path(data.tags_path) if data.tags_path else None
    if tags_path is None and data.layout == "movielens" and Path(data.path).is_dir():
        tags_path = rs_data.find_movielens_tags(data.path)
    if tags_path is not None:
        items = rs_data.with_tags(
            items, rs_data.read_tags(tags_path, data.item, data.min_tag_items)
        )
    has_rating = bool(frame["rating"].notna().all())
    rating, retrieval, temporal = rs_data.assign_splits(frame, data, config.train.seed)
    frame = frame.drop(columns="given", errors="ignore")
    frame["rating_split"], frame["retrieval_split"] = rating, retrieval
    rs_data.check_splits(frame, temporal, has_rating, data)
    info = {
        "source": str(ratings_path),
        "test_source": data.test_path,
        "split_column": data.split_column,
        "items_source": str(items_path) if items_path and len(items) else None,
        "tags_source": str(tags_path) if tags_path else None,
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
    return Prepared(frame, items, folder, info), rejects


# ---------------------------------------------------------------------------------------------
# train


@dataclasses.dataclass
class Fitted:
    """What `train` fitted: the networks that trained, those that failed, and the baselines."""

    models: dict = dataclasses.field(default_factory=dict)  # name -> trained network
    failures: dict = dataclasses.field(default_factory=dict)  # name -> why it failed
    xla: dict = dataclasses.field(default_factory=dict)  # name -> train step ran under XLA
    baseline_seconds: dict = dataclasses.field(default_factory=dict)  # baseline -> fit seconds
    baseline: dict = dataclasses.field(default_factory=dict)  # `<baseline>_<split>`: the rating
    # baselines' validation and test predictions
    baseline_failures: dict = dataclasses.field(default_factory=dict)  # baseline -> why none
    rating_range: list | None = None  # lowest and highest training rating (explicit data)
    catalogue: list = dataclasses.field(default_factory=list)  # the retrieval index's item ids
    popularity: dict = dataclasses.field(default_factory=dict)  # the most-popular list
    cold_items: dict = dataclasses.field(default_factory=dict)  # items with metadata but no
    # training interaction: their ids and item-tower embeddings (cold_items.npz)


def train(config: Config, options: StepOptions | None = None) -> RunDir:
    """Fit the bias baseline, MF and NCF (ratings), the two-tower model and the popularity
    baseline (retrieval); save the models, the top-K index and what recommend needs.

    A network that diverges is marked failed and never saved or served; when every network
    failed the run fails (exit 1) and never becomes `latest`.
    """
    run, strategy, policy, prepared = training.start_run(APP, config, prepare)
    start, fitted = time.perf_counter(), Fitted()
    if prepared.info["explicit_ratings"]:
        _fit_rating_models(config, strategy, prepared.frame, run, fitted)
    _fit_retrieval(config, strategy, prepared, run, fitted)
    seconds = time.perf_counter() - start
    if not fitted.models:
        training.fail_run(run, CARD_TITLE, fitted.failures)
    meta = _meta(config, prepared, policy, fitted, seconds)
    if fitted.failures:
        print(
            f"train: {', '.join(fitted.failures)} failed and will not be served; the run ships "
            f"{', '.join(fitted.models)}",
            flush=True,
        )
    if run.is_chief:
        _save(run, fitted, prepared, meta.rating_model(config.serve.rating_model)[0])
    save_model(run, None, meta, None)  # the networks are saved above: the metadata, and finish
    digests = " ".join(f"{name} {training.weights_digest(m)}" for name, m in fitted.models.items())
    print(f"train: finished; weights sha256 {digests}; models -> {run.path}", flush=True)
    return run


def _meta(config: Config, prepared: Prepared, policy: str, fitted: Fitted, seconds: float) -> Meta:
    explicit = prepared.info["explicit_ratings"]
    networks = {
        name: {"status": "failed", "reason": fitted.failures[name]}
        if name in fitted.failures
        else {"status": "ok"}
        for name in (RATING_MODELS if explicit else ()) + ("two_tower",)
    }
    rating_models = [n for n in RATING_MODELS if n in fitted.models]
    retrieval = "two_tower" in fitted.models
    meta = Meta(
        app=APP,
        prepared=str(prepared.folder),
        input="",  # set below
        train_seconds=round(seconds, 1),
        precision_policy=policy,
        xla_compiled=fitted.xla,
        explicit_ratings=explicit,
        networks=networks,
        rating_models=rating_models,
        retrieval_model=retrieval,
        baseline_seconds=fitted.baseline_seconds,
        baseline_failures=fitted.baseline_failures,
        schema=InputSchema(
            [Column(config.data.user, "id"), Column(config.data.item, "id")]
        ).to_dict(),
        max_k=MAX_K,
        popularity=fitted.popularity,
        items=len(fitted.catalogue),
        rating_range=fitted.rating_range,
    )
    # What the SavedModel takes, now that Meta says which rating network serves.
    meta.input = served_text(meta.rating_model(config.serve.rating_model)[0], retrieval)
    return meta


def _save(run: RunDir, fitted: Fitted, prepared: Prepared, rating_model: str | None) -> None:
    """Each network's .keras file, the served SavedModels (saved_model/rating and /retrieval),
    the bias baseline's predictions and what recommend needs (known items, titles, catalogue)."""
    for name, model in fitted.models.items():
        with atomic_path(model_path(run, name), suffix=".keras") as tmp:
            model.save(tmp)
    if fitted.baseline:
        with atomic_path(run.path / "baseline_predictions.npz", suffix=".npz") as tmp:
            np.savez(tmp, **fitted.baseline)
    write_table(
        run.path / "known_items.parquet", prepared.frame[["user", "item"]].drop_duplicates()
    )
    write_table(run.path / "items.parquet", prepared.items)
    write_json(run.path / "catalogue.json", fitted.catalogue)
    if fitted.cold_items:
        with atomic_path(run.path / "cold_items.npz", suffix=".npz") as tmp:
            np.savez(tmp, **fitted.cold_items)
    served = {"rating": rating_model, "retrieval": "two_tower"}
    with atomic_dir(run.saved_model_path) as tmp:
        write_saved_models(
            {sub: fitted.models[n] for sub, n in served.items() if n in fitted.models}, str(tmp)
        )


def _fit_rating_models(config: Config, strategy, frame: pd.DataFrame, run: RunDir, fitted: Fitted):
    """The bias baseline, MF and NCF on explicit ratings, into `fitted`: the trained networks,
    the failed ones with why, the baseline's validation and test predictions and fit seconds,
    the rating range and XLA flags."""
    parts = rating_parts(frame)
    start = time.perf_counter()
    bias = bias_baseline(parts["train"], config.model.bias_damping)
    fitted.baseline_seconds["bias_baseline"] = time.perf_counter() - start
    for name in RATING_MODELS:
        try:
            fitted.models[name], fitted.xla[name] = _fit_rating(name, parts, config, run, strategy)
        except training.Diverged as exc:
            fitted.failures[name] = str(exc)
    ratings = parts["train"]["rating"]
    fitted.rating_range = [float(ratings.min()), float(ratings.max())]
    fitted.baseline = {f"bias_baseline_{s}": bias_predict(bias, parts[s]) for s in ("val", "test")}
    if config.model.surprise_svd:
        held = {s: parts[s] for s in ("val", "test")}
        svd, why = surprise_svd(parts["train"], held, config.train.seed)
        if svd is None:
            fitted.baseline_failures["surprise_svd"] = why
            print(f"train: no surprise_svd row: {why}", flush=True)
        else:
            fitted.baseline_seconds["surprise_svd"] = svd["seconds"]
            fitted.baseline |= {f"surprise_svd_{s}": svd[s].astype(np.float32) for s in held}


def _datasets(head, cfg, train: tuple, val: tuple | None):
    """The (features, target) training and validation datasets (validation may be None), the
    id lookups of the XLA head run in tf.data."""
    train_ds = in_memory_dataset(*train, cfg.batch_size, True, cfg.seed)
    val_ds = in_memory_dataset(*val, cfg.batch_size, False) if val else None
    return (
        training.through_head(head, train_ds, training=True),
        training.through_head(head, val_ds, training=False),
    )


def _fit_rating(
    name: str, parts: dict, config: Config, run: RunDir, strategy
) -> tuple[keras.Model, bool]:
    """Build and fit a rating model; returns it and whether its train step ran under XLA.
    Raises `training.Diverged` if it diverged."""
    cfg, tr = config.train, parts["train"]
    users, items = sorted(tr["user"].unique()), sorted(tr["item"].unique())
    builder = {"mf": build_mf, "ncf": build_ncf}[name]
    with strategy.scope():  # the optimizer's variables belong to the strategy too
        # SVD++'s implicit term (model.mf_implicit) sums over each user's training items.
        pairs = (tr["user"].to_numpy(str), tr["item"].to_numpy(str))
        extra = {"implicit": pairs} if name == "mf" else {}
        model = builder(users, items, config.model, float(tr["rating"].mean()), **extra)
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
    train_ds, val_ds = _datasets(
        head,
        cfg,
        (id_arrays(tr), target["train"]),
        (id_arrays(parts["val"]), target["val"]),
    )
    training.fit(core, train_ds, val_ds, run, cfg, name=name, monitor="val_rmse", examples=len(tr))
    return model, bool(core.jit_compile)


def _fit_retrieval(
    config: Config, strategy, prepared: Prepared, run: RunDir, fitted: Fitted
) -> None:
    """The popularity baseline (the catalogue and most-popular list) and the two-tower model,
    into `fitted`."""
    start = time.perf_counter()
    fitted.catalogue, fitted.popularity = fit_popularity(prepared.frame)
    fitted.baseline_seconds["popularity"] = time.perf_counter() - start
    try:
        fitted.models["two_tower"], fitted.xla["two_tower"], fitted.cold_items = _fit_two_tower(
            config, strategy, prepared, fitted.catalogue, run
        )
    except training.Diverged as exc:
        fitted.failures["two_tower"] = str(exc)


def _build_two_tower(users, items, n_genres: int, config: Config, cfg, strategy, train):
    """The user and item towers and the compiled trainer's XLA head and core. `train`: the
    retrieval training rows, the users' histories (their order in time when the data has one)."""
    model, n_train = config.model, len(train)
    order = train["timestamp"].to_numpy() if config.data.has_time else None
    history = (train["user"].to_numpy(str), train["item"].to_numpy(str), order)
    with strategy.scope():
        user_tower = build_user_tower(users, model, history, items)
        item_tower = build_item_tower(items, n_genres, model)
        trainer = build_two_tower_trainer(users, items, user_tower, item_tower, model)
        passed = ["item_index"] + ["genres"] * bool(n_genres)
        passed += ["item_probability"] * model.sampling_correction
        head, core = training.xla_split(trainer, cfg, ["user_lookup", "item_lookup", *passed])
        training.compile_model(core, cfg, n_train, in_batch_softmax_loss)
    return user_tower, item_tower, head, core


def _val_recall(user_tower, item_tower, item_inputs: dict, val: HeldOut):
    """The per-epoch score: validation Recall@10 of the towers as they are."""

    def recall(_model) -> float:
        embeddings = np.asarray(predict_in_batches(item_tower, item_inputs, 8192))
        scores = tower_scores(user_tower, embeddings, val.users)
        return recall_at_k(scores, val.relevant, val.exclude, RETRIEVAL_K)

    return recall


def _fit_two_tower(config: Config, strategy, prepared: Prepared, items: list[str], run: RunDir):
    """In-batch-softmax two-tower model on the retrieval training split; returns the retrieval
    model (user id -> top-K over every catalogue item) and whether the train step ran under
    XLA, and the cold items' embeddings (`_cold_items`). Each epoch logs validation Recall@10
    (`val_recall@10`), which picks the best epoch. Raises `training.Diverged` if it diverged."""
    frame = prepared.frame
    tr = frame[frame.retrieval_split == "train"]
    va = frame[frame.retrieval_split == "val"]
    users = sorted(tr["user"].unique())
    inputs = TowerInputs(prepared.items, items, tr, config.model)
    va = va[va["item"].isin(inputs.item_row) & va["user"].isin(users)]
    cfg = dataclasses.replace(
        config.train,
        epochs=config.model.retrieval_epochs,
        batch_size=config.model.retrieval_batch_size,
        learning_rate=config.model.retrieval_learning_rate,
        patience=config.train.patience
        if config.model.retrieval_patience is None
        else config.model.retrieval_patience,
    )
    genres = inputs.genres
    user_tower, item_tower, head, core = _build_two_tower(
        users, items, len(genres), config, cfg, strategy, tr
    )
    print(
        f"train: two-tower on {len(tr):,} interactions, {len(users):,} users, {len(items):,} items"
        f"{f', {len(genres)} genres' if genres else ''}",
        flush=True,
    )
    item_inputs = inputs.catalogue()
    val = held_out(frame, "val", items, users, config.evaluate.relevant_min_rating)
    recall = _val_recall(user_tower, item_tower, item_inputs, val)
    scores = [training.EpochScore(f"recall@{RETRIEVAL_K}", recall)] if val.users else []
    train_ds, val_ds = _datasets(
        head,
        cfg,
        (inputs(tr), np.zeros(len(tr), np.float32)),
        (inputs(va), np.zeros(len(va), np.float32)) if len(va) else None,
    )
    monitor = RECALL_COLUMN if val.users else ("val_loss" if len(va) else "loss")
    mode = "max" if val.users else "min"
    training.fit(
        core,
        train_ds,
        val_ds,
        run,
        cfg,
        name="two_tower",
        monitor=monitor,
        mode=mode,
        examples=len(tr),
        scores=scores,
    )
    embeddings = np.asarray(predict_in_batches(item_tower, item_inputs, 8192))
    k = min(len(items), MAX_K + int(frame.groupby("user")["item"].size().max()))
    cold = _cold_items(item_tower, inputs, prepared.items, items)
    return build_retrieval(user_tower, embeddings, k), bool(core.jit_compile), cold


def _cold_items(item_tower, inputs: TowerInputs, metadata: pd.DataFrame, catalogue) -> dict:
    """Item-tower embeddings of the items with genres but no training interaction: their id
    falls in the out-of-vocabulary row, so the genres carry them; {} when there are none."""
    if not inputs.genres or not len(metadata):
        return {}
    described = rs_data.item_feature_text(metadata) != ""
    cold = metadata[~metadata["item"].isin(set(catalogue)) & described]
    if not len(cold):
        return {}
    ids = cold["item"].to_numpy(str)
    features = {"item": ids, "genres": inputs.genre_rows(ids)}
    embeddings = np.asarray(predict_in_batches(item_tower, features, 8192), np.float32)
    print(f"train: {len(ids):,} items with genres and no interaction embedded (cold start)")
    return {"items": ids, "embeddings": embeddings}


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options: StepOptions | None = None) -> dict:
    """RMSE/MAE against the bias baseline; Recall/NDCG/MAP/hit rate/coverage at K against the
    popularity baseline; the leaderboards, the test split for `score`, plots, model card."""
    opened = open_run(APP, config, options, Meta, prepare)
    run, meta, run_config, frame = opened.run, opened.meta, opened.config, opened.data.frame
    plots = run.subdir("plots")
    report = {"data": opened.data.info, "failed_networks": meta.failed, "rating": {}}
    boards = {}
    if meta.explicit_ratings:
        report["rating"], report["rating_pairs"], boards["rating"] = _evaluate_ratings(
            run, meta, frame, run_config, plots
        )
    retrieval = _evaluate_retrieval(run, meta, frame, run_config, plots)
    report["retrieval"], report["retrieval_held_out"], boards["retrieval"] = retrieval[:3]
    report["ivf_index"] = retrieval[3]
    report["leaderboard"] = boards
    report["test_input"] = _write_test_input(run, meta, frame)
    ev.plot_history(
        run.history_path, plots / "history.png", metrics=("loss", "rmse", f"recall@{RETRIEVAL_K}")
    )
    write_json(run.metrics_path, report)
    ks = sorted(set(run_config.evaluate.ks))
    write_card(run, report, ks)
    print_summary(report, ks)
    return report


def _evaluate_ratings(run: RunDir, meta: Meta, frame: pd.DataFrame, config: Config, plots: Path):
    """Test metrics per model, the pairs scored and left out, and the rating leaderboard."""
    parts = rating_parts(frame)
    with np.load(run.path / "baseline_predictions.npz", allow_pickle=False) as stored:
        predictions = {
            name: {s: stored[f"{name}_{s}"] for s in ("val", "test")}
            for name in RATING_BASELINES
            if f"{name}_test" in stored
        }
    for name in meta.rating_models:
        model = load_model(run, name)
        # Clipped to the training range, as `score` serves them (and surprise predicts).
        predictions[name] = {
            s: np.clip(
                predict_ratings(model, parts[s], config.serve.batch_size), *meta.rating_range
            )
            for s in ("val", "test")
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
    for name in predictions:
        if name in RATING_BASELINES:
            entries[name] = leaderboard.model_entry(
                leaderboard.BASELINE,
                metrics[name]["test"],
                metrics[name]["val"],
                meta.baseline_seconds[name],
            )
    for name, why in meta.baseline_failures.items():
        entries[name] = leaderboard.model_entry(leaderboard.BASELINE, status="failed", reason=why)
    selected, _ = meta.rating_model(config.serve.rating_model)
    board = leaderboard.build("rmse", False, entries, selected, "val_rmse")
    plot_errors(
        y["test"], {n: p["test"] for n, p in predictions.items()}, plots / "rating_errors.png"
    )
    return {n: m["test"] for n, m in metrics.items()}, pairs, board


def _network_entry(run: RunDir, meta: Meta, name: str, metrics: dict | None) -> dict:
    """A network's leaderboard row: its metrics, fit seconds and history, or failed with why."""
    summary = training.fit_summary(run, name) or {}
    seconds = summary.get("seconds")
    if name in meta.failed:
        return leaderboard.model_entry(
            leaderboard.NETWORK, train_seconds=seconds, status="failed", reason=meta.failed[name]
        )
    return leaderboard.model_entry(
        leaderboard.NETWORK,
        metrics["test"],
        metrics["val"],
        seconds,
        history=run.path / f"history-{name}.csv",
    )


def _evaluate_retrieval(run: RunDir, meta: Meta, frame: pd.DataFrame, config: Config, plots):
    """Ranking metrics per model on test, what was held out, and the retrieval leaderboard."""
    catalogue = read_catalogue(run)
    train_users = sorted(frame.loc[frame.retrieval_split == "train", "user"].unique())
    held = {
        s: held_out(frame, s, catalogue, train_users, config.evaluate.relevant_min_rating)
        for s in ("val", "test")
    }
    train_users = np.asarray(train_users, dtype=str)
    rows = frame[frame.retrieval_split == "train"]
    train = (train_users, interaction_matrix(rows, train_users.tolist(), catalogue))
    metrics, curves, extra = _rank_held_out(run, meta, catalogue, held, config, train)
    board = _retrieval_board(run, meta, metrics, extra["item_knn_seconds"])
    plot_recall(curves, plots / "recall_at_k.png")
    counts = {s: h.counts for s, h in held.items()} | {
        "relevance": relevance_text(config.evaluate.relevant_min_rating),
        "excluded": "each user's earlier items (training; validation too on test)",
    }
    tested = {n: m for n, m in metrics["test"].items() if m is not None}
    return tested, counts, board, extra.get("ivf")


def _rank_held_out(
    run: RunDir, meta: Meta, catalogue: list[str], held: dict, config: Config, train
):
    """Per split and model the ranking metrics (None without a user to measure), the test
    Recall@K curves, the item-kNN fit seconds and the IVF index's recall against brute force.
    `train`: the training users (sorted) and their interactions as a [users, items] matrix."""
    train_users, train = train
    ks = sorted(set(config.evaluate.ks) | {RETRIEVAL_K})
    popularity = popularity_scores(meta.popularity, catalogue).astype(np.float32)
    model = load_model(run, "two_tower") if meta.retrieval_model else None
    candidates = np.asarray(model.get_layer("index").candidate_embeddings) if model else None
    metrics, curves, extra = {}, {}, {}
    for s, h in held.items():
        start = time.perf_counter()
        # item-kNN ranks from the training interactions only, as the towers do.
        scores = {
            "popularity": np.broadcast_to(popularity, h.relevant.shape),
            "item_knn": item_knn_scores(train, np.searchsorted(train_users, h.users)),
        }
        extra["item_knn_seconds"] = time.perf_counter() - start
        if model is not None:
            scores["two_tower"] = tower_scores(model.get_layer("user_tower"), candidates, h.users)
        metrics[s] = {
            name: ranking_metrics(v, h.relevant, h.exclude, ks) if h.users else None
            for name, v in scores.items()
        }
        if s == "test":
            max_k = min(config.evaluate.max_k_plot, len(catalogue))
            curves = {n: recall_curve(v, h.relevant, h.exclude, max_k) for n, v in scores.items()}
            if model is not None and h.users:
                extra["ivf"] = _ivf_check(model, candidates, h, config)
    return metrics, curves, extra


def _ivf_check(model, candidates: np.ndarray, h: HeldOut, config: Config) -> dict:
    """The IVF index's Recall@10 against brute force on the test users, printed."""
    queries = np.asarray(
        predict_in_batches(model.get_layer("user_tower"), np.asarray(h.users, str), 8192),
        np.float32,
    )
    rows = np.arange(len(h.users))
    seen = SeenItems(*np.nonzero(h.exclude), len(h.users))
    lists = config.serve.ivf_lists or max(1, int(np.sqrt(len(candidates))))
    found = ivf_recall(
        queries,
        np.asarray(candidates, np.float32),
        rows,
        seen,
        RETRIEVAL_K,
        lists,
        config.serve.ivf_probe,
        config.train.seed,
    )
    recall = found[f"recall@{RETRIEVAL_K}_vs_brute_force"]
    print(
        f"evaluate: IVF index ({found['lists']} lists, {found['probed']} probed): "
        f"Recall@{RETRIEVAL_K} against brute force {recall:.3f} on {found['users']:,} test "
        f"users ({found['ivf_s']:.3f}s, brute force {found['brute_force_s']:.3f}s)",
        flush=True,
    )
    return found


def _retrieval_board(run: RunDir, meta: Meta, metrics: dict, knn_seconds: float) -> dict:
    """The retrieval leaderboard: the two-tower model beside popularity and cosine item-kNN
    at Recall/NDCG@10 (item-kNN's seconds: scoring the test users, its whole fit)."""

    def at_k(m: dict | None) -> dict:
        at = m[f"@{RETRIEVAL_K}"] if m else {}
        return {f"{k}@{RETRIEVAL_K}": at[k] for k in ("recall", "ndcg") if k in at}

    entries = {}
    if "two_tower" in meta.networks:
        two_tower = {s: at_k(metrics[s].get("two_tower")) for s in metrics}
        entries["two_tower"] = _network_entry(run, meta, "two_tower", two_tower)
    entries["popularity"] = leaderboard.model_entry(
        leaderboard.BASELINE,
        at_k(metrics["test"]["popularity"]),
        at_k(metrics["val"]["popularity"]),
        meta.baseline_seconds["popularity"],
    )
    entries["item_knn"] = leaderboard.model_entry(
        leaderboard.BASELINE,
        at_k(metrics["test"]["item_knn"]),
        at_k(metrics["val"]["item_knn"]),
        knn_seconds,
    )
    selected = "two_tower" if meta.retrieval_model else None
    return leaderboard.build(f"recall@{RETRIEVAL_K}", True, entries, selected, RECALL_COLUMN)


def _write_test_input(run: RunDir, meta: Meta, frame: pd.DataFrame) -> str:
    """test_split.csv in the columns `score` reads: the rating test pairs, or for implicit data
    the retrieval test pairs. Pairs with a user or item not in training land in the rejects."""
    split = "rating_split" if meta.explicit_ratings else "retrieval_split"
    rows = frame[frame[split] == "test"]
    user, item = InputSchema.from_dict(meta.schema).names
    write_table(
        run.path / "test_split.csv",
        pd.DataFrame({user: rows["user"].to_numpy(), item: rows["item"].to_numpy()}),
    )
    return "test_split.csv"


# ---------------------------------------------------------------------------------------------
# score, export and recommend


def score(config: Config, options: StepOptions | None = None) -> dict:
    """User-item pairs in -> predicted ratings (or, for implicit data, the two-tower score that
    recommend ranks by); pairs with unknown users or items are rejected."""
    options = options or NO_OPTIONS
    opened = open_run(APP, config, options, Meta)
    schema = InputSchema.from_dict(opened.meta.schema)
    user_col, item_col = schema.names
    scorer = pair_scorer(opened.run, opened.meta, config.serve)
    checked = PairSchema(schema.columns, scorer.users_, scorer.items_)
    output, rejects = default_output_paths(options.input, options.output, options.rejects)

    def predict(typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        rows = pd.DataFrame({"user": typed[user_col], "item": typed[item_col]})
        return pd.DataFrame(
            {
                "row": typed.index,
                user_col: rows["user"].to_numpy(),
                item_col: rows["item"].to_numpy(),
                scorer.column: scorer.predict(rows),
            }
        )

    columns = ["row", user_col, item_col, scorer.column]
    counts = score_file(
        options.input, output, rejects, checked, predict, columns, config.serve.chunk_rows
    )
    return print_counts(counts, output, rejects)


def export(config: Config, options: StepOptions | None = None) -> Path:
    """SavedModels of the serving rating model (user, item -> rating) and the retrieval model
    (user -> top-K scores and catalogue rows) under <output>/rating and <output>/retrieval
    (default the run's saved_model/); a model that failed to train is left out."""
    meta = Meta.read(locate(APP, config, options))
    wanted = config.serve.rating_model
    described = served_text(meta.rating_model(wanted)[0], meta.retrieval_model)
    return export_step(
        APP,
        config,
        options,
        lambda run: serving_models(run, wanted),
        write_saved_models,
        described,
    )


def recommend(config: Config, options: StepOptions | None = None) -> pd.DataFrame:
    """Top-K items for each user; items the user already has are excluded; unknown users get
    the most popular items (within the genres they stated, when the users file has a `genres`
    column) and are flagged in the `source` column."""
    options = options or NO_OPTIONS
    run = locate(APP, config, options)
    meta = Meta.read(run)
    k = options.k if options.k is not None else config.serve.k
    if not 1 <= k <= meta.max_k:
        raise DataError(f"--k must be between 1 and {meta.max_k}, got {k}")
    users = read_users(options.users)
    preferences = read_preferences(options.users)
    recommender = Recommender(run, config.serve)
    result = recommender.recommend(users, k, config.serve.batch_size, preferences)
    output = Path(options.output) if options.output else run.path / "recommendations.csv"
    write_table(output, result)
    unknown = len(set(users) - recommender.users_)
    stated = int(result.drop_duplicates("user")["source"].eq("popularity_preferences").sum())
    broken = recommender.non_finite_users_
    fallback = f"; {broken:,} with no finite model score: popularity fallback" if broken else ""
    within = f", {stated:,} of them within their stated genres" if stated else ""
    print(
        f"recommend: {len(users):,} users ({unknown:,} unknown: popularity fallback{within}"
        f"{fallback}), top {k} -> {output}",
        flush=True,
    )
    return result


def cv(config: Config, options: StepOptions | None = None) -> dict:
    """Rating cross-validation: the rating models and baselines trained and measured on each
    fold (the u1..u5 base/test files of a folder, else `data.cv_folds` random folds); the mean
    and spread of their test RMSE, written to the cv run folder (cv.json, cv.md)."""
    from apps.recsys.cv import run_cv  # cv builds on this module's training helpers

    return run_cv(config)
