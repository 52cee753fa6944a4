"""The leaderboard of a run: every model it trained beside its baselines, on one metric.

Each app's `evaluate` writes one leaderboard per task into `metrics.json` under
`leaderboard` (text: one; recommendations: rating and retrieval). `make quality` and the model
cards read it, so every app reports the same things the same way:

- per model: its kind (network, baseline, or blend: a combination of a network and baselines
  with weights fitted on validation), status (ok, or failed with the reason), the
  metrics on test and validation, training seconds, and for a network the training seconds
  until it first matched the best baseline on validation (`time_to_baseline_s`, None: never);
- which model the run selected and which baseline was best on validation.
"""

import math
from pathlib import Path

import pandas as pd

from shared.model_card import metrics_table

NETWORK, BASELINE, BLEND = "network", "baseline", "blend"
KINDS = (NETWORK, BASELINE, BLEND)


def model_entry(
    kind: str,
    test: dict | None = None,
    validation: dict | None = None,
    train_seconds: float | None = None,
    history: str | Path | pd.DataFrame | None = None,
    status: str = "ok",
    reason: str | None = None,
) -> dict:
    """One model's row. `history` (a network's per-epoch log) gives its time to baseline."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
    if status not in ("ok", "failed"):
        raise ValueError(f"status must be 'ok' or 'failed'. Received: status={status!r}")
    entry = {"kind": kind, "status": status}
    if reason:
        entry["reason"] = reason
    if status == "ok":
        entry["test"] = dict(test or {})
        entry["validation"] = dict(validation or {})
    entry["train_seconds"] = None if train_seconds is None else round(float(train_seconds), 2)
    if history is not None:
        entry["_history"] = history
    return entry


def baseline_entries(baselines: dict, metrics: tuple[str, ...] | None = None) -> dict:
    """The leaderboard rows of an app's fitted baselines, `{name: {"test": {...}, "validation":
    {...}, "fit_seconds": s}}` as evaluate measures them, keeping only `metrics` when given."""

    def keep(scores: dict) -> dict:
        return {m: scores[m] for m in metrics} if metrics else scores

    return {
        name: model_entry(
            BASELINE, keep(entry["test"]), keep(entry["validation"]), entry["fit_seconds"]
        )
        for name, entry in baselines.items()
    }


def build(
    metric: str,
    higher_is_better: bool,
    models: dict[str, dict],
    selected: str | None,
    history_column: str | None = None,
) -> dict:
    """The leaderboard block: `models` (from `model_entry`), ranked by `metric` on validation.

    `history_column` names the column of a network's history that holds `metric` on
    validation per epoch (`val_accuracy`, `val_rmse`, ...); with it, each network's
    `time_to_baseline_s` is the training time (validation excluded) summed up to the first
    epoch that matched the best baseline's validation score.
    """
    best = _best_baseline(models, metric, higher_is_better)
    target = models[best]["validation"][metric] if best else None
    block = {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "selected": selected,
        "best_baseline": best,
        "history_column": history_column,
        "models": {},
    }
    for name, entry in models.items():
        entry = dict(entry)
        history = entry.pop("_history", None)
        if entry["kind"] != BASELINE and entry["status"] == "ok" and best is not None:
            entry["beats_baseline_on_test"] = _better(
                entry["test"].get(metric), models[best]["test"].get(metric), higher_is_better
            )
            if entry["kind"] == NETWORK:  # a blend has no training curve of its own
                entry["time_to_baseline_s"] = (
                    time_to_target(history, history_column, target, higher_is_better)
                    if history is not None and history_column
                    else None
                )
        block["models"][name] = entry
    return block


def time_to_target(
    history: str | Path | pd.DataFrame, column: str, target: float, higher_is_better: bool
) -> float | None:
    """Training seconds (each epoch's `train_seconds`, summed) until `column` first reaches
    `target`; None when it never does or the history lacks the columns."""
    frame = history if isinstance(history, pd.DataFrame) else _read(history)
    if frame is None or column not in frame or "train_seconds" not in frame:
        return None
    elapsed = frame["train_seconds"].astype(float).cumsum()
    values = frame[column].astype(float)
    reached = values >= target if higher_is_better else values <= target
    hits = reached[values.notna()]
    hits = hits[hits]
    return None if hits.empty else round(float(elapsed[hits.index[0]]), 2)


def to_markdown(block: dict) -> str:
    """The leaderboard as a Markdown table, failed models and the verdict below it."""
    metric, models = block["metric"], block["models"]
    names = sorted(
        {k for e in models.values() for k in e.get("test", {})}, key=_metric_order(metric)
    )
    rows, notes = {}, []
    for name, entry in models.items():
        label = f"{name} ({entry['kind']}{', selected' if name == block['selected'] else ''})"
        if entry["status"] == "failed":
            notes.append(f"- `{name}` **failed**: {entry.get('reason', 'unknown reason')}")
            continue
        row = {f"test {m}": entry["test"].get(m) for m in names}
        row[f"val {metric}"] = entry["validation"].get(metric)
        row["train s"] = _seconds(entry.get("train_seconds"))
        if entry["kind"] == NETWORK and block["best_baseline"]:
            reached = entry.get("time_to_baseline_s")
            row["time to baseline s"] = "never" if reached is None else _seconds(reached)
        rows[label] = row
    columns = [f"test {m}" for m in names] + [f"val {metric}", "train s"]
    if any("time to baseline s" in r for r in rows.values()):
        columns.append("time to baseline s")
    text = metrics_table(rows, columns)
    for name, entry in models.items():
        if entry.get("beats_baseline_on_test") is False:
            notes.append(
                f"- `{name}` does **not** beat the best baseline (`{block['best_baseline']}`) "
                f"on test {metric}."
            )
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _seconds(value) -> str | None:
    return None if value is None else f"{value:.1f}"


def _metric_order(primary: str):
    return lambda name: (name != primary, name)


def _best_baseline(models: dict, metric: str, higher_is_better: bool) -> str | None:
    scored = {
        name: e["validation"].get(metric)
        for name, e in models.items()
        if e["kind"] == BASELINE and e["status"] == "ok"
    }
    scored = {n: v for n, v in scored.items() if v is not None and math.isfinite(v)}
    if not scored:
        return None
    pick = max if higher_is_better else min
    return pick(scored, key=scored.get)


def _better(value, reference, higher_is_better: bool) -> bool | None:
    if value is None or reference is None or not math.isfinite(value):
        return None
    return value > reference if higher_is_better else value < reference


def _read(path) -> pd.DataFrame | None:
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path)
