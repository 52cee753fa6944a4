"""The recsys tests' shared pieces: the CLI with smoke-config arguments, and one trained and
evaluated smoke run for the whole session (the pipeline and contract tests share it)."""

import pytest

from shared.cli import main

SMOKE = "apps/recsys/configs/smoke.yaml"


def cli(*args) -> int:
    return main(["recsys", *args])


def set_args(*sets: str) -> list[str]:
    """`--set key=value` for each of `sets` ("key=value")."""
    return [arg for s in sets for arg in ("--set", s)]


def smoke_args(*sets: str) -> list[str]:
    """The CLI arguments of a smoke-config run with `sets` as overrides."""
    return ["--config", SMOKE, *set_args(*sets)]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(root, CLI arguments) of a smoke run prepared, trained and evaluated under `root`, on a
    generated sample at root/ratings.csv and root/items.csv."""
    root = tmp_path_factory.mktemp("recsys")
    sets = smoke_args(
        f"run.root={root / 'runs'}",
        f"data.path={root / 'ratings.csv'}",
        f"data.items_path={root / 'items.csv'}",
    )
    assert cli("prepare", *sets) == 0
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    return root, sets
