"""Run folders: runs/<app>/<run-id>/ with the resolved config, environment and every artifact.

A run started again with the same command and config finds its unfinished folder and resumes
in it (BackupAndRestore picks up the epoch). Only the chief worker writes a run folder; other
workers get a folder of their own under runs/<app>/workers/ that is removed when they finish.
"""

import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from shared.io import DataError, read_json, write_json, write_text, write_yaml

FINISHED = "FINISHED"
WORKERS = "workers"  # runs/<app>/workers/: the other workers' folders while they train
PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "scikit-learn",
    "pyarrow",
    "keras-hub",
    "keras-rs",
    "librosa",
    "pydicom",
)


class RunDir:
    """One run's folder and the names of everything in it."""

    def __init__(self, path: str | Path, is_chief: bool = True):
        self.path = Path(path)
        self.is_chief = is_chief

    @classmethod
    def create(
        cls, app: str, config: dict, root: str = "runs", run_id: str = "", is_chief: bool = True
    ):
        """Create (or, for an unfinished run with the same config, reopen) a run folder."""
        digest = config_digest(config)
        if not is_chief:
            # Other workers must not touch the chief's run folder, nor keep their backups in the
            # shared /tmp, where anyone can plant a folder of the predictable name they would
            # reuse. Under the run root, the name depends only on the app, config and worker,
            # so a cluster started again finds every worker's backup and resumes at one epoch.
            path = Path(root) / app / WORKERS / f"{digest[:12]}-worker{_worker_index()}"
            run = cls(path, is_chief=False)
            run.resumed = path.exists()
            path.mkdir(parents=True, exist_ok=True)
            return run
        app_root = Path(root) / app
        if run_id:
            path = app_root / run_id
        else:
            path = (
                _unfinished_run(app_root, digest)
                or app_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:6]}"
            )
        run = cls(path)
        resumed = path.exists()
        path.mkdir(parents=True, exist_ok=True)
        write_text(path / ".config-digest", digest)
        write_yaml(path / "config.yaml", config)
        write_json(path / "environment.json", environment())
        run.resumed = resumed
        return run

    @staticmethod
    def locate(app: str, run: str | None = None, root: str = "runs") -> "RunDir":
        """The run folder to evaluate or score with: the one named, else runs/<app>/latest."""
        path = Path(run) if run else Path(root) / app / "latest"
        if not path.exists():
            hint = f"run `{app} train` first" if not run else "check the path"
            raise DataError(f"no trained run found at {path}: {hint}")
        if path.is_file():  # a model file inside a run folder was named
            path = path.parent
        return RunDir(path.resolve())

    resumed = False
    tracker = None  # the run's MLflow run (shared.tracking.Tracker) while train tracks it

    # Names of the artifacts, so every app lays out its run the same way.
    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def saved_model_path(self) -> Path:
        return self.path / "saved_model"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def meta_path(self) -> Path:
        return self.path / "model_meta.json"

    @property
    def card_path(self) -> Path:
        return self.path / "model_card.md"

    def subdir(self, name: str) -> Path:
        sub = self.path / name
        sub.mkdir(parents=True, exist_ok=True)
        return sub

    def finish(self) -> None:
        """Mark the run finished and point runs/<app>/latest at it (atomically)."""
        if not self.is_chief:
            shutil.rmtree(self.path, ignore_errors=True)
            with contextlib.suppress(OSError):  # other workers' folders are still there
                self.path.parent.rmdir()
            return
        write_text(self.path / FINISHED, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
        link = self.path.parent / "latest"
        tmp = self.path.parent / f".latest.{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(self.path.name)
        os.replace(tmp, link)
        if self.tracker is not None:
            self.tracker.train_finished(self)


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def environment() -> dict:
    """Versions, devices and commit: what someone needs to reproduce the run."""
    import tensorflow as tf

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "versions": versions,
        "devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": _git_commit(),
        "tf_config": json.loads(os.environ["TF_CONFIG"]) if os.environ.get("TF_CONFIG") else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _worker_index() -> int:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return int(task.get("index", 0))


def _unfinished_run(app_root: Path, digest: str) -> Path | None:
    if not app_root.is_dir():
        return None
    for path in sorted(app_root.iterdir(), reverse=True):
        marker = path / ".config-digest"
        if path.is_symlink() or not marker.is_file() or (path / FINISHED).exists():
            continue
        if marker.read_text().strip() == digest:
            return path
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_meta(run: RunDir) -> dict:
    if not run.meta_path.exists():
        raise DataError(f"{run.path}: no model_meta.json; is this a finished training run?")
    return read_json(run.meta_path)
