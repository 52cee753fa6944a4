"""Two local workers train one model through MultiWorkerMirroredStrategy, for two apps."""

import re
import subprocess
import sys

import pytest


def run_workers(*args):
    command = [sys.executable, "-m", "shared.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    ("app", "data_path"),
    # The vision run covers the launcher in the default suite; fraud's, with its larger
    # tabular model and baselines, runs with the slow tests (make test-all).
    [pytest.param("fraud", "s.parquet", marks=pytest.mark.slow), ("vision", "digits")],
)
def test_two_workers_train_one_model(tmp_path, app, data_path):
    done = run_workers(
        app,
        "train",
        "--workers",
        "2",
        "--config",
        f"apps/{app}/configs/smoke.yaml",
        "--set",
        f"run.root={tmp_path / 'runs'}",
        "--set",
        f"data.path={tmp_path / data_path}",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    digests = dict(
        re.findall(r"\[worker (\d)\] train: finished.*weights sha256 ([^;\n]+)", done.stdout)
    )
    assert set(digests) == {"0", "1"}  # both workers finished training
    assert digests["0"] == digests["1"]  # with the same trainable weights
    runs = [p for p in (tmp_path / "runs" / app).iterdir() if p.name not in ("latest", "prepared")]
    assert len(runs) == 1  # only the chief wrote a run folder
    assert (runs[0] / "model.keras").is_file()
    assert "2 replica(s)" in done.stdout


def test_a_failing_worker_stops_the_launch(tmp_path, capsys):
    from shared.launcher import launch

    code = launch(["fraud", "train", "--set", "train.epochs=0", "--set", f"run.root={tmp_path}"], 2)
    assert code == 1
    assert re.search(
        r"error: worker \d exited with code 2; stopped the other workers", capsys.readouterr().err
    )


def test_bad_config_stops_before_any_worker_starts(tmp_path):
    done = run_workers(
        "fraud",
        "train",
        "--workers",
        "2",
        "--set",
        "train.epochs=0",
        "--set",
        f"run.root={tmp_path}",
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: train.epochs: must be >= 1, got 0"]
    assert "launcher:" not in done.stdout
