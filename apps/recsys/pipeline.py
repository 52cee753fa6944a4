"""The recsys app's steps: prepare, train, evaluate, score, export, and recommend."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.recsys import data as rs_data
from apps.recsys.config import Config
from apps.recsys.metrics import ranking_metrics, rating_metrics, recall_curve
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
from shared import training
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
    frame = _read_ratings(data, ratings_path)
    if data.rating_split == "given":
        test = _read_ratings(data, Path(data.test_path))
        frame = pd.concat(
            [frame.assign(_given="base"), test.assign(_given="test")], ignore_index=True
        )
    frame, rejects = rs_data.deduplicate(frame)
    items = _read_items(data, items_path)
    has_rating = bool(frame["rating"].notna().all())
    if data.rating_split == "given":
        split = np.where(frame.pop("_given") == "test", "test", "train").astype(object)
        base = np.flatnonzero(split == "train")
        val = rs_data.random_split(len(base), data.val_fraction, 0.0, config.train.seed) == "test"
        split[base[val]] = "val"
    else:
        split = rs_data.random_split(
            len(frame), data.val_fraction, data.test_fraction, config.train.seed
        )
    frame["rating_split"] = split
    frame["retrieval_split"] = rs_data.leave_last_out(
        frame, data.leave_out, data.min_user_interactions
    )
    rs_data.check_no_leak(frame, "rating_split", temporal=False)
    rs_data.check_no_leak(frame, "retrieval_split", temporal=bool(data.timestamp))
    info = {
        "source": str(ratings_path),
        "items_source": str(items_path) if items_path and len(items) else None,
        "rows": int(len(frame)),
        "users": int(frame["user"].nunique()),
        "items": int(frame["item"].nunique()),
        "explicit_ratings": has_rating,
        "rejected_rows": int(len(rejects)),
        "rating_split": {s: int((frame.rating_split == s).sum()) for s in rs_data.SPLITS},
        "retrieval_split": {s: int((frame.retrieval_split == s).sum()) for s in rs_data.SPLITS},
        "leak_checks": "passed",
    }
    if training.is_chief():
        write_table(folder / "interactions.parquet", frame)
        write_table(folder / "items.parquet", items)
        write_table(folder / "rejects.csv", rejects)
        write_json(folder / "prepare.json", info)
    print(
        f"prepare: {len(frame):,} interactions, {info['users']:,} users, {info['items']:,} items "
        f"from {ratings_path} in {time.perf_counter() - start:.1f}s; {len(rejects):,} repeated "
        f"pairs set aside -> {folder / 'rejects.csv'}; splits pass the leak checks",
        flush=True,
    )
    return Prepared(frame, items, folder, info)


def _read_ratings(data, path: Path) -> pd.DataFrame:
    if data.layout == "movielens":
        return rs_data.read_movielens_ratings(path)
    return rs_data.read_interactions(path, data.user, data.item, data.rating, data.timestamp)


def _read_items(data, path: Path | None) -> pd.DataFrame:
    if path is None:
        return pd.DataFrame({"item": [], "title": [], "genres": []}, dtype=str)
    if data.layout == "movielens":
        return rs_data.read_movielens_items(path)
    return rs_data.read_items(path, data.item, data.title, data.genres)


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
    baseline (retrieval); save the models, the top-K index and what recommend needs."""
    training.seed_everything(config.train.seed)
    strategy = training.select_strategy()
    policy = training.set_precision(config.train.mixed_precision)
    prepared = prepare(config)
    run = RunDir.create(
        APP, to_dict(config), config.run.root, config.run.run_id, is_chief=training.is_chief()
    )
    print(f"train: run folder {run.path}{' (resuming)' if run.resumed else ''}", flush=True)
    frame = prepared.frame
    meta = {
        "app": APP,
        "prepared": str(prepared.folder),
        "precision_policy": policy,
        "xla_compiled": {},  # per network: whether its train step ran under XLA
    }
    if prepared.info["explicit_ratings"]:
        parts = {s: frame[frame.rating_split == s] for s in rs_data.SPLITS}
        tr = parts["train"]
        users, items = sorted(tr["user"].unique()), sorted(tr["item"].unique())
        mean = float(tr["rating"].mean())
        bias = _bias_baseline(tr, config.model.bias_damping)
        baseline = {s: _bias_predict(bias, parts[s]) for s in ("val", "test")}
        models = {}
        with strategy.scope():
            models["mf"] = build_mf(users, items, config.model, mean)
            models["ncf"] = build_ncf(users, items, config.model, mean)
        for name, model in models.items():
            meta["xla_compiled"][name] = _fit_rating(model, name, parts, config, run, strategy)
        meta["rating_range"] = [float(tr["rating"].min()), float(tr["rating"].max())]
        meta["validation_rmse"] = {
            "bias_baseline": rating_metrics(parts["val"]["rating"], baseline["val"])["rmse"],
            **{
                n: rating_metrics(parts["val"]["rating"], _predict_ratings(m, parts["val"], 8192))[
                    "rmse"
                ]
                for n, m in models.items()
            },
        }
    else:
        models, baseline = {}, {}
    retrieval, item_ids, popularity, compiled = _fit_two_tower(config, strategy, prepared, run)
    meta["xla_compiled"]["two_tower"] = compiled
    meta.update(
        {
            "rating_models": list(models),
            "schema": InputSchema(
                [Column(config.data.user, "id"), Column(config.data.item, "id")]
            ).to_dict(),
            "max_k": MAX_K,
            "popularity": popularity,
            "items": len(item_ids),
        }
    )
    if run.is_chief:
        for name, model in models.items():
            path = run.model_path if name == "mf" else run.path / f"{name}.keras"
            with atomic_path(path, suffix=".keras") as tmp:
                model.save(tmp)
        with atomic_path(run.path / "retrieval.keras", suffix=".keras") as tmp:
            retrieval.save(tmp)
        if baseline:
            with atomic_path(run.path / "baseline_predictions.npz", suffix=".npz") as tmp:
                np.savez(tmp, **baseline)
        known = frame[["user", "item"]].drop_duplicates()
        write_table(run.path / "known_items.parquet", known)
        write_table(run.path / "items.parquet", prepared.items)
        write_json(run.path / "catalogue.json", item_ids)
        write_json(run.meta_path, meta)
        _export(run, run.saved_model_path)
    run.finish()
    digests = " ".join(
        f"{name} {training.weights_digest(model)}"
        for name, model in {**models, "two_tower": retrieval}.items()
    )
    print(f"train: finished; weights sha256 {digests}; models -> {run.path}", flush=True)
    return run


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
    model: keras.Model, name: str, parts: dict, config: Config, run: RunDir, strategy
) -> bool:
    """Fit a rating model; returns whether its train step ran under XLA."""
    cfg = config.train
    with strategy.scope():  # the optimizer's variables belong to the strategy too
        # The id lookups do not compile with XLA: under `xla` they run in tf.data.
        head, core = training.xla_split(model, cfg, ["user_lookup", "item_lookup"])
        training.compile_model(
            core,
            cfg,
            len(parts["train"]),
            "mean_squared_error",
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        )
    print(f"train: {name} on {len(parts['train']):,} ratings", flush=True)
    target = {s: parts[s]["rating"].to_numpy(np.float32) for s in ("train", "val")}
    training.fit(
        core,
        training.through_head(
            head,
            in_memory_dataset(
                _id_arrays(parts["train"]), target["train"], cfg.batch_size, True, cfg.seed
            ),
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
        examples=len(parts["train"]),
    )
    return bool(core.jit_compile)


def _predict_ratings(model: keras.Model, rows: pd.DataFrame, batch_size: int) -> np.ndarray:
    return np.asarray(predict_in_batches(model, _id_arrays(rows), batch_size)).reshape(-1)


def _fit_two_tower(config: Config, strategy, prepared: Prepared, run: RunDir):
    """In-batch-softmax two-tower model on the temporal training split; returns the retrieval
    model (user id -> top-K over every training item), the item ids, the popularity list and
    whether the train step ran under XLA."""
    frame, cfg_model = prepared.frame, config.model
    tr = frame[frame.retrieval_split == "train"]
    va = frame[frame.retrieval_split == "val"]
    users, items = sorted(tr["user"].unique()), sorted(tr["item"].unique())
    item_row = {item: n for n, item in enumerate(items)}
    probability = tr["item"].value_counts(normalize=True)
    va = va[va["item"].isin(item_row)]
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
        monitor="val_loss" if len(va) else "loss",
        examples=len(tr),
    )
    item_inputs = {"item": np.asarray(items, dtype=str)}
    if genres:
        item_inputs["genres"] = genre_rows(item_inputs["item"])
    embeddings = np.asarray(predict_in_batches(item_tower, item_inputs, 8192))
    known_counts = frame.groupby("user")["item"].size()
    k = min(len(items), MAX_K + int(known_counts.max()))
    retrieval = build_retrieval(user_tower, embeddings, k)
    counts = tr["item"].value_counts()
    popularity = {
        "items": counts.index[: MAX_K + int(known_counts.max())].tolist(),
        "counts": counts.to_numpy()[: MAX_K + int(known_counts.max())].tolist(),
        "interactions": int(len(tr)),
    }
    return retrieval, items, popularity, bool(core.jit_compile)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(config: Config, options=None) -> dict:
    """RMSE/MAE against the bias baseline; Recall/NDCG/MAP/hit rate/coverage at K against the
    popularity baseline; plots; model card."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    run_config = load_config(Config, run.path / "config.yaml")
    prepared = prepare(run_config)
    frame = prepared.frame
    report = {"data": prepared.info, "rating": {}, "retrieval": {}}
    plots = run.subdir("plots")
    if meta["rating_models"]:
        test = frame[frame.rating_split == "test"]
        baseline = np.load(run.path / "baseline_predictions.npz", allow_pickle=False)
        predictions = {"bias_baseline": baseline["test"]}
        for name in meta["rating_models"]:
            model = _load_model(run.model_path if name == "mf" else run.path / f"{name}.keras")
            predictions[name] = _predict_ratings(model, test, run_config.serve.batch_size)
        y = test["rating"].to_numpy(np.float64)
        report["rating"] = {n: rating_metrics(y, p) for n, p in predictions.items()}
        _plot_errors(y, predictions, plots / "rating_errors.png")
    scores, relevant, exclude, unreachable = _retrieval_matrices(run, meta, frame)
    ks = sorted(set(run_config.evaluate.ks))
    popularity = _popularity_scores(meta, scores.shape[1], run)
    report["retrieval"] = {
        "two_tower": ranking_metrics(scores, relevant, exclude, ks),
        "popularity": ranking_metrics(
            np.broadcast_to(popularity, scores.shape), relevant, exclude, ks
        ),
        "test_items_not_in_training_catalogue": unreachable,
        "excluded": "each user's training and validation items",
    }
    max_k = min(run_config.evaluate.max_k_plot, scores.shape[1])
    curves = {
        "two_tower": recall_curve(scores, relevant, exclude, max_k),
        "popularity": recall_curve(
            np.broadcast_to(popularity, scores.shape), relevant, exclude, max_k
        ),
    }
    _plot_recall(curves, plots / "recall_at_k.png")
    ev.plot_history(run.history_path, plots / "history.png", metrics=("loss", "rmse"))
    write_json(run.metrics_path, report)
    _write_card(run, report, ks)
    _print_summary(report, ks)
    return report


def _load_model(path: Path) -> keras.Model:
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _retrieval_matrices(run: RunDir, meta: dict, frame: pd.DataFrame):
    """Scores, relevance and exclusion matrices [test users, catalogue items]."""
    retrieval = _load_model(run.path / "retrieval.keras")
    items = _catalogue_from_run(run)
    column = {item: n for n, item in enumerate(items)}
    test = frame[frame.retrieval_split == "test"]
    users = sorted(test["user"].unique())
    row = {user: n for n, user in enumerate(users)}
    user_tower = retrieval.get_layer("user_tower")
    queries = np.asarray(predict_in_batches(user_tower, np.asarray(users, dtype=str), 8192))
    candidates = np.asarray(retrieval.get_layer("index").candidate_embeddings)
    scores = queries @ candidates.T
    relevant = np.zeros(scores.shape, bool)
    reachable = test[test["item"].isin(column)]
    relevant[reachable["user"].map(row).to_numpy(), reachable["item"].map(column).to_numpy()] = True
    history = frame[
        (frame.retrieval_split != "test") & frame["user"].isin(row) & frame["item"].isin(column)
    ]
    exclude = np.zeros(scores.shape, bool)
    exclude[history["user"].map(row).to_numpy(), history["item"].map(column).to_numpy()] = True
    return scores, relevant, exclude, int(len(test) - len(reachable))


def _catalogue_from_run(run: RunDir) -> list[str]:
    """The item ids that the retrieval index's rows stand for, in row order."""
    return read_json(run.path / "catalogue.json")


def _popularity_scores(meta: dict, n_items: int, run: RunDir) -> np.ndarray:
    """Most-popular ranking as exact float32 scores (n - rank); ties by catalogue order."""
    items = _catalogue_from_run(run)
    counts = dict(zip(meta["popularity"]["items"], meta["popularity"]["counts"], strict=True))
    order = np.argsort(-np.array([counts.get(i, 0) for i in items]), kind="stable")
    scores = np.empty(n_items, np.float64)
    scores[order] = n_items - np.arange(n_items)
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
        if isinstance(m, dict):
            cells = "  ".join(
                f"R@{k} {m[f'@{k}']['recall']:.4f} NDCG@{k} {m[f'@{k}']['ndcg']:.4f}" for k in ks
            )
            print(f"{name:<16} {cells}")


def _write_card(run: RunDir, report: dict, ks: list[int]) -> None:
    data = report["data"]
    metrics = ("recall", "ndcg", "map", "hit_rate", "coverage")
    rows = {
        n: {f"{metric}@{k}": m[f"@{k}"][metric] for k in ks for metric in metrics}
        for n, m in report["retrieval"].items()
        if isinstance(m, dict)
    }
    columns = [f"{metric}@{k}" for k in ks for metric in metrics]

    def split_text(counts: dict) -> str:
        return ", ".join(f"{name} {count:,}" for name, count in counts.items())

    sections = {
        "Intended use": "Predicts a user's rating of an item and retrieves top-K items per user "
        "for candidate generation; unknown users get the most popular items, flagged.",
        "Data": f"Source `{data['source']}`: {data['rows']:,} interactions, {data['users']:,} "
        f"users, {data['items']:,} items. Rating split (random or given): "
        f"{split_text(data['rating_split'])}. Retrieval split (each user's last interactions "
        f"held out): {split_text(data['retrieval_split'])}. "
        "Both splits pass the leak checks.",
    }
    if report["rating"]:
        sections["Rating prediction (test)"] = metrics_table(report["rating"], ["rmse", "mae"])
    sections["Retrieval (test)"] = metrics_table(rows, columns) + (
        "\n\nEach user's training and validation items are excluded from the ranking. "
        "Recall, NDCG and MAP come from keras-rs; MAP@K divides by all of the user's held-out "
        "items (keras-rs's definition). Hit rate: share of users with a held-out item in the "
        "top K; coverage: share of the catalogue recommended to at least one user."
    )
    sections["Limits"] = (
        "Models know only the users and items seen in training; new ones need a retrain. "
        "The sample data is generated; figures on it say nothing about a real catalogue."
    )
    write_model_card(run.card_path, "Recommender: model card", sections)


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
    unknown = int(result.loc[result["source"] != "two_tower", "user"].nunique())
    print(
        f"recommend: {len(users):,} users ({unknown:,} unknown: popularity fallback), top {k} "
        f"-> {output}",
        flush=True,
    )
    return result


class Recommender:
    """Loads a run's retrieval model, catalogue, known items and titles; `recommend` returns the
    table of top-K items."""

    def __init__(self, run: RunDir):
        self.meta = load_meta(run)
        self.model = _load_model(run.path / "retrieval.keras")
        self.catalogue = np.asarray(_catalogue_from_run(run), dtype=object)
        lookup = self.model.get_layer("user_tower").get_layer("user_lookup")
        self.user_row_ = {u: n for n, u in enumerate(lookup.get_vocabulary()[1:])}
        self.users_ = set(self.user_row_)
        known = pd.read_parquet(run.path / "known_items.parquet")
        # Known (user, item) pairs as sorted integer keys, for a vectorised exclusion.
        column = pd.Series(np.arange(len(self.catalogue)), index=self.catalogue)
        rows = known["user"].map(self.user_row_)
        cols = known["item"].map(column)
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

    def recommend(self, users: list[str], k: int, batch_size: int = 8192) -> pd.DataFrame:
        known_users = [u for u in users if u in self.users_]
        parts = {}
        if known_users:
            out = predict_in_batches(self.model, np.asarray(known_users, dtype=str), batch_size)
            rows, scores = np.asarray(out["items"], np.int64), np.asarray(out["scores"])
            user_rows = np.array([self.user_row_[u] for u in known_users], np.int64)
            keys = user_rows[:, None] * self.n_items_ + rows
            seen = np.isin(keys, self.known_keys_)
            # Unseen candidates first, each group in score order (a stable sort on the flag).
            order = np.argsort(seen, axis=1, kind="stable")[:, :k]
            rows = np.take_along_axis(rows, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            fresh = ~np.take_along_axis(seen, order, axis=1)  # False only for a user who has
            # seen nearly the whole catalogue: they get fewer than k items, never a seen one
            for n, user in enumerate(known_users):
                keep = fresh[n]
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
    """User-item pairs in -> predicted ratings; pairs with unknown users or items are rejected."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    meta = load_meta(run)
    name = config.serve.rating_model
    if name not in meta["rating_models"]:
        raise DataError(f"{run.path}: no {name} rating model (the data had no explicit ratings)")
    model = _load_model(run.model_path if name == "mf" else run.path / f"{name}.keras")
    schema = InputSchema.from_dict(meta["schema"])
    vocab = {
        what: set(model.get_layer(f"{what}_lookup").get_vocabulary()[1:])
        for what in ("user", "item")
    }
    checked = PairSchema(schema.columns, vocab["user"], vocab["item"])
    user_col, item_col = schema.names
    low, high = meta["rating_range"]
    output, rejects = default_output_paths(options.input, options.output, options.rejects)

    def predict(typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        rows = pd.DataFrame({"user": typed[user_col], "item": typed[item_col]})
        rating = np.clip(_predict_ratings(model, rows, config.serve.batch_size), low, high)
        return pd.DataFrame(
            {
                "row": typed.index,
                user_col: rows["user"].to_numpy(),
                item_col: rows["item"].to_numpy(),
                "predicted_rating": np.round(rating, 4),
            }
        )

    columns = ["row", user_col, item_col, "predicted_rating"]
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


def _export(run: RunDir, target: Path) -> None:
    with atomic_dir(target) as tmp:
        for name in ("model.keras", "retrieval.keras"):
            if (run.path / name).exists():
                model = _load_model(run.path / name)
                sub = "rating" if name == "model.keras" else "retrieval"
                model.export(str(tmp / sub), format="tf_saved_model", verbose=False)


def export(config: Config, options) -> Path:
    """SavedModels of the MF rating model (user, item -> rating) and the retrieval model
    (user -> top-K scores and catalogue rows) under saved_model/rating and saved_model/retrieval."""
    run = RunDir.locate(APP, getattr(options, "run", None), config.run.root)
    target = Path(options.output) if getattr(options, "output", None) else run.saved_model_path
    _export(run, target)
    print(f"export: SavedModels -> {target}/rating, {target}/retrieval", flush=True)
    return target
