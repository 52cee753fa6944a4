"""Evaluation helpers: classification metrics, operating points, and the plots people look at."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from shared.io import atomic_path  # noqa: E402


def cost_threshold(y, score, fn_cost, fp_cost: float) -> tuple[float, float]:
    """The threshold (flag when score >= threshold) with the lowest total cost, and that cost.

    `fn_cost` is a number or one cost per row (for example the transaction amount); a missed
    positive costs its `fn_cost`, a false alarm costs `fp_cost`. Every cut between two distinct
    scores is tried, plus flagging nothing.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    fn_cost = np.broadcast_to(np.asarray(fn_cost, dtype=np.float64), y.shape)
    order = np.argsort(-score, kind="stable")
    s, pos, cost_pos = score[order], y[order], np.where(y[order], fn_cost[order], 0.0)
    caught = np.cumsum(cost_pos)  # FN cost avoided by flagging the top k
    false_alarms = np.cumsum(~pos)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a cut may only fall between distinct scores
    totals = cost_pos.sum() - caught[last_of_tie] + fp_cost * false_alarms[last_of_tie]
    cut_scores = s[last_of_tie]
    nothing = cost_pos.sum()
    best = int(np.argmin(totals)) if len(totals) else 0
    if len(totals) == 0 or nothing <= totals[best]:
        return float(np.nextafter(s[0], np.inf)) if len(s) else 1.0, float(nothing)
    return float(cut_scores[best]), float(totals[best])


def recall_at_budget(y, score, fraction: float) -> float:
    """Share of positives among the top `fraction` of rows by score (an alert budget)."""
    y = np.asarray(y).astype(bool)
    if y.sum() == 0:
        return float("nan")
    k = max(1, math.ceil(fraction * len(y)))
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    return float(y[top].sum() / y.sum())


def binary_report(
    y, score, threshold: float, fn_cost, fp_cost: float, budgets=(0.005, 0.01)
) -> dict:
    """The metrics a fraud or screening team reads: ranking quality, then the operating point."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    flagged = score >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    tn = int(np.sum(~flagged & (y == 0)))
    fn_cost = np.broadcast_to(np.asarray(fn_cost, dtype=np.float64), y.shape)
    cost = float(fn_cost[~flagged & (y == 1)].sum() + fp_cost * fp)
    both_classes = 0 < y.sum() < len(y)
    report = {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "auprc": float(skm.average_precision_score(y, score)) if both_classes else float("nan"),
        "roc_auc": float(skm.roc_auc_score(y, score)) if both_classes else float("nan"),
        "threshold": float(threshold),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "expected_cost": cost,
        "cost_per_1000_rows": 1000 * cost / max(1, len(y)),
    }
    for fraction in budgets:
        report[f"recall_at_top_{fraction * 100:g}pct"] = recall_at_budget(y, score, fraction)
    return report


def classification_report(y, prob: np.ndarray, class_names: list[str], top_k: int) -> dict:
    """Accuracy, top-k accuracy (more than k classes), per-class precision/recall/F1, macro F1."""
    y = np.asarray(y)
    predicted = prob.argmax(axis=1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    report = {
        "examples": int(len(y)),
        "accuracy": float(np.mean(predicted == y)),
        "macro_f1": float(np.mean(f1)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
    }
    if len(class_names) > top_k:
        top = np.argsort(-prob, axis=1)[:, :top_k]
        report[f"top{top_k}_accuracy"] = float(np.mean((top == y[:, None]).any(axis=1)))
    report["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    report["confusion_matrix"] = skm.confusion_matrix(y, predicted, labels=labels).tolist()
    return report


def save_figure(fig, path: str | Path) -> Path:
    """Save a figure atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_roc(
    curves: dict, path: str | Path, title: str = "ROC curve", points: dict | None = None
) -> Path:
    """`curves` maps a model name to (y_true, score); `points` maps a curve's name to the
    operating point (false positive rate, true positive rate, label) marked on it."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (y, score) in curves.items():
        fpr, tpr, _ = skm.roc_curve(y, score)
        line = ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")[0]
        if points and name in points:
            x, y_point, label = points[name]
            ax.plot(x, y_point, "o", color=line.get_color(), markersize=8, markeredgecolor="k")
            right = x > 0.55  # text on the side with room, inside the axes
            ax.annotate(
                label,
                (x, y_point),
                xytext=(-10 if right else 10, -18),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=8,
            )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_precision_recall(
    curves: dict, path: str | Path, title: str = "Precision-recall curve"
) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    base = None
    for name, (y, score) in curves.items():
        precision, recall, _ = skm.precision_recall_curve(y, score)
        ap = skm.average_precision_score(y, score)
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
        base = float(np.mean(y))
    if base is not None:
        ax.axhline(base, color="grey", linestyle=":", linewidth=1, label=f"chance ({base:.4f})")
    ax.set(xlabel="Recall", ylabel="Precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def calibration_bins(y, prob, n_bins: int = 10, strategy: str = "quantile"):
    """Mean predicted probability and observed frequency per non-empty bin, and the bin counts.

    `strategy`: "uniform" (equal-width), "quantile" (equal-count) or "log" (equal width in
    log-probability, which resolves the high-risk tail when positives are rare).
    """
    y = np.asarray(y, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if strategy == "quantile":
        edges = np.unique(np.quantile(prob, np.linspace(0, 1, n_bins + 1)))
    elif strategy == "log":
        low = max(1e-6, float(np.quantile(prob, 0.001)))
        edges = np.r_[0.0, np.geomspace(low, 1.0, n_bins)]
    else:
        edges = np.linspace(0, 1, n_bins + 1)
    if len(edges) < 2:  # every probability identical
        edges = np.array([prob.min(), prob.min() + 1e-12])
    index = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1)
    keep = counts > 0
    mean_prob = np.bincount(index, weights=prob, minlength=len(edges) - 1)[keep] / counts[keep]
    freq = np.bincount(index, weights=y, minlength=len(edges) - 1)[keep] / counts[keep]
    return mean_prob, freq, counts[keep]


def expected_calibration_error(y, prob, n_bins: int = 15) -> float:
    """ECE with equal-width bins: the count-weighted gap between confidence and frequency."""
    mean_prob, freq, counts = calibration_bins(y, prob, n_bins, strategy="uniform")
    return float(np.sum(counts * np.abs(mean_prob - freq)) / max(1, counts.sum()))


def plot_calibration(
    curves: dict, path: str | Path, n_bins: int = 12, title: str = "Calibration"
) -> Path:
    """Reliability diagram on log-log axes with log-spaced bins (rare positives crowd a linear one).

    Bins where no positive was observed sit on the bottom edge (hollow markers).
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    binned = {
        name: calibration_bins(y, prob, n_bins, strategy="log")
        for name, (y, prob) in curves.items()
    }
    seen = np.concatenate(
        [np.r_[m[m > 0], f[f > 0]] for m, f, _ in binned.values()] or [np.array([0.1])]
    )
    low = max(float(seen.min()) / 2 if len(seen) else 1e-3, 1e-6)
    for name, (mean_prob, freq, _) in binned.items():
        y, prob = curves[name]
        ece = expected_calibration_error(y, prob)
        line = ax.plot(
            mean_prob[freq > 0],
            freq[freq > 0],
            marker="o",
            markersize=4,
            label=f"{name} (ECE {ece:.4f})",
        )[0]
        ax.plot(
            mean_prob[freq == 0],
            np.full(int((freq == 0).sum()), low),
            linestyle="none",
            marker="o",
            markersize=5,
            markerfacecolor="none",
            color=line.get_color(),
        )
    ax.plot([low, 1], [low, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low * 0.9, 1))
    ax.set(xlabel="Mean predicted probability", ylabel="Observed frequency", title=title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix, labels: list[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Counts in each cell, colour by share of the true class (row-normalised)."""
    matrix = np.asarray(matrix)
    share = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    size = max(4.0, 0.5 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=45 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_yticks(range(len(labels)), labels)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:,}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set(xlabel="Predicted", ylabel="True", title=title)
    return save_figure(fig, path)


def plot_cost_curve(
    y,
    score,
    fn_cost,
    fp_cost: float,
    threshold: float,
    path: str | Path,
    title: str = "Cost by threshold",
) -> Path:
    """Total cost as the threshold moves, with the chosen threshold marked."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    fn_cost = np.broadcast_to(np.asarray(fn_cost, dtype=np.float64), y.shape)
    grid = np.unique(np.quantile(score, np.linspace(0, 1, 400)))
    order = np.sort(score)
    totals = []
    for t in grid:
        flagged = score >= t
        totals.append(fn_cost[y & ~flagged].sum() + fp_cost * np.sum(flagged & ~y))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, totals, label="total cost")
    ax.axvline(threshold, color="red", linestyle="--", label=f"chosen threshold {threshold:.4g}")
    ax.set(xlabel="Threshold (flag when score >= threshold)", ylabel="Total cost", title=title)
    if order[0] > 0 and order[-1] / max(order[0], 1e-12) > 100:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


DIVERGED_FIRST_EPOCH = 3.0  # a first-epoch loss this many times every later one is off scale


def plot_history(history_csv: str | Path, path: str | Path, metrics=("loss",)) -> Path | None:
    """Training and validation curves per network from history.csv: losses (metrics whose
    name contains 'loss') on the top axes, the other metrics on their own axes below. A first
    epoch whose loss is far above the rest (a warm-up spike) is left off the loss scale, noted
    in the title, so the later epochs stay readable."""
    import pandas as pd

    history_csv = Path(history_csv)
    if not history_csv.exists():
        return None
    frame = pd.read_csv(history_csv)
    networks = frame["network"].unique() if "network" in frame else [None]
    losses = [m for m in metrics if "loss" in m]
    others = [m for m in metrics if "loss" not in m]
    rows = [group for group in (losses, others) if group]
    fig, axes = plt.subplots(
        len(rows), len(networks), figsize=(5 * len(networks), 3.2 * len(rows)), squeeze=False
    )
    for col, name in enumerate(networks):
        part = frame[frame["network"] == name] if name is not None else frame
        for row, group in enumerate(rows):
            ax = axes[row][col]
            columns = [p + m for m in group for p in ("", "val_") if p + m in part]
            for column in columns:
                ax.plot(part["epoch"] + 1, part[column], marker="o", markersize=3, label=column)
            title = str(name or "training")
            if group is losses and _clip_first_epoch(ax, part[columns]):
                title += " (epoch 1 off scale)"
            ax.set(xlabel="Epoch", title=title if row == 0 else "")
            ax.set_ylabel("loss" if group is losses else "metric")
            if columns:
                ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _clip_first_epoch(ax, values) -> bool:
    """Set the y range from epoch 2 on when epoch 1 diverged above it; True when clipped."""
    values = values.to_numpy(dtype=float)
    if len(values) < 3 or not np.isfinite(values[1:]).any():
        return False
    later = values[1:][np.isfinite(values[1:])]
    first = values[0][np.isfinite(values[0])]
    top = float(np.max(later))
    # Against the later maximum, not the median: a converging curve's first epoch is often
    # several times its last ones without being a spike worth hiding.
    if not len(first) or first.max() <= DIVERGED_FIRST_EPOCH * max(top, 1e-12):
        return False
    low = float(np.min(later))
    pad = (top - low) * 0.1 or abs(top) * 0.1 or 0.1
    ax.set_ylim(low - pad, top + pad)
    return True


def bootstrap_interval(
    statistic,
    arrays: tuple,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups=None,
) -> tuple[float, float, float]:
    """`statistic(*arrays)` and its percentile bootstrap interval over resampled rows.

    With `groups` (one id per row, e.g. the patient; '' or None means unknown) whole groups are
    resampled, so the interval counts the images of one patient as the one observation they
    mostly are; rows without a group are groups of their own. Resamples where the statistic is
    undefined (NaN, e.g. a ROC-AUC drawn with one class only) are skipped; with `n_boot` 0 or no
    valid resample the bounds are NaN.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    point = float(statistic(*arrays))
    n = len(arrays[0])
    members = group_rows(groups, n)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        if members is None:
            index = rng.integers(0, n, n)
        else:
            index = np.concatenate(
                [members[g] for g in rng.integers(0, len(members), len(members))]
            )
        value = statistic(*(a[index] for a in arrays))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return point, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return point, float(low), float(high)


def group_rows(groups, n: int) -> list[np.ndarray] | None:
    """The row indices of each group; None when no row has a known group (resample rows)."""
    if groups is None:
        return None
    groups = np.asarray(groups).astype(str)
    if len(groups) != n:
        raise ValueError(f"expected one group per row. Received: {len(groups)} for {n} rows")
    known = groups != ""
    if not known.any():
        return None
    # Prefixes keep a patient named like a row number apart from that row.
    labels = np.where(known, np.char.add("g:", groups), np.char.add("r:", np.arange(n).astype(str)))
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


def patients_known(groups) -> bool:
    """True when at least one row has a group id (a bootstrap then resamples groups)."""
    return groups is not None and bool((np.asarray(groups).astype(str) != "").any())


def roc_auc(y, score) -> float:
    """ROC-AUC, NaN when `y` holds a single class (the AUC is undefined there)."""
    y = np.asarray(y).astype(int)
    return float(skm.roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def macro_roc_auc(y_onehot, prob) -> float:
    """Mean one-vs-rest ROC-AUC over the columns where it is defined."""
    values = [roc_auc(y_onehot[:, k], prob[:, k]) for k in range(prob.shape[1])]
    defined = [v for v in values if np.isfinite(v)]
    return float(np.mean(defined)) if defined else float("nan")


def sensitivity_specificity(y, score, threshold: float) -> dict:
    """Rates and counts when flagging `score >= threshold` as positive."""
    y = np.asarray(y).astype(bool)
    flagged = np.asarray(score) >= threshold
    tp, fn = int(np.sum(flagged & y)), int(np.sum(~flagged & y))
    tn, fp = int(np.sum(~flagged & ~y)), int(np.sum(flagged & ~y))
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "ppv": tp / (tp + fp) if tp + fp else float("nan"),
        "npv": tn / (tn + fn) if tn + fn else float("nan"),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def threshold_for_target(y, score, metric: str, target: float) -> float:
    """The operating point where `metric` (sensitivity or specificity) is at least `target`.

    For sensitivity: the highest threshold that still catches `target` of the positives (the
    best specificity that allows); for specificity: the lowest threshold that keeps `target` of
    the negatives below it (the best sensitivity). Thresholds are observed scores, flag >= t.
    """
    if metric not in ("sensitivity", "specificity"):
        raise ValueError(f"metric must be sensitivity or specificity. Received: metric={metric!r}")
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if metric == "sensitivity":
        positives = np.sort(score[y])[::-1]
        if len(positives) == 0:
            return float(np.nextafter(score.max(initial=1.0), np.inf))
        need = int(np.ceil(target * len(positives) - 1e-9))
        return float(positives[max(need, 1) - 1])
    negatives = np.sort(score[~y])
    if len(negatives) == 0:
        return float(score.min(initial=0.0))
    need = int(np.ceil(target * len(negatives) - 1e-9))
    if need == 0:
        return float(negatives[0])
    # Flag strictly above the need-th lowest negative: the next representable number up.
    return float(np.nextafter(negatives[need - 1], np.inf))


def plot_reliability(
    curves: dict, path: str | Path, n_bins: int = 10, title: str = "Reliability diagram"
) -> Path:
    """Reliability diagram on linear axes with equal-width bins, and how many predictions fall
    in each bin below it. `curves` maps a name to (y 0/1, predicted probability)."""
    fig, (ax, bars) = plt.subplots(
        2, 1, figsize=(5.5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    edges = np.linspace(0, 1, n_bins + 1)
    width = (edges[1] - edges[0]) / (len(curves) + 1)
    for i, (name, (y, prob)) in enumerate(curves.items()):
        mean_prob, freq, _ = calibration_bins(y, prob, n_bins, strategy="uniform")
        ece = expected_calibration_error(y, prob, n_bins)
        ax.plot(mean_prob, freq, marker="o", markersize=4, label=f"{name} (ECE {ece:.4f})")
        counts, _ = np.histogram(np.asarray(prob, dtype=np.float64), bins=edges)
        bars.bar(edges[:-1] + (i + 0.5) * width, counts, width=width, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="Observed frequency", title=title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    bars.set(xlabel="Predicted probability", ylabel="Predictions", yscale="log")
    bars.grid(alpha=0.3)
    return save_figure(fig, path)


TENSORBOARD_EVAL = "evaluate"  # tensorboard/evaluate/ of a run: what evaluate measured


def write_tensorboard(run, scores: dict[str, float], params: dict[str, str]) -> Path:
    """The run's evaluation in its TensorBoard log dir (tensorboard/evaluate, beside each
    network's training logs): `scores` as scalars, plots/*.png as images and `params` (the
    flattened config) as HParams, so the HParams dashboard sets runs' configs against their
    scores. An evaluation done again replaces the earlier one."""
    import shutil

    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    folder = Path(run.path) / "tensorboard" / TENSORBOARD_EVAL
    shutil.rmtree(folder, ignore_errors=True)
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        hp.hparams({key: _hparam(value) for key, value in params.items()}, trial_id=run.path.name)
        for tag, value in scores.items():
            tf.summary.scalar(tag, value, step=0)
        for png in sorted((Path(run.path) / "plots").glob("*.png")):
            image = tf.io.decode_png(tf.io.read_file(str(png)))
            tf.summary.image(f"plots/{png.stem}", image[None], step=0)
    writer.close()
    return folder


def _hparam(text: str):
    """A flattened config value as the number, flag or text HParams shows and filters on."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, bool | int | float) and not (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return value
    return text
