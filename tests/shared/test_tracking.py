"""MLflow tracking against a file store in a temporary folder, and the project without MLflow."""

import dataclasses
import json
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared import tracking, training
from shared.config import ConfigError, RunConfig, TrackConfig, TrainConfig
from shared.io import write_json
from shared.steps import StepOptions

PNG = (  # a 1x1 grey PNG: enough for an artifact and a TensorBoard image
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~"
    b"\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`"
    b"\x82"
)


@dataclasses.dataclass
class Config:
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)


@pytest.fixture(autouse=True)
def no_env_uri(monkeypatch):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)


def demo_config(tmp_path, mlflow: bool) -> Config:
    return Config(
        train=TrainConfig(epochs=2, patience=0, verbose=0, learning_rate=0.01),
        run=RunConfig(root=str(tmp_path / "runs")),
        track=TrackConfig(mlflow=mlflow, uri=str(tmp_path / "mlruns")),
    )


def fit_tiny(run, config) -> keras.Model:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("float32"))).batch(16)
    return training.fit(model, data, data, run, config.train, name="net")


def test_train_and_a_later_evaluate_log_to_one_mlflow_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    config = demo_config(tmp_path, mlflow=True)
    run, _, _, _ = training.start_run("demo", config, lambda c: None)
    model = fit_tiny(run, config)
    model.save(run.model_path)
    (run.subdir("plots") / "roc.png").write_bytes(PNG)
    run.finish()  # the end of train: model and plots go up, the MLflow run is finished
    # evaluate is another process: it knows the run folder only, and finds the MLflow run in it
    write_json(run.metrics_path, {"test": {"accuracy": 0.75, "recall@10": 0.5}, "data": {"n": 3}})
    tracking.evaluated("demo", config, StepOptions(run=str(run.path)))

    stored = json.loads((run.path / tracking.RUN_FILE).read_text())
    client = mlflow.MlflowClient(stored["tracking_uri"])
    logged = client.get_run(stored["run_id"])
    assert logged.data.params["train.learning_rate"] == "0.01"
    assert logged.data.metrics["test/accuracy"] == 0.75
    assert "test/recall_10" in logged.data.metrics and "data/n" not in logged.data.metrics
    epochs = client.get_metric_history(stored["run_id"], "net/loss")
    assert [m.step for m in epochs] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(stored["run_id"])}
    assert {"model", "plots", "metrics.json", "config.yaml"} <= artifacts
    assert [a.path for a in client.list_artifacts(stored["run_id"], "plots")] == ["plots/roc.png"]
    assert logged.info.status == "FINISHED"
    assert len(client.search_runs([stored["experiment_id"]])) == 1  # evaluate made no second run


def test_tracking_off_needs_no_mlflow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    config = demo_config(tmp_path, mlflow=False)
    run, _, _, _ = training.start_run("demo", config, lambda c: None)
    callbacks = training.make_callbacks(run, config.train, "net", "val_loss", "min")
    assert run.tracker is None
    assert not any(isinstance(c, tracking.EpochLogger) for c in callbacks)
    write_json(run.metrics_path, {"test": {"accuracy": 0.5}})
    tracking.evaluated("demo", config, StepOptions(run=str(run.path)))
    assert not (run.path / tracking.RUN_FILE).exists()


def test_tracking_on_without_mlflow_is_one_line_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = demo_config(tmp_path, mlflow=True)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[track\]"'):
        training.start_run("demo", config, lambda c: None)
    assert not (tmp_path / "runs").exists()


def test_the_environment_uri_turns_tracking_on_and_names_the_store(tmp_path, monkeypatch):
    assert not tracking.enabled(TrackConfig())
    monkeypatch.setenv(tracking.ENV_URI, str(tmp_path / "store"))
    assert tracking.enabled(TrackConfig())
    assert tracking.tracking_uri(TrackConfig()) == (tmp_path / "store").as_uri()
    assert tracking.tracking_uri(TrackConfig(uri="http://mlflow:5000")) == "http://mlflow:5000"


def test_scores_are_every_finite_number_but_the_data_summary():
    report = {
        "test": {"auprc": 0.5, "roc_auc": float("nan"), "confusion": {"tp": 3}, "ok": True},
        "leaderboard": {"detection": {"models": {"gbm": {"validation": {"auprc": 0.4}}}}},
        "data": {"rows": 10},
        "ks": [10, 20],
    }
    assert tracking.flat_scores(report) == {
        "test/auprc": 0.5,
        "leaderboard/detection/models/gbm/validation/auprc": 0.4,
    }


def test_params_are_the_flattened_config_with_lists_as_json():
    params = tracking.flat_params({"model": {"filters": [8, 16], "name": "cnn"}, "seed": 1})
    assert params == {"model.filters": "[8, 16]", "model.name": "cnn", "seed": "1"}


def test_a_tracking_server_that_fails_costs_one_line_not_the_run(capsys):
    class Down:
        def log_batch(self, *args, **kwargs):
            raise ConnectionError("server unreachable")

    tracking.Tracker(Down(), "id", "http://x").log_metrics({"loss": 1.0})
    assert "MLflow log_metrics failed (server unreachable)" in capsys.readouterr().out


def test_evaluate_puts_scores_plots_and_the_config_in_tensorboard(tmp_path):
    from tensorboard.plugins.hparams import metadata

    config = demo_config(tmp_path, mlflow=False)
    run, _, _, _ = training.start_run("demo", config, lambda c: None)
    (run.subdir("plots") / "roc.png").write_bytes(PNG)
    write_json(run.metrics_path, {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.75}})
    for _ in range(2):  # evaluated again: the earlier evaluation's events are replaced
        tracking.evaluated("demo", config, StepOptions(run=str(run.path)))

    events = list((run.path / "tensorboard" / "evaluate").glob("events.out.tfevents.*"))
    assert len(events) == 1
    values = [
        v for e in tf.compat.v1.train.summary_iterator(str(events[0])) for v in e.summary.value
    ]
    scalars = {
        v.tag: float(tf.make_ndarray(v.tensor))
        for v in values
        if v.metadata.plugin_data.plugin_name == "scalars"
    }
    assert scalars["test/accuracy"] == 0.75 and scalars["validation/accuracy"] == 0.5
    assert "plots/roc" in {v.tag for v in values}
    session = next(v for v in values if v.tag == metadata.SESSION_START_INFO_TAG)
    start = metadata.parse_session_start_info_plugin_data(session.metadata.plugin_data.content)
    assert start.hparams["train.learning_rate"].number_value == 0.01
    assert start.hparams["track.mlflow"].bool_value is False


def test_a_train_that_dies_ends_its_mlflow_run_failed_at_the_latest_on_exit(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    config = demo_config(tmp_path, mlflow=True)
    run, _, _, _ = training.start_run("demo", config, lambda c: None)
    # An unexpected exception left train here; the exit hook ends what it left open.
    assert tracking.end_unfinished() == 1
    stored = json.loads((run.path / tracking.RUN_FILE).read_text())
    client = mlflow.MlflowClient(stored["tracking_uri"])
    assert client.get_run(stored["run_id"]).info.status == "FAILED"
    assert tracking.end_unfinished() == 0
    finished, _, _, _ = training.start_run("demo", demo_config(tmp_path / "b", True), lambda c: 0)
    finished.finish()  # a train that ends normally leaves nothing for the hook
    assert tracking.end_unfinished() == 0
