"""The step skeleton: typed model metadata, opening a run, saving and exporting its model."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared import steps
from shared.apps import main as apps_main
from shared.config import RunConfig, TrainConfig
from shared.export import export_saved_model, model_input_spec
from shared.io import DataError
from shared.run import RunDir


@dataclasses.dataclass
class DataConfig:
    path: str = "data.csv"  # the input file


@dataclasses.dataclass
class ToyConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


@dataclasses.dataclass
class ToyMeta(steps.ModelMeta):
    classes: list  # the class names, in output order

    APP = "toy"


def toy_meta(**changes) -> ToyMeta:
    fields = dict(
        app="toy",
        prepared="/tmp/p",
        input="floats (batch, 3)",
        train_seconds=1.5,
        precision_policy="float32",
        xla_compiled=False,
        classes=["a", "b"],
    )
    return ToyMeta(**{**fields, **changes})


def toy_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))


def write_saved_model(model, folder: str) -> None:
    export_saved_model(model, folder, model_input_spec(model))


def new_run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "runs" / "toy" / "20260101-000000-abc")
    run.path.mkdir(parents=True)
    (run.path / "config.yaml").write_text(f"run:\n  root: {tmp_path / 'runs'}\n")
    return run


def test_meta_written_then_read_is_the_same_typed_object(tmp_path):
    run = new_run(tmp_path)
    toy_meta().write(run)
    meta = ToyMeta.read(run)
    assert meta == toy_meta() and meta.classes == ["a", "b"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: raw.pop("classes"), "missing \\['classes'\\]"),
        (lambda raw: raw.update(extra=1), "unknown \\['extra'\\]"),
        (lambda raw: raw.update(app="other"), "not a toy run"),
    ],
)
def test_meta_from_another_version_or_app_is_one_clear_error(tmp_path, edit, message):
    run = new_run(tmp_path)
    toy_meta().write(run)
    raw = json.loads(run.meta_path.read_text())
    edit(raw)
    run.meta_path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=message):
        ToyMeta.read(run)


def test_a_run_without_meta_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no model_meta.json"):
        ToyMeta.read(new_run(tmp_path))


def test_save_model_writes_model_saved_model_meta_and_finishes(tmp_path):
    run, model = new_run(tmp_path), toy_model()
    steps.save_model(run, model, toy_meta(), write_saved_model)
    assert run.model_path.is_file() and (run.saved_model_path / "saved_model.pb").is_file()
    assert ToyMeta.read(run) == toy_meta()
    assert (run.path.parent / "latest").resolve() == run.path.resolve()
    batch = np.eye(3, dtype="float32")
    loaded = tf.saved_model.load(str(run.saved_model_path))  # kept: it owns the variables
    np.testing.assert_allclose(
        loaded.serve(tf.constant(batch)).numpy(), model.predict(batch, verbose=0), atol=1e-6
    )


def test_save_model_without_a_model_writes_only_meta_and_finishes(tmp_path):
    run = new_run(tmp_path)
    steps.save_model(run, None, toy_meta(), None)
    assert not run.model_path.exists() and not run.saved_model_path.exists()
    assert (run.path / "FINISHED").is_file() and ToyMeta.read(run).app == "toy"


def test_open_run_reads_the_runs_own_config_and_prepares_with_it(tmp_path):
    run = new_run(tmp_path)
    (run.path / "config.yaml").write_text(f"data:\n  path: trained.csv\nrun:\n  root: {run.path}\n")
    toy_meta().write(run)
    config = ToyConfig(data=DataConfig("now.csv"), run=RunConfig(root=str(tmp_path / "runs")))
    options = steps.StepOptions(run=str(run.path))
    opened = steps.open_run("toy", config, options, ToyMeta, lambda c: c.data.path, lambda r: r)
    assert opened.config.data.path == "trained.csv" and opened.data == "trained.csv"
    assert opened.meta.classes == ["a", "b"] and opened.model.path == run.path


def test_locate_without_options_uses_latest_and_a_missing_run_is_one_error(tmp_path):
    config = ToyConfig(run=RunConfig(root=str(tmp_path / "runs")))
    with pytest.raises(DataError, match="no trained run found .*latest: run `toy train` first"):
        steps.locate("toy", config, None)


def test_export_step_writes_to_output_and_says_what_it_serves(tmp_path, capsys):
    run, model = new_run(tmp_path), toy_model()
    steps.save_model(run, model, toy_meta(), write_saved_model)
    config = ToyConfig(run=RunConfig(root=str(tmp_path / "runs")))
    options = steps.StepOptions(output=str(tmp_path / "export"))

    def load(found):
        return keras.saving.load_model(found.model_path, safe_mode=True)

    target = steps.export_step("toy", config, options, load, write_saved_model, "floats")
    assert target == tmp_path / "export" and (target / "saved_model.pb").is_file()
    assert "export: SavedModel -> " in capsys.readouterr().out


def test_prepared_folder_changes_with_the_data_config_and_the_source_files(tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("a\n1\n")
    config = ToyConfig(run=RunConfig(root=str(tmp_path / "runs")))
    first = steps.prepared_folder("toy", config, [source])
    assert first.parent == tmp_path / "runs" / "toy" / "prepared"
    assert steps.prepared_folder("toy", config, [source]) == first
    assert steps.prepared_folder("toy", config, [source], features="v2") != first
    source.write_text("a\n1\n2\n")
    assert steps.prepared_folder("toy", config, [source]) != first


def test_options_input_wants_exactly_one_file():
    assert steps.StepOptions(inputs=["a.csv"]).input == "a.csv"
    with pytest.raises(DataError, match="expected one --input file, got 2"):
        steps.StepOptions(inputs=["a", "b"]).input  # noqa: B018


def test_registry_names_for_the_makefile(capsys):
    assert apps_main(["names"]) == 0
    assert capsys.readouterr().out.split() == [
        "fraud",
        "vision",
        "recsys",
        "medical",
        "nlp",
        "speech",
    ]
    assert apps_main(["bogus"]) == 2
