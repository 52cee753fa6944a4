import json
import os

import pytest

from shared.io import DataError
from shared.run import RunDir


def test_new_run_writes_config_and_environment(run_root):
    run = RunDir.create("demo", {"a": 1}, str(run_root))
    assert run.path.parent == run_root / "demo"
    assert (run.path / "config.yaml").read_text() == "a: 1\n"
    env = json.loads((run.path / "environment.json").read_text())
    assert "tensorflow" in env["versions"] and env["cpu_count"] >= 1
    assert not run.resumed


def test_unfinished_run_with_same_config_is_resumed(run_root):
    first = RunDir.create("demo", {"a": 1}, str(run_root))
    again = RunDir.create("demo", {"a": 1}, str(run_root))
    assert again.path == first.path and again.resumed
    other = RunDir.create("demo", {"a": 2}, str(run_root))
    assert other.path != first.path


def test_finish_points_latest_and_stops_resuming(run_root):
    run = RunDir.create("demo", {"a": 1}, str(run_root))
    run.finish()
    latest = run_root / "demo" / "latest"
    assert latest.is_symlink() and latest.resolve() == run.path.resolve()
    assert RunDir.locate("demo", None, str(run_root)).path == run.path.resolve()
    # A finished run is never reopened: the same config starts a fresh folder.
    fresh = RunDir.create("demo", {"a": 1}, str(run_root), run_id="second")
    assert fresh.path.name == "second"


def test_non_chief_folder_is_under_the_run_root_and_removed_when_finished(run_root, monkeypatch):
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    run = RunDir.create("demo", {"a": 1}, str(run_root), is_chief=False)
    # Not in the shared /tmp, where another user could plant a folder of that name.
    assert run.path.parent == run_root / "demo" / "workers"
    assert run.path.exists() and not run.is_chief and run.path.name.endswith("-worker1")
    assert not (run.path / "config.yaml").exists()  # it writes no run of its own
    again = RunDir.create("demo", {"a": 1}, str(run_root), is_chief=False)
    assert again.path == run.path and again.resumed  # a restarted worker finds its backup
    # The chief still finds no run to resume in the workers' folder, nor a new one there.
    chief = RunDir.create("demo", {"a": 1}, str(run_root))
    assert chief.path.parent == run_root / "demo" and not chief.resumed
    run.finish()
    assert not (run_root / "demo" / "workers").exists()


def test_locate_missing_run_is_a_data_error(run_root):
    with pytest.raises(DataError, match="no trained run found"):
        RunDir.locate("demo", None, str(run_root))


def test_is_chief_reads_tf_config(monkeypatch):
    from shared.training import is_chief

    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    assert not is_chief()
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    assert is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief() and "TF_CONFIG" not in os.environ
