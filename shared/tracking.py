"""Experiment tracking with MLflow (an optional extra: `pip install -e ".[track]"`).

Off by default; on with `--set track.mlflow=true` or whenever $DEEPFIELD_MLFLOW_URI is set.
One MLflow run per run folder: `train` creates it (the resolved config as params, each
network's per-epoch logs as metrics) and logs the model and plots when the run finishes;
`evaluate`, a separate process, finds its id in the run folder's mlflow.json and adds the
test and validation metrics, the plots and the model card to the same MLflow run.

MLflow is imported only when tracking is on, so the project runs without it installed.
"""

import atexit
import contextvars
import functools
import json
import math
import os
import re
import time
from pathlib import Path

import keras
import yaml

from shared.config import ConfigError, TrackConfig, to_dict
from shared.io import read_json, write_json
from shared.run import RunDir

ENV_URI = "DEEPFIELD_MLFLOW_URI"
RUN_FILE = "mlflow.json"  # in the run folder: where its MLflow run lives
DEFAULT_STORE = "mlruns"
# Sections of metrics.json that are not scores: the data summary, matrices and file names.
NOT_SCORES = {"data", "confusion", "confusion_matrix", "test_input", "_history"}
BATCH = 100  # params per log_batch call (MLflow's limit)
# The MLflow run of a `tune` under way: the runs its trials create nest under it.
PARENT_RUN = contextvars.ContextVar("deepfield_mlflow_parent_run", default=None)
PARAM_CHARS = 6000  # MLflow's longest param value
# The MLflow runs `train` opened in this process and has not ended (FINISHED or FAILED): a
# train that dies on an unexpected exception ends them FAILED (`end_unfinished`), at the
# latest when the process exits, instead of leaving them RUNNING for ever.
_UNFINISHED: dict[str, "Tracker"] = {}
_AT_EXIT: list[bool] = []


def end_unfinished(status: str = "FAILED") -> int:
    """End every MLflow run a `train` of this process opened and did not end, with `status`;
    how many. Called when a trial dies (`tune`) and at exit; one line per failure to end."""
    ended = 0
    for run_id, tracker in list(_UNFINISHED.items()):
        _UNFINISHED.pop(run_id, None)
        ended += bool(tracker.end(status))
    return ended


def track_of(config) -> TrackConfig:
    """The config's `track` section (defaults for a config without one)."""
    return getattr(config, "track", None) or TrackConfig()


def enabled(track: TrackConfig) -> bool:
    """True when this command tracks: `track.mlflow`, or $DEEPFIELD_MLFLOW_URI set."""
    return track.mlflow or bool(os.environ.get(ENV_URI))


def tracking_uri(track: TrackConfig) -> str:
    """`track.uri`, else $DEEPFIELD_MLFLOW_URI, else ./mlruns; a plain folder as a file URI
    (absolute, so evaluate finds the same store from another working directory)."""
    uri = track.uri or os.environ.get(ENV_URI) or DEFAULT_STORE
    if "://" in uri or uri.startswith(("file:", "databricks")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def import_mlflow():
    """The mlflow module, or one ConfigError line saying how to install it."""
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError(
            "track.mlflow is on (or $DEEPFIELD_MLFLOW_URI is set) but MLflow is not installed: "
            'pip install -e ".[track]", or set track.mlflow=false'
        ) from exc
    return mlflow


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, lists and mappings as JSON text."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not name.startswith("tune.space"):
            out.update(flat_params(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:PARAM_CHARS]
    return out


def flat_scores(report: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number of a metrics.json report under a `/`-joined key (`test/auprc`,
    `leaderboard/detection/models/gbm/validation/auprc`); lists, flags and data summaries
    are left out."""
    out = {}
    for key, value in report.items():
        if key in NOT_SCORES:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scores(value, name + "/"))
        elif _finite_number(value):
            out[name] = float(value)
    return out


def _finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_key(name: str) -> str:
    """`name` with the characters MLflow refuses in a key (`recall@10`) replaced by `_`."""
    return re.sub(r"[^\w\-. /]", "_", name)


def best_effort(method):
    """Run a logging `method`, turning a failure into one printed line: a tracking server that
    is down must not fail a training or an evaluation that has finished."""

    @functools.wraps(method)
    def logged(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # any client or server error: reported, never raised
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(
                f"track: MLflow {method.__name__} failed ({first}); the run folder is complete",
                flush=True,
            )
            return None

    return logged


class Tracker:
    """The MLflow run of one run folder, through MlflowClient (no global active run, so one
    process can track several runs: `tune`'s trials)."""

    def __init__(self, client, run_id: str, uri: str, log_model: bool = True):
        self.client, self.run_id, self.uri, self.log_model = client, run_id, uri, log_model

    @classmethod
    def start(cls, app: str, config, run: RunDir) -> "Tracker | None":
        """At train: the run folder's MLflow run (created, or reopened when the run resumes)
        with the config as params; None when tracking is off or this is not the chief."""
        if not enabled(track_of(config)) or not run.is_chief:
            return None
        name = config.run.run_id if getattr(config, "run", None) else ""
        tracker = cls.open(run, track_of(config), app, name)
        if run.resumed:  # its MLflow run may have ended FAILED or stayed RUNNING when killed
            tracker.client.update_run(tracker.run_id, status="RUNNING")
        _UNFINISHED[tracker.run_id] = tracker
        if not _AT_EXIT:  # a process that dies mid-train (an exception, SIGTERM) ends it FAILED
            atexit.register(end_unfinished)
            _AT_EXIT.append(True)
        tracker.log_params(flat_params(to_dict(config)))
        return tracker

    @classmethod
    def attach(cls, app: str, run: RunDir, config, params: dict[str, str]) -> "Tracker | None":
        """At evaluate: the MLflow run that train recorded in the run folder, or a new one
        (with the run's `params`) when only this command tracks; None when neither does."""
        if (run.path / RUN_FILE).exists():
            return cls.open(run, track_of(config), app)
        if not enabled(track_of(config)):
            return None
        tracker = cls.open(run, track_of(config), app)
        tracker.log_params(params)
        return tracker

    @classmethod
    def open(cls, run: RunDir, track: TrackConfig, app: str, name: str = "") -> "Tracker":
        """The MLflow run named in the run folder's mlflow.json, else a new one recorded there
        (in experiment `track.experiment`, default deepfield-<app>) named `name` (default the
        run folder's name)."""
        mlflow = import_mlflow()
        stored = read_json(run.path / RUN_FILE) if (run.path / RUN_FILE).exists() else None
        uri = stored["tracking_uri"] if stored else tracking_uri(track)
        if uri.startswith("file:"):
            # MLflow 3 keeps the folder store in maintenance mode behind this switch; it is
            # what a local ./mlruns is, and it needs no database package.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow.MlflowClient(tracking_uri=uri)
        if stored:
            return cls(client, stored["run_id"], uri, track.log_model)
        experiment_name = track.experiment or f"deepfield-{app}"
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        )
        tags = {"deepfield.app": app, "deepfield.run_folder": str(run.path)}
        if PARENT_RUN.get():
            tags["mlflow.parentRunId"] = PARENT_RUN.get()
        created = client.create_run(experiment_id, run_name=name or run.path.name, tags=tags)
        run_id = created.info.run_id
        write_json(
            run.path / RUN_FILE,
            {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id},
        )
        print(f"track: MLflow run {run_id} in {uri} (experiment {experiment_name})", flush=True)
        return cls(client, run_id, uri, track.log_model)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        # A resumed or evaluated run logs the same params again; MLflow refuses a changed one.
        items = [Param(k, v) for k, v in params.items() if k not in logged]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + BATCH])

    @best_effort
    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in values.items()]
        for start in range(0, len(items), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_files(self, run: RunDir, names: tuple[str, ...]) -> None:
        """The run's plots (plots/*.png) and the named files of the run folder that exist."""
        plots = sorted((run.path / "plots").glob("*.png"))
        for path in plots:
            self.client.log_artifact(self.run_id, str(path), "plots")
        for name in names:
            if (run.path / name).exists():
                self.client.log_artifact(self.run_id, str(run.path / name))

    def epoch_logger(self, network: str) -> keras.callbacks.Callback:
        return EpochLogger(self, network)

    @best_effort
    def train_finished(self, run: RunDir) -> None:
        """End of train: the fit summaries, history, config and (track.log_model) the model."""
        summaries = {}
        for path in sorted((run.path / "checkpoints").glob("*.json")):
            summary = read_json(path)
            if isinstance(summary.get("seconds"), int | float):
                summaries[f"train/{path.stem}/seconds"] = summary["seconds"]
        meta = read_json(run.meta_path) if run.meta_path.exists() else {}
        if isinstance(meta.get("train_seconds"), int | float):
            summaries["train/seconds"] = meta["train_seconds"]
        self.log_metrics(summaries)
        self.log_files(run, ("config.yaml", "history.csv", "model_meta.json", "metrics.json"))
        if self.log_model and run.model_path.exists():
            self.client.log_artifact(self.run_id, str(run.model_path), "model")
        _UNFINISHED.pop(self.run_id, None)
        self.client.set_terminated(self.run_id, "FINISHED")

    @best_effort
    def evaluated(self, run: RunDir, report: dict) -> None:
        """End of evaluate: every score of metrics.json, the plots and the model card."""
        self.log_metrics(flat_scores(report))
        self.log_files(run, ("metrics.json", "model_card.md"))
        self.client.set_terminated(self.run_id, "FINISHED")

    @best_effort
    def tune_finished(self, folder: Path) -> None:
        """End of `tune`: its trials table, best config and summary."""
        for name in ("trials.csv", "best.yaml", "tune.json"):
            if (folder / name).exists():
                self.client.log_artifact(self.run_id, str(folder / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def failed(self) -> None:
        _UNFINISHED.pop(self.run_id, None)
        self.end("FAILED")

    @best_effort
    def end(self, status: str) -> bool:
        self.client.set_terminated(self.run_id, status)
        return True


class EpochLogger(keras.callbacks.Callback):
    """Each epoch's logs (loss, metrics, throughput) as `<network>/<name>` MLflow metrics,
    stepped by epoch."""

    def __init__(self, tracker: Tracker, network: str):
        super().__init__()
        self.tracker, self.network = tracker, network

    def on_epoch_end(self, epoch, logs=None):
        values = {
            f"{self.network}/{name}": float(value)
            for name, value in (logs or {}).items()
            if _finite_number(value)
        }
        self.tracker.log_metrics(values, step=epoch + 1)


def evaluated(app: str, config, options=None) -> dict | None:
    """After `evaluate`: the run's metrics, plots and config into its TensorBoard log dir and,
    when the run or this command tracks, its MLflow run. Returns the report it read."""
    from shared.evaluation import write_tensorboard
    from shared.steps import locate

    run = locate(app, config, options)
    if not run.metrics_path.exists():
        return None
    report = read_json(run.metrics_path)
    run_config = run.path / "config.yaml"
    if run_config.exists():
        params = flat_params(yaml.safe_load(run_config.read_text()) or {})
    else:
        params = flat_params(to_dict(config))
    write_tensorboard(run, flat_scores(report), params)
    tracker = Tracker.attach(app, run, config, params)
    if tracker is not None:
        tracker.evaluated(run, report)
    return report
