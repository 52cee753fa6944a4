"""The registry in shared/apps.py is the one list of apps, and every app keeps the same shape."""

import ast
import importlib
import re
from pathlib import Path

import pytest

from shared.apps import APPS, REGISTRY, demo_commands, get
from shared.apps import main as apps_main
from shared.cli import build_parser
from tests.contract import AppContract
from tests.scorer_contract import CASES, ScorerContract

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


def test_demo_commands_score_the_sample_data_with_the_run_they_are_given():
    for app in REGISTRY:
        for command in demo_commands(app, ["--config", "c.yaml"], "runs/x/r1"):
            assert command[0] == app.name and command[2:4] == ["--config", "c.yaml"]
            assert command[4:6] == ["--run", "runs/x/r1"]
            assert command[-1].startswith("runs/x/r1/")
            assert (ROOT / command[-3]).exists(), command[-3]


def test_make_app_scores_with_the_run_it_trained_even_when_latest_moves(tmp_path, monkeypatch):
    """Another run finishing between train and score moves `latest`; the pipeline must not
    follow it."""
    import shared.cli

    root = tmp_path / "runs"
    other = root / "fraud" / "other-run"
    train = shared.cli.run_step

    def train_then_move_latest(argv):
        code, run = train(argv)
        if argv[1] != "train":
            return code, run
        other.mkdir(parents=True)
        (root / "fraud" / "latest").unlink()
        (root / "fraud" / "latest").symlink_to("other-run")
        return code, run

    monkeypatch.setattr(shared.cli, "run_step", train_then_move_latest)
    extra = ["--config", "apps/fraud/configs/smoke.yaml", "--set", f"run.root={root}"]
    assert apps_main(["pipeline", "fraud", *extra]) == 0
    trained = [p for p in (root / "fraud").iterdir() if (p / "FINISHED").exists()]
    assert len(trained) == 1 and (trained[0] / "metrics.json").is_file()
    assert (trained[0] / "scores.csv").is_file() and not any(other.iterdir())


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
def test_every_scorer_registers_with_the_bad_input_table(name):
    module = importlib.import_module(f"tests.{APPS[name].package}.test_bad_inputs")
    registered = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ScorerContract)
        and value is not ScorerContract
    ]
    assert [cls.APP for cls in registered] == [name]
    scorer = registered[0]
    assert set(scorer.NOT_APPLICABLE) <= {case.name for case in CASES}
    applied = [case for case in CASES if case.applies(scorer)]
    assert len(applied) >= 15 and all(reason.strip() for reason in scorer.NOT_APPLICABLE.values())


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
