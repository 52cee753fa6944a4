"""The CLI reports config and path errors before TensorFlow is imported."""

import subprocess
import sys

import pytest

from shared.apps import APPS

PROBE = """
import sys
from shared.cli import main
code = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""


def probe(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("app", sorted(APPS))
def test_a_config_typo_is_one_line_before_tensorflow_is_imported(app):
    done = probe(app, "train", "--set", "train.epochz=3")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: unknown key train.epochz; allowed keys here: ")
    assert "tensorflow imported: False" in done.stdout


def test_a_missing_run_or_input_is_one_line_before_tensorflow_is_imported(tmp_path):
    done = probe("fraud", "evaluate", "--set", f"run.root={tmp_path}")
    assert done.returncode == 2 and "tensorflow imported: False" in done.stdout
    assert done.stderr.strip() == (
        f"error: no trained run found at {tmp_path}/fraud/latest: run `fraud train` first"
    )
    (tmp_path / "run").mkdir()
    missing = tmp_path / "absent.csv"
    done = probe("fraud", "score", "--run", str(tmp_path / "run"), "--input", str(missing))
    assert done.returncode == 2 and "tensorflow imported: False" in done.stdout
    assert done.stderr.strip() == f"error: {missing}: no such file or folder"


def test_export_format_sets_the_image_apps_export_config_and_is_refused_elsewhere(tmp_path):
    from shared.cli import _checked_config, build_parser
    from shared.config import ConfigError

    args = ["export", "--run", str(tmp_path), "--format", "tflite"]
    config = _checked_config(build_parser().parse_args(["medical", *args]))
    assert config.export.format == "tflite"
    with pytest.raises(ConfigError, match="^fraud export writes a SavedModel only"):
        _checked_config(build_parser().parse_args(["fraud", *args]))


def test_config_by_name_finds_the_apps_shipped_config_and_an_unknown_name_lists_them(tmp_path):
    from shared.cli import _checked_config, build_parser
    from shared.config import ConfigError

    args = build_parser().parse_args(["fraud", "train", "--config", "creditcard"])
    assert _checked_config(args).data.layout == "creditcard"  # apps/fraud/configs/creditcard.yaml
    args = build_parser().parse_args(["fraud", "train", "--config", "nosuch"])
    with pytest.raises(ConfigError, match=r"nosuch is neither .*\(creditcard, default, "):
        _checked_config(args)


def test_tune_takes_a_search_folder_to_resume_that_need_not_exist_yet(tmp_path):
    from shared.cli import _checked_config, build_parser

    folder = tmp_path / "tune-new"  # a new folder is allowed: the search starts there
    args = build_parser().parse_args(["vision", "tune", "--run", str(folder), "--trials", "2"])
    assert args.run == str(folder) and args.trials == 2
    assert _checked_config(args).tune is not None  # no run folder looked for, no error
