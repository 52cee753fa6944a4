"""The tune step: the search space checked against the config, the objective read from a run's
leaderboard, and the trial loop (with a stand-in pipeline: the real app is in
tests/apps/vision/test_tune.py)."""

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from apps.vision.config import Config
from shared import tuning
from shared.config import ConfigError, TuneConfig, load_config, to_dict
from shared.io import write_json
from shared.run import RunDir
from shared.steps import StepOptions
from shared.training import TrainingFailed

SMOKE = Path("apps/vision/configs/smoke.yaml")


def config_with(space: dict, *overrides: str) -> Config:
    config = load_config(Config, SMOKE, list(overrides))
    config.tune.space = space
    return config


def board(networks: dict, baselines: dict, higher=True, selected="cnn") -> dict:
    models = {
        n: {"kind": "network", "status": "ok", "validation": {"m": v}} for n, v in networks.items()
    }
    models |= {
        n: {"kind": "baseline", "status": "ok", "validation": {"m": v}}
        for n, v in baselines.items()
    }
    return {"metric": "m", "higher_is_better": higher, "selected": selected, "models": models}


def test_space_keys_types_and_ends_are_checked_against_the_config():
    lr = {"min": "1e-4", "max": 0.01, "log": True}
    dims = tuning.search_space(
        config_with(
            {
                "train.learning_rate": lr,
                "train.epochs": {"min": 1, "max": 3},
                "model.filters": {"values": [[8], [8, 16]]},
            }
        )
    )
    assert [(d.key, d.kind) for d in dims] == [
        ("train.learning_rate", "float"),
        ("train.epochs", "int"),
        ("model.filters", "choice"),
    ]
    bad = {
        "model.nope": ({"min": 0, "max": 1}, "not a config key"),
        "model": ({"min": 0, "max": 1}, "is a section"),
        "model.architecture": ({"min": 0, "max": 1}, "not a number"),
        "model.dropout": ({"min": 0.0, "max": 0.95}, "model.dropout: must be <= 0.9"),
    }
    for key, (spec, message) in bad.items():
        with pytest.raises(ConfigError, match=message):
            tuning.search_space(config_with({key: spec}))
    with pytest.raises(ConfigError, match="tune.space is empty"):
        tuning.search_space(config_with({}))


def test_a_range_must_be_min_below_max_or_a_list_of_values():
    for spec, message in (
        ({"min": 2, "max": 1}, "min < max"),
        ({"min": 0, "max": 1, "log": True}, "log range needs min > 0"),
        ({"values": []}, "a choice is"),
        ({"low": 1}, "a range is"),
    ):
        with pytest.raises(ConfigError, match=message):
            TuneConfig(space={"train.learning_rate": spec}).validate()


def test_drawn_values_become_a_checked_config_with_lists_decoded():
    config = config_with({"model.filters": {"values": [[8], [8, 16]]}})
    (dimension,) = tuning.search_space(config)
    tuned = tuning.with_values(config, {"model.filters": dimension.value("[8, 16]")}, "t/1")
    assert tuned.model.filters == [8, 16] and tuned.run.run_id == "t/1"
    assert config.model.filters == [8]  # the base config is left as it was


def test_the_objective_is_the_best_network_on_validation_in_the_boards_direction():
    tune = TuneConfig()
    report = {"leaderboard": {"rating": board({"mf": 0.9, "ncf": 0.8}, {"bias": 0.7}, False)}}
    assert tuning.objective(report, tune) == (0.8, "m", False)  # lower RMSE; baseline left out
    report = {"leaderboard": {"a": board({"cnn": 0.6}, {}), "b": board({"cnn": 0.9}, {})}}
    assert tuning.objective(report, TuneConfig(leaderboard="b"))[0] == 0.9
    shipped = {"leaderboard": {"a": board({"cnn": 0.6}, {"gbm": 0.7}, selected="gbm")}}
    assert tuning.objective(shipped, TuneConfig(objective_model="selected"))[0] == 0.7
    failed = board({"cnn": 0.6}, {})
    failed["models"]["cnn"]["status"] = "failed"
    assert math.isnan(tuning.objective({"leaderboard": {"a": failed}}, tune)[0])
    with pytest.raises(ConfigError, match="'c' is not one of this run's leaderboards"):
        tuning.objective(report, TuneConfig(leaderboard="c"))


@pytest.fixture
def no_models(monkeypatch):
    """The stand-in app builds no model: skip the Keras session reset after each trial (a full
    garbage collection, most of a stand-in trial's time)."""
    monkeypatch.setattr("keras.backend.clear_session", lambda: None)


class PeakedApp:
    """An app whose validation accuracy peaks at a learning rate of 3e-3, whose network
    diverges above 6e-3, and whose baseline scores higher than any network."""

    def train(self, config, options):
        if config.train.learning_rate > 6e-3:
            raise TrainingFailed("every network failed (cnn)")
        run = RunDir.create("vision", to_dict(config), config.run.root, config.run.run_id)
        run.finish()
        return run

    def evaluate(self, config, options):
        run = RunDir.locate("vision", options.run)
        accuracy = 1 - abs(math.log10(config.train.learning_rate / 3e-3))
        write_json(run.metrics_path, {"leaderboard": {"c": board({"cnn": accuracy}, {"px": 2})}})


def test_trials_are_runs_and_the_best_config_trains_again(tmp_path, capsys, no_models):
    pytest.importorskip("keras_tuner")
    space = {"train.learning_rate": {"min": 1e-3, "max": 1e-2, "log": True}}
    config = config_with(space, f"run.root={tmp_path}", "tune.algorithm=random")
    folder = tuning.tune("vision", config, StepOptions(trials=6), pipeline=PeakedApp())

    trials = pd.read_csv(folder / "trials.csv")
    assert trials["trial"].tolist() == [1, 2, 3, 4, 5, 6]
    diverged = trials["train.learning_rate"] > 6e-3
    assert diverged.any() and not diverged.all()  # a failed trial does not stop the search
    assert (trials["status"][diverged] == "failed").all() and (
        trials["status"][~diverged] == "ok"
    ).all()
    assert all((Path(p) / "metrics.json").exists() for p in trials["run"][~diverged])
    best = trials.loc[trials["objective"].idxmax()]
    assert best["objective"] < 2  # the networks' score, never the baseline's
    tuned = load_config(Config, folder / "best.yaml")
    assert tuned.train.learning_rate == pytest.approx(best["train.learning_rate"])
    assert tuned.run.run_id == "" and tuned.model == config.model
    lines = capsys.readouterr().out
    assert "tune: trial 6/6" in lines and "ETA" in lines


def test_no_trial_starts_after_the_time_budget(tmp_path, no_models):
    pytest.importorskip("keras_tuner")
    space = {"train.learning_rate": {"min": 1e-3, "max": 5e-3}}
    config = config_with(space, f"run.root={tmp_path}")
    folder = tuning.tune(
        "vision", config, StepOptions(trials=5, max_minutes=1e-6), pipeline=PeakedApp()
    )
    assert len(pd.read_csv(folder / "trials.csv")) == 1


def test_tune_without_keras_tuner_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    config = config_with({"train.learning_rate": {"min": 1e-3, "max": 5e-3}})
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tune\]"'):
        tuning.tune("vision", config, StepOptions(trials=2), pipeline=PeakedApp())


def test_hyperband_trains_promoted_trials_longer_and_the_best_config_keeps_its_epochs(
    tmp_path, no_models
):
    pytest.importorskip("keras_tuner")
    space = {"train.learning_rate": {"min": 1e-3, "max": 5e-3, "log": True}}
    config = config_with(
        space, f"run.root={tmp_path}", "tune.algorithm=hyperband", "train.epochs=3"
    )
    folder = tuning.tune("vision", config, StepOptions(trials=5), pipeline=PeakedApp())
    epochs = pd.read_csv(folder / "trials.csv")["train.epochs"]
    assert set(epochs) == {1, 3} and epochs.iloc[0] == 1  # a first round of short trials
    assert load_config(Config, folder / "best.yaml").train.epochs == 3


def test_a_tracked_search_is_an_mlflow_run_with_its_trials_nested_under_it(tmp_path, no_models):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("keras_tuner")
    space = {"train.learning_rate": {"min": 1e-3, "max": 5e-3}}
    store = tmp_path / "mlruns"
    config = config_with(space, f"run.root={tmp_path}", "track.mlflow=true", f"track.uri={store}")
    folder = tuning.tune("vision", config, StepOptions(trials=2), pipeline=PeakedApp())

    client = mlflow.MlflowClient(store.as_uri())
    parent = json.loads((folder / "mlflow.json").read_text())["run_id"]
    children = client.search_runs(
        [client.get_experiment_by_name("deepfield-vision").experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
    )
    scored = "leaderboard/c/models/cnn/validation/m"  # each trial's evaluation, in its own run
    assert len(children) == 2 and all(scored in c.data.metrics for c in children)
    assert [m.step for m in client.get_metric_history(parent, "validation_m")] == [1, 2]
    assert {"trials.csv", "best.yaml"} <= {a.path for a in client.list_artifacts(parent)}


class KilledApp(PeakedApp):
    """PeakedApp whose process is stopped (Ctrl-C, a kill) in its train number `kill_at`;
    `trained` lists the learning rates it trained."""

    def __init__(self, kill_at: int = 0):
        self.kill_at, self.trained = kill_at, []

    def train(self, config, options):
        self.trained.append(config.train.learning_rate)
        if len(self.trained) == self.kill_at:
            raise KeyboardInterrupt
        return super().train(config, options)


def test_a_killed_search_resumes_and_runs_no_finished_trial_again(tmp_path, capsys, no_models):
    pytest.importorskip("keras_tuner")
    space = {"train.learning_rate": {"min": 1e-3, "max": 5e-3, "log": True}}
    config = config_with(space, f"run.root={tmp_path}", "tune.algorithm=random")
    killed = KilledApp(kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        tuning.tune("vision", config, StepOptions(trials=5), pipeline=killed)
    (folder,) = (tmp_path / "vision").glob("tune-*")
    assert len(pd.read_csv(folder / "trials.csv")) == 2 and not (folder / "tune.json").exists()

    again = KilledApp()
    assert tuning.tune("vision", config, StepOptions(trials=5), pipeline=again) == folder
    trials = pd.read_csv(folder / "trials.csv")
    assert trials["trial"].tolist() == [1, 2, 3, 4, 5]
    assert again.trained[0] == killed.trained[2]  # the trial the kill cut short, retried
    assert len(again.trained) == 3  # trials 1 and 2 were read back, not trained again
    assert trials["train.learning_rate"].tolist()[:3] == killed.trained
    assert "2 trial(s) already done" in capsys.readouterr().out
    other = config_with(space, f"run.root={tmp_path}", "tune.algorithm=random", "train.seed=7")
    assert tuning.tune("vision", other, StepOptions(trials=1), pipeline=KilledApp()) != folder


def test_a_trial_that_dies_ends_its_mlflow_run_and_the_search_failed(tmp_path, no_models):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("keras_tuner")
    from shared import tracking

    class Crashing(PeakedApp):
        def train(self, config, options):  # opens its MLflow run as train does, then a bug
            run = RunDir.create("vision", to_dict(config), config.run.root, config.run.run_id)
            tracking.Tracker.start("vision", config, run)
            raise RuntimeError("a bug")

    space = {"train.learning_rate": {"min": 1e-3, "max": 5e-3}}
    store = tmp_path / "mlruns"
    config = config_with(space, f"run.root={tmp_path}", "track.mlflow=true", f"track.uri={store}")
    with pytest.raises(RuntimeError, match="a bug"):
        tuning.tune("vision", config, StepOptions(trials=2), pipeline=Crashing())
    client = mlflow.MlflowClient(store.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("deepfield-vision").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the trial, the search
    assert tracking.end_unfinished() == 0  # nothing left RUNNING for the exit hook
