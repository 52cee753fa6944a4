"""Stopping `train --workers N` from outside: every worker stops with the launcher.

The workers run in sessions of their own, so a signal to the launcher (SIGTERM from
`timeout`, CI, systemd or Kubernetes; SIGINT from Ctrl-C) reaches them only if the launcher
passes it on. Real processes throughout: a launcher with two fraud workers, stopped mid-training.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

STOP_BOUND_S = 30  # the launcher and its workers are gone within this after the signal


def train_command(tmp_path, epochs: int) -> list[str]:
    return [
        *(sys.executable, "-m", "shared.cli", "fraud", "train", "--workers", "2"),
        *("--config", "apps/fraud/configs/smoke.yaml"),
        *("--set", f"run.root={tmp_path / 'runs'}", "--set", f"data.path={tmp_path / 's.parquet'}"),
        *("--set", f"train.epochs={epochs}"),
    ]


def start_launcher(tmp_path, epochs: int = 100_000) -> subprocess.Popen:
    return subprocess.Popen(
        train_command(tmp_path, epochs),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def collect(stream, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    thread.start()
    return thread


def children(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process has just exited
        if int(fields[1]) == pid:
            found.append(int(Path(stat).parent.name))
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_training(launcher: subprocess.Popen, out: list[str]) -> list[int]:
    """Wait until both workers have opened their run folders (so they are in `fit`); their pids."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and launcher.poll() is None:
        started = {
            m for line in out for m in re.findall(r"\[worker (\d)\] train: run folder", line)
        }
        if started == {"0", "1"}:
            time.sleep(2)  # into the first epochs
            workers = children(launcher.pid)
            assert len(workers) == 2, workers
            return workers
        time.sleep(0.5)
    pytest.fail(f"the workers never started training:\n{''.join(out)[-3000:]}")


@pytest.fixture
def epochs():
    return 100_000  # trains until stopped


@pytest.fixture
def launched(tmp_path, epochs):
    """A running launcher with two training workers: (launcher, worker pids, stdout, stderr)."""
    before = set(glob.glob("/tmp/deepfield-*"))
    launcher = start_launcher(tmp_path, epochs)
    out, err = [], []
    readers = [collect(launcher.stdout, out), collect(launcher.stderr, err)]
    workers = []
    try:
        workers = wait_for_training(launcher, out)
        yield launcher, workers, out, err
        for reader in readers:
            reader.join(timeout=10)
        assert set(glob.glob("/tmp/deepfield-*")) <= before  # nothing left in the shared /tmp
    finally:
        for pid in [launcher.pid, *workers]:  # only what this test started, should it fail
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=30)


# SIGINT takes the same path as SIGTERM; it runs with the slow tests (`make test-all`) so the
# suite stays within CI's ten minutes.
@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_to_the_launcher_stops_every_worker(launched, tmp_path, signum):
    launcher, workers, out, err = launched
    start = time.monotonic()
    launcher.send_signal(signum)
    code = launcher.wait(timeout=STOP_BOUND_S + 30)
    assert time.monotonic() - start < STOP_BOUND_S
    assert code == 128 + signum
    time.sleep(0.5)  # a worker the launcher lost would have been re-parented, not ended
    assert not [pid for pid in workers if alive(pid)]
    stderr = "".join(err)
    name = signal.Signals(signum).name
    assert f"error: launcher got {name}; passed it on to the 2 workers" in stderr
    assert "Traceback" not in stderr + "".join(out)
    # The other worker's backup stays under the run root, so the same command resumes.
    assert list((tmp_path / "runs" / "fraud" / "workers").glob("*-worker1"))


def test_a_killed_worker_stops_the_others_within_the_bound(launched):
    launcher, workers, out, err = launched
    start = time.monotonic()
    os.kill(workers[-1], signal.SIGKILL)  # a worker dies on its own (out of memory, say)
    code = launcher.wait(timeout=STOP_BOUND_S + 30)
    assert time.monotonic() - start < STOP_BOUND_S
    assert code == 1
    assert not [pid for pid in workers if alive(pid)]
    assert re.search(
        r"error: worker \d exited with code -9; stopped the other workers", "".join(err)
    )


@pytest.mark.slow  # two cluster starts (~45 s): with the slow tests, `make test-all`
@pytest.mark.parametrize("epochs", [2])
def test_a_stopped_cluster_resumes_and_leaves_no_worker_folder(launched, tmp_path, epochs):
    launcher, _, _, _ = launched
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=STOP_BOUND_S + 30) == 128 + signal.SIGTERM
    done = subprocess.run(
        train_command(tmp_path, epochs), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = re.findall(r"\[worker (\d)\] train: run folder \S+ \(resuming\)", done.stdout)
    assert sorted(resumed) == ["0", "1"]  # both found their folders again
    app_root = tmp_path / "runs" / "fraud"
    names = {p.name for p in app_root.iterdir()} - {"latest", "prepared"}
    assert len(names) == 1  # the one run, and no workers/ folder left behind
    assert (app_root / "latest" / "model.keras").is_file()


def test_a_worker_told_to_stop_exits_through_python(tmp_path):
    # TensorFlow's coordination service takes SIGTERM over and only records it; a worker of a
    # one-worker cluster (no peer to wait on) shows that the worker's own handler is back.
    from shared.launcher import tf_configs

    env = {**os.environ, "TF_CONFIG": json.dumps(tf_configs(1)[0]), "PYTHONUNBUFFERED": "1"}
    command = [arg for arg in train_command(tmp_path, 100_000) if arg not in ("--workers", "2")]
    worker = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = [], []
    readers = [collect(worker.stdout, out), collect(worker.stderr, err)]
    try:
        deadline = time.monotonic() + 300
        while not any("train: supervised network" in line for line in out):
            assert worker.poll() is None and time.monotonic() < deadline, "".join(out + err)
            time.sleep(0.5)
        time.sleep(2)  # in `fit`
        start = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=STOP_BOUND_S) == 128 + signal.SIGTERM
        assert time.monotonic() - start < 10  # its own exit, not a launcher's SIGKILL
        for reader in readers:
            reader.join(timeout=10)
        # Its one line last (TensorFlow's C++ start-up lines may come before it).
        assert "".join(err).strip().splitlines()[-1] == "stopped by SIGTERM"
        assert "Traceback" not in "".join(out + err)
        assert not (tmp_path / "runs" / "fraud" / "latest").exists()  # not finished
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
