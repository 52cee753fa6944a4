"""The registry in shared/apps.py is the one list of apps, and every app keeps the same shape."""

import ast
import importlib
import re
from pathlib import Path

import pytest

from shared.apps import APPS, REGISTRY, demo_commands, get
from shared.cli import build_parser
from tests.contract import AppContract

ROOT = Path(__file__).resolve().parent.parent
# The files every app has, each with one job (CONTRIBUTING.md).
APP_FILES = {
    "__init__.py",
    "__main__.py",
    "config.py",
    "data.py",
    "model.py",
    "pipeline.py",
    "scorer.py",
    "card.py",
    "plots.py",
    "sample.py",
    "bench.py",
}
MAX_FUNCTION_LINES = 60


def app_folder(name: str) -> Path:
    return ROOT / APPS[name].package.replace(".", "/")


def test_the_cli_offers_exactly_the_registered_apps():
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "app").choices
    assert list(choices) == list(APPS)


def test_the_makefile_names_no_app_itself():
    makefile = (ROOT / "Makefile").read_text()
    for name in APPS:
        assert not re.search(rf"^{name}\s*:", makefile, re.M), name
    assert "$(shell $(PYTHON) -m shared.apps names)" in makefile


def test_aliases_and_unknown_names():
    assert get("text").name == "nlp"
    with pytest.raises(KeyError, match="unknown app 'nope'"):
        get("nope")


def test_demo_commands_write_into_the_latest_run_of_their_app():
    for app in REGISTRY:
        for command in demo_commands(app, ["--config", "c.yaml"]):
            assert command[0] == app.name and command[2:4] == ["--config", "c.yaml"]
            assert command[-1].startswith(f"runs/{app.name}/latest/")
            assert (ROOT / command[-3]).exists(), command[-3]


@pytest.mark.parametrize("name", list(APPS))
def test_every_app_has_the_standard_files(name):
    present = {p.name for p in app_folder(name).glob("*.py")}
    assert present >= APP_FILES, sorted(APP_FILES - present)


@pytest.mark.parametrize("name", list(APPS))
def test_every_app_registers_with_the_contract_test(name):
    module = importlib.import_module(f"tests.{APPS[name].package}.test_contract")
    registered = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, AppContract) and value is not AppContract
    ]
    assert [cls.APP for cls in registered] == [name]


@pytest.mark.parametrize("name", list(APPS))
def test_no_function_in_an_app_is_over_60_lines(name):
    long = []
    for path in app_folder(name).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({lines})")
    assert not long, long
