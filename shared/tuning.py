"""`deepfield <app> tune --trials N [--max-minutes M]`: a KerasTuner search over config keys.

The search space is the config's `tune.space` (config key -> range). A KerasTuner oracle
(Bayesian optimisation, Hyperband or random search, `tune.algorithm`) proposes the values;
each trial is a normal run of the app's own `train` and `evaluate` with those values set, in
runs/<app>/tune-<time>/trial-<n>/, and its objective is read from that run's metrics.json:
the leaderboard's metric on validation (never test), in the leaderboard's own direction. The
tune folder holds trials.csv (one row per trial, written after each) and best.yaml, the full
config with the best values, which `train --config best.yaml` takes.

Hyperband here trains each promoted trial again from scratch for its larger epoch budget
(`tuner/epochs` sets `train.epochs`): an app's run cannot resume another run's weights.
"""

import dataclasses
import importlib
import json
import math
import time
import typing
from pathlib import Path

import keras
import pandas as pd
import yaml

from shared import tracking
from shared.apps import APPS
from shared.config import ConfigError, from_dict, to_dict
from shared.io import DataError, read_json, write_json, write_table, write_text
from shared.run import RunDir
from shared.steps import StepOptions

OBJECTIVE = "objective"  # what the oracle minimises: the validation score, negated when higher
# is better, so the direction need not be known before the first trial
TUNER_ID = "deepfield"
EPOCHS = "tuner/epochs"  # hyperband's epoch budget of a trial


@dataclasses.dataclass
class Dimension:
    """One key of the search space: its config path, type and range."""

    key: str  # dotted config key, `train.learning_rate`
    kind: str  # float, int or choice
    spec: dict  # the range as written: {min, max, log, step} or {values}

    def add_to(self, hp) -> None:
        """Declare this dimension on a KerasTuner `HyperParameters`."""
        if self.kind == "choice":
            hp.Choice(self.key, [_encode(v) for v in self.spec["values"]])
            return
        sampling = "log" if self.spec.get("log") else "linear"
        low, high = float(self.spec["min"]), float(self.spec["max"])
        if self.kind == "int":
            step = int(self.spec.get("step", 1))
            hp.Int(self.key, int(low), int(high), step=step, sampling=sampling)
        else:
            step = self.spec.get("step")
            hp.Float(
                self.key, low, high, step=None if step is None else float(step), sampling=sampling
            )

    def value(self, drawn):
        """The config value of a drawn hyperparameter."""
        if self.kind == "choice":
            return _decode(drawn)
        return int(drawn) if self.kind == "int" else float(drawn)


def search_space(config) -> list[Dimension]:
    """`tune.space` checked against the config: every key names a field, every range suits its
    type (numbers for number keys), and both ends of a range make a valid config."""
    if not config.tune.space:
        raise ConfigError("tune.space is empty: name the config keys to search (README, tune)")
    dimensions = []
    for key, spec in config.tune.space.items():
        hint = _field_type(type(config), key)
        if "values" in spec:
            dimension = Dimension(key, "choice", spec)
            ends = spec["values"]
        else:
            numeric = [t for t in (typing.get_args(hint) or (hint,)) if t in (int, float)]
            if not numeric:
                raise ConfigError(
                    f"tune.space.{key}: {key} is not a number; give it {{values: [...]}}"
                )
            dimension = Dimension(key, "int" if numeric == [int] else "float", spec)
            ends = [dimension.value(spec["min"]), dimension.value(spec["max"])]
        for end in ends:
            with_values(config, {key: end})  # a bad end is a ConfigError naming the key
        dimensions.append(dimension)
    return dimensions


def with_values(config, values: dict, run_id: str | None = None):
    """A copy of `config` with `values` (dotted key -> value) set, checked like a loaded one."""
    data = to_dict(config)
    for key, value in values.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    if run_id is not None:
        data["run"]["run_id"] = run_id
    return from_dict(type(config), data)


def objective(report: dict, tune) -> tuple[float, str, bool]:
    """(score, metric, higher_is_better) of a run's metrics.json for the tuner: the
    validation score on `tune.leaderboard` of its best network (`tune.objective_model`
    best_network) or of the model it ships (selected). NaN when no network scored."""
    boards = report.get("leaderboard") or {}
    if not boards:
        raise DataError("the trial's metrics.json has no leaderboard to read the objective from")
    name = tune.leaderboard or next(iter(boards))
    if name not in boards:
        raise ConfigError(
            f"tune.leaderboard: {name!r} is not one of this run's leaderboards "
            f"({', '.join(boards)})"
        )
    board = boards[name]
    metric, higher = board["metric"], bool(board["higher_is_better"])
    models = board["models"]
    if tune.objective_model == "selected":
        chosen = [models.get(board.get("selected") or "", {})]
    else:
        chosen = [m for m in models.values() if m.get("kind") == "network"]
    scores = [
        m["validation"][metric]
        for m in chosen
        if m.get("status") == "ok" and _finite(m.get("validation", {}).get(metric))
    ]
    if not scores:
        return float("nan"), metric, higher
    return float(max(scores) if higher else min(scores)), metric, higher


def tune(app_name: str, config, options: StepOptions, pipeline=None) -> Path:
    """Run up to `--trials` trials (none started after `--max-minutes`) with `pipeline`'s
    `train` and `evaluate` (default: the app's pipeline module); returns the tune folder."""
    kt = _keras_tuner()
    trials = options.trials if options.trials is not None else 10
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    dimensions = search_space(config)
    pipeline = pipeline or importlib.import_module(APPS[app_name].pipeline)
    folder = _search_folder(app_name, config, options)
    oracle = _oracle(kt, config, dimensions, trials, folder)
    search = Search(app_name, config, dimensions, folder, trials, options.max_minutes)
    if (folder / "oracle" / "oracle.json").exists():
        oracle.reload()  # its finished trials; the one a kill cut short is retried
        search.resume(oracle)
    write_json(folder / SEARCH_FILE, {"app": app_name, "config": to_dict(config)})
    search.tracker = _tune_tracker(app_name, config, folder, trials)
    print(
        f"tune: {config.tune.algorithm} search over {', '.join(d.key for d in dimensions)}; "
        f"{trials} trial(s){_budget_text(options.max_minutes)}; results in {folder}",
        flush=True,
    )
    token = tracking.PARENT_RUN.set(search.tracker.run_id if search.tracker else None)
    try:
        for _ in range(trials - len(search.rows)):
            if search.out_of_time():
                print(f"tune: --max-minutes {options.max_minutes:g} reached; no more trials")
                break
            trial = oracle.create_trial(TUNER_ID)
            if trial.status != "RUNNING":
                print(f"tune: the {config.tune.algorithm} schedule is complete", flush=True)
                break
            search.run_trial(pipeline, oracle, trial)
    except BaseException:
        if search.tracker is not None:  # resumed later, it is RUNNING again
            search.tracker.end("FAILED")
        raise
    finally:
        tracking.PARENT_RUN.reset(token)
    return search.finish()


SEARCH_FILE = "search.json"  # in a tune folder: the app and the config it searches


def _search_folder(app: str, config, options: StepOptions) -> Path:
    """The tune folder: `--run FOLDER` (an unfinished search to resume, or a new folder),
    else the newest unfinished search of this app with this very config (no tune.json yet:
    killed, or stopped by an error), else a new runs/<app>/tune-<time>/. A config changed by
    one key or one `--set` starts a new search, as `train` resumes only an identical run."""
    if options.run:
        folder = Path(options.run)
        if (folder / "tune.json").exists():
            raise ConfigError(f"{folder}: this search has finished (tune.json); nothing to resume")
        same = _searches_config(folder, app, config)
        if (folder / SEARCH_FILE).exists() and not same:
            raise ConfigError(
                f"{folder}: a search of another config; resume it with the config in "
                f"{folder / SEARCH_FILE}, or start a new search without --run"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    root = Path(config.run.root) / app
    for folder in sorted(root.glob("tune-*"), reverse=True):
        if not (folder / "tune.json").exists() and _searches_config(folder, app, config):
            print(f"tune: resuming the unfinished search in {folder}", flush=True)
            return folder
    stamp, n = f"tune-{time.strftime('%Y%m%d-%H%M%S')}", 1
    folder = root / stamp
    while folder.exists():  # two searches started in one second: never share a folder
        n += 1
        folder = root / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def _searches_config(folder: Path, app: str, config) -> bool:
    try:
        stored = read_json(folder / SEARCH_FILE)
    except (OSError, ValueError, DataError):
        return False
    wanted = json.loads(json.dumps({"app": app, "config": to_dict(config)}))
    return stored == wanted


def _tune_tracker(app: str, config, folder: Path, trials: int):
    """With tracking on, the search's own MLflow run (its trials' runs nest under it): the
    space as params, each trial's objective as a metric, the trials table at the end."""
    if not tracking.enabled(tracking.track_of(config)):
        return None
    tracker = tracking.Tracker.open(RunDir(folder), config.track, app, folder.name)
    params = {"tune.algorithm": config.tune.algorithm, "tune.trials": str(trials)}
    params |= {f"tune.space.{k}": json.dumps(v) for k, v in config.tune.space.items()}
    tracker.log_params(params)
    return tracker


class Search:
    """The trials of one `tune`: runs them, keeps trials.csv and best.yaml up to date."""

    def __init__(self, app, config, dimensions, folder: Path, trials: int, max_minutes):
        self.app, self.config, self.dimensions, self.folder = app, config, dimensions, folder
        self.trials, self.max_minutes = trials, max_minutes
        self.rows: list[dict] = []
        self.best: dict | None = None
        self.resumed = 0  # trials read back from a killed search's trials.csv
        self.tracker = None  # the search's MLflow run, when tracking is on
        self.start = time.perf_counter()

    def resume(self, oracle) -> None:
        """Read back the finished trials of a killed search (trials.csv; the oracle reloaded):
        they are not run again. A trial recorded in trials.csv whose end the oracle did not
        save (killed in between) is ended in the oracle from its row."""
        path = self.folder / "trials.csv"
        if not path.exists():
            return
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        rows = [
            {
                k: v if k in ("trial_id", "run", "status", "reason") else _cell(v)
                for k, v in r.items()
            }
            for r in table.to_dict("records")
        ]
        waiting = set(getattr(oracle, "_retry_queue", []))
        for row in rows:
            trial_id = str(row.get("trial_id", ""))
            if trial_id in waiting:
                self._end_recorded(oracle, trial_id, row)
        self.rows, self.resumed = rows, len(rows)
        for row in rows:
            if row.get("status") == "ok" and _finite(row.get("objective")):
                higher = self._higher(row)
                if self.best is None or _better(row["objective"], self.best["objective"], higher):
                    self.best = row
        best = (
            f"; best {self.best['objective']:.4f} (trial {self.best['trial']})" if self.best else ""
        )
        print(f"tune: {len(rows)} trial(s) already done, not run again{best}", flush=True)

    def _end_recorded(self, oracle, trial_id: str, row: dict) -> None:
        oracle._retry_queue.remove(trial_id)
        trial = oracle.trials[trial_id]
        oracle.ongoing_trials[TUNER_ID] = trial
        if row.get("status") == "ok" and _finite(row.get("objective")):
            score = row["objective"]
            oracle.update_trial(trial_id, {OBJECTIVE: -score if self._higher(row) else score})
            trial.status = "COMPLETED"
        else:
            trial.status = "FAILED"
        oracle.end_trial(trial)

    def _higher(self, row: dict) -> bool:
        """Whether the search's metric is better higher: from a finished trial's metrics.json."""
        metrics = Path(str(row.get("run", ""))) / "metrics.json"
        try:
            return objective(read_json(metrics), self.config.tune)[2]
        except (OSError, ValueError, DataError, ConfigError, KeyError):
            return True

    def out_of_time(self) -> bool:
        """True once `max_minutes` have passed; the first trial always runs."""
        elapsed = time.perf_counter() - self.start
        return bool(self.max_minutes and self.rows) and elapsed >= 60 * self.max_minutes

    def run_trial(self, pipeline, oracle, trial) -> None:
        """Train and evaluate one trial's run, report its objective to the oracle, record it."""
        drawn = trial.hyperparameters.values
        values = {d.key: d.value(drawn[d.key]) for d in self.dimensions if d.key in drawn}
        if EPOCHS in drawn:  # hyperband's budget for this trial
            values["train.epochs"] = int(drawn[EPOCHS])
        index = len(self.rows) + 1
        run_id = f"{self.folder.name}/trial-{index:0{len(str(self.trials))}d}"
        print(f"tune: trial {index}/{self.trials} ({_shown(values)})", flush=True)
        started = time.perf_counter()
        row = {"trial": index, **values, "run": str(Path(self.config.run.root) / self.app / run_id)}
        row["trial_id"] = trial.trial_id  # the oracle's, so a resumed search can match them
        score, higher = self._train_and_score(pipeline, values, run_id, row)
        if _finite(score):
            oracle.update_trial(trial.trial_id, {OBJECTIVE: -score if higher else score})
            trial.status = "COMPLETED"
        else:
            trial.status, trial.message = "FAILED", row.get("reason", "no network scored")
        row["seconds"] = round(time.perf_counter() - started, 1)
        self.rows.append(row)
        self._record(row, higher)
        keras.backend.clear_session()  # the next trial builds its models afresh
        try:
            oracle.end_trial(trial)
        except RuntimeError as exc:  # KerasTuner stops after several failures in a row
            raise DataError(f"tune stopped: {str(exc).splitlines()[0]}") from exc

    def _train_and_score(self, pipeline, values: dict, run_id: str, row: dict):
        """(score, higher_is_better) of the trial's run: its train and evaluate (TensorBoard and
        tracking too, as the CLI's evaluate), with `row` given the status and objective. Values
        the config refuses together, or a network that diverges, fail the trial, not the
        search."""
        from shared.training import Diverged, TrainingFailed

        try:
            trial_config = with_values(self.config, values, run_id)
            run = pipeline.train(trial_config, StepOptions())
            pipeline.evaluate(trial_config, StepOptions(run=str(run.path)))
            tracking.evaluated(self.app, trial_config, StepOptions(run=str(run.path)))
        except (ConfigError, Diverged, TrainingFailed) as exc:
            row.update(status="failed", reason=str(exc).splitlines()[0])
            return float("nan"), False
        except BaseException:  # a bug or Ctrl-C stops the search; its trial's run ends FAILED
            tracking.end_unfinished()
            raise
        score, metric, higher = objective(read_json(run.metrics_path), self.config.tune)
        row.update(status="ok" if _finite(score) else "failed", metric=metric, objective=score)
        return score, higher

    def _record(self, row: dict, higher: bool) -> None:
        if row["status"] == "ok" and (
            self.best is None or _better(row["objective"], self.best["objective"], higher)
        ):
            self.best = row
            self._write_best()
        write_table(self.folder / "trials.csv", pd.DataFrame(self.rows))
        if self.tracker is not None and row["status"] == "ok":
            self.tracker.log_metrics(
                {f"validation_{row['metric']}": row["objective"]}, row["trial"]
            )
        done, seconds = len(self.rows), time.perf_counter() - self.start
        eta = seconds / max(done - self.resumed, 1) * (self.trials - done)
        if self.max_minutes:
            eta = min(eta, max(0.0, 60 * self.max_minutes - seconds))
        result = (
            f"validation {row['metric']} {row['objective']:.4f}"
            if row["status"] == "ok"
            else f"failed ({row.get('reason', 'no network scored')})"
        )
        best = (
            f"best {self.best['objective']:.4f} (trial {self.best['trial']})"
            if self.best
            else "none"
        )
        print(
            f"tune: trial {done}/{self.trials} {result} in {row['seconds']:.0f}s; {best}; "
            f"ETA {_duration(eta)}",
            flush=True,
        )

    def _write_best(self) -> None:
        # Hyperband's per-trial epoch budget is not part of the best config: it trains with
        # the config's own train.epochs, the budget the search ran up to.
        values = self._best_values()
        best = to_dict(with_values(self.config, values, run_id=""))
        header = (
            f"# The best config of {self.folder.name}: trial {self.best['trial']}, validation "
            f"{self.best['metric']} {self.best['objective']:.4f} (all trials: trials.csv).\n"
            f"# Train it: deepfield {self.app} train --config {self.folder / 'best.yaml'}\n"
        )
        write_text(self.folder / "best.yaml", header + yaml.safe_dump(best, sort_keys=False))

    def finish(self) -> Path:
        summary = {
            "app": self.app,
            "algorithm": self.config.tune.algorithm,
            "space": self.config.tune.space,
            "trials": len(self.rows),
            "seconds": round(time.perf_counter() - self.start, 1),
            "best": self.best,
        }
        write_json(self.folder / "tune.json", summary)
        if self.tracker is not None:
            self.tracker.tune_finished(self.folder)
        if self.best is None:
            raise DataError(f"tune: no trial finished with a score; see {self.folder}")
        print(
            f"tune: best trial {self.best['trial']}: validation {self.best['metric']} "
            f"{self.best['objective']:.4f} ({_shown(self._best_values())}); its run "
            f"{self.best['run']}; config {self.folder / 'best.yaml'}",
            flush=True,
        )
        return self.folder

    def _best_values(self) -> dict:
        return {d.key: self.best[d.key] for d in self.dimensions if d.key in self.best}


def _oracle(kt, config, dimensions: list[Dimension], trials: int, folder: Path):
    hp = kt.HyperParameters()
    for dimension in dimensions:
        dimension.add_to(hp)
    goal = kt.Objective(OBJECTIVE, direction="min")
    common = {"objective": goal, "hyperparameters": hp, "seed": config.train.seed}
    # Failed trials (diverged networks) are part of a search; only a run of them stops it.
    common["max_consecutive_failed_trials"] = max(3, trials // 2)
    algorithm = config.tune.algorithm
    if algorithm == "hyperband":
        oracle = kt.oracles.HyperbandOracle(
            max_epochs=config.train.epochs, factor=config.tune.hyperband_factor, **common
        )
    elif algorithm == "bayesian":
        oracle = kt.oracles.BayesianOptimizationOracle(max_trials=trials, **common)
    else:
        oracle = kt.oracles.RandomSearchOracle(max_trials=trials, **common)
    oracle.verbose = 0  # the trial lines below say what KerasTuner's display would
    oracle._set_project_dir(str(folder), "oracle")  # what a Tuner does; the oracle's own files
    return oracle


def _keras_tuner():
    try:
        import keras_tuner
    except ImportError as exc:
        raise ConfigError(
            'tune needs KerasTuner, which is not installed: pip install -e ".[tune]"'
        ) from exc
    return keras_tuner


def _field_type(cls, key: str):
    """The type of dotted config `key` in dataclass `cls`; one ConfigError for a bad key."""
    hint = cls
    for part in key.split("."):
        if not dataclasses.is_dataclass(hint):
            raise ConfigError(f"tune.space: {key} is not a config key ({part} has no keys)")
        hints = typing.get_type_hints(hint)
        if part not in hints:
            raise ConfigError(
                f"tune.space: {key} is not a config key; keys here: {', '.join(sorted(hints))}"
            )
        hint = hints[part]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"tune.space: {key} is a section; name one of its keys")
    return hint


def _encode(value):
    """A choice value KerasTuner can hold (numbers, text, flags); lists and null as JSON."""
    if value is None or isinstance(value, list | dict):
        return json.dumps(value)
    return value


def _decode(value):
    if isinstance(value, str) and value[:1] in "[{" or value == "null":
        return json.loads(value)
    return value


def _cell(text: str):
    """A trials.csv cell as the search wrote it: numbers, lists (JSON) and flags decoded."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        return text


def _better(value: float, reference: float, higher_is_better: bool) -> bool:
    return value > reference if higher_is_better else value < reference


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(values: dict) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def _budget_text(max_minutes) -> str:
    return f", at most {max_minutes:g} minutes" if max_minutes else ""


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
