"""The contract every app keeps, tested once here: each app registers by subclassing
`AppContract` in `tests/apps/<app>/test_contract.py` (tests/test_registry.py checks that every
app of shared/apps.py does).

A subclass sets `APP` and provides a `contract_run` fixture: `(run folder, CLI arguments that
point at the run's config and run root)` of a tiny trained and evaluated run (usually the app's
own module-scoped `trained` fixture). It implements `serving_batch` (model inputs the SavedModel
takes) and may override `keras_outputs` / `served_outputs` and `check_scores` (the app's
outputs against the loaded model's predictions on the same inputs).
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from shared.apps import APPS
from shared.cli import STEP_HELP, main
from shared.steps import ModelMeta

COMMON_ARTIFACTS = (
    "config.yaml",
    "environment.json",
    "metrics.json",
    "history.csv",
    "model_meta.json",
    "model_card.md",
    "FINISHED",
)


class AppContract:
    APP = ""  # the registry name of the app under test

    # --- hooks ---------------------------------------------------------------------------------

    def serving_batch(self, run: Path):
        """A small batch the SavedModel's `serve` signature takes."""
        raise NotImplementedError

    def keras_outputs(self, model, batch) -> np.ndarray:
        return np.asarray(model.predict(batch, verbose=0))

    def served_outputs(self, served, batch) -> np.ndarray:
        return np.asarray(served.serve(tf.constant(batch)))

    def check_scores(self, run: Path, model, scored: pd.DataFrame, test_input: str) -> None:
        """Assert the scored rows are the loaded model's predictions on those inputs."""
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------------------

    @property
    def pipeline(self):
        return importlib.import_module(APPS[self.APP].pipeline)

    def cli(self, *args) -> int:
        return main([self.APP, *args])

    def load_model(self, run: Path):
        from shared.run import RunDir

        return importlib.import_module(f"{APPS[self.APP].package}.model").load_model(RunDir(run))

    # --- the contract --------------------------------------------------------------------------

    def test_run_folder_holds_the_common_artifacts_and_png_plots(self, contract_run):
        run, _ = contract_run
        for name in COMMON_ARTIFACTS:
            assert (run / name).is_file(), name
        assert (run / "saved_model" / "saved_model.pb").is_file() or any(
            (run / "saved_model").glob("*/saved_model.pb")
        )
        assert (run.parent / "latest").resolve() == run.resolve()
        plots = list((run / "plots").glob("*.png"))
        assert plots and all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)

    def test_model_meta_reads_back_as_the_apps_typed_meta(self, contract_run):
        from shared.run import RunDir

        run, _ = contract_run
        meta_cls = self.pipeline.Meta
        assert issubclass(meta_cls, ModelMeta) and meta_cls.APP == self.APP
        meta = meta_cls.read(RunDir(run))
        assert meta.app == self.APP and Path(meta.prepared).is_dir()
        assert json.loads((run / "model_meta.json").read_text())["app"] == self.APP

    def test_metrics_hold_a_leaderboard_and_the_test_input(self, contract_run):
        run, _ = contract_run
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["leaderboard"] and metrics["test_input"]
        for block in metrics["leaderboard"].values():
            assert block["selected"] in block["models"]

    def test_scoring_the_test_split_numbers_every_row_and_matches_the_model(
        self, contract_run, tmp_path
    ):
        run, args = contract_run
        test_input = json.loads((run / "metrics.json").read_text())["test_input"]
        source = "@" + str(run / test_input[1:]) if test_input.startswith("@") else run / test_input
        out = tmp_path / "scores.csv"
        assert self.cli("score", *args, "--input", str(source), "--output", str(out)) == 0
        scored = pd.read_csv(out)
        rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
        rows = sorted([*scored["row"], *rejects["row"]])
        assert rows == list(range(1, len(rows) + 1)) and len(scored) > 0
        self.check_scores(run, self.load_model(run), scored, str(source))

    def test_exported_saved_model_matches_the_keras_model(self, contract_run, tmp_path):
        run, args = contract_run
        target = tmp_path / "export"
        assert self.cli("export", *args, "--output", str(target)) == 0
        batch = self.serving_batch(run)
        served = tf.saved_model.load(str(target))
        np.testing.assert_allclose(
            self.served_outputs(served, batch),
            self.keras_outputs(self.load_model(run), batch),
            rtol=1e-4,
            atol=1e-5,
        )

    def test_a_missing_run_is_one_line_of_error(self, contract_run, tmp_path, capsys):
        _, args = contract_run
        assert self.cli("export", *args, "--run", str(tmp_path / "no-run")) == 2
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and "Traceback" not in err and "no-run" in err

    def test_cli_help_lists_every_step(self):
        package = APPS[self.APP].package
        done = subprocess.run(
            [sys.executable, "-m", package, "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        steps = [*STEP_HELP, *dict(APPS[self.APP].extra_steps)]
        assert all(step in done.stdout for step in steps)
