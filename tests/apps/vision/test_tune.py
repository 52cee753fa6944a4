"""`vision tune` end to end on the shared tiny run's data: two real trials through the CLI."""

import pandas as pd
import pytest

from apps.vision.config import Config
from shared.config import load_config

from .conftest import cli

CHEAP = ["train.epochs=1", "baseline.enabled=false", "evaluate.gradcam_images=0"]


def test_tune_runs_trials_as_runs_and_writes_a_best_config_train_accepts(trained):
    pytest.importorskip("keras_tuner")
    root, sets = trained
    latest = (root / "runs" / "vision" / "latest").resolve()
    cheap = [arg for item in CHEAP for arg in ("--set", item)]
    assert cli("tune", *sets, *cheap, "--trials", "2") == 0

    (folder,) = (root / "runs" / "vision").glob("tune-*")
    trials = pd.read_csv(folder / "trials.csv")
    assert trials["status"].tolist() == ["ok", "ok"] and set(trials["metric"]) == {"accuracy"}
    for run in map(folder.joinpath, ("trial-1", "trial-2")):
        assert (run / "FINISHED").exists() and (run / "metrics.json").exists()
        assert any((run / "tensorboard" / "evaluate").iterdir())
    best = trials.loc[trials["objective"].idxmax()]
    tuned = load_config(Config, folder / "best.yaml")
    assert tuned.train.learning_rate == pytest.approx(best["train.learning_rate"])
    assert str(tuned.model.filters) == best["model.filters"] and tuned.run.run_id == ""
    assert (root / "runs" / "vision" / "latest").resolve() == latest  # trials leave it alone
