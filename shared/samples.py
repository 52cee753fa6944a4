"""The sample files the README scores (`datasets/<app>/`), for an installed wheel.

A source checkout has them in `datasets/`; a wheel carries them as the package
`deepfield_datasets` (pyproject.toml maps it to that folder), and `prepare` copies the app's
into `./datasets/<app>/` where they are missing, so the README's commands work from any folder.
"""

import importlib.util
import shutil
import sys
from pathlib import Path

from shared.io import atomic_path

PACKAGE = "deepfield_datasets"
SKIPPED = {"generated", "__pycache__"}  # what prepare writes, never shipped


def install_samples(app: str, root: str | Path = "datasets") -> list[Path]:
    """Copy the app's packaged sample files under `root/<app>/` where a file is missing; the
    paths written (none in a source checkout, where they are the packaged files themselves)."""
    source = packaged_samples(app)
    if source is None:
        return []
    written = _copy_missing(source, Path(root) / app)
    if written:
        print(f"wrote {len(written)} sample file(s) to {Path(root) / app}", file=sys.stderr)
    return written


def packaged_samples(app: str) -> Path | None:
    """The folder of the app's packaged sample files; None when the package is not installed.
    (A data-only package has no `__init__.py`, so it is found by its search path, which
    `importlib.resources` does not read for an editable install.)"""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / app).is_dir():
            return Path(location) / app
    return None


def _copy_missing(source: Path, target: Path) -> list[Path]:
    written = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name in SKIPPED or entry.name.startswith("."):
            continue
        path = target / entry.name
        if entry.is_dir():
            written += _copy_missing(entry, path)
        elif not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temp:
                shutil.copyfile(entry, temp)
            written.append(path)
    return written
