"""The `deepfield` command: `deepfield <app> <step> [--config FILE] [--set key=value ...]`.

Each app's pipeline module provides `Config` (a dataclass), `DEFAULT_CONFIG` (a YAML path) and
one function per step taking `(config, options)`.
"""

import argparse
import dataclasses
import importlib
import os
import sys

APPS = {"fraud": "apps.fraud.pipeline"}
STEPS = ("prepare", "train", "evaluate", "score", "export")
STEP_HELP = {
    "prepare": "read or generate the data, build features and splits",
    "train": "train the models into a new run folder (resumes an unfinished identical run)",
    "evaluate": "compute test metrics, plots and the model card for a run",
    "score": "score a file with a trained run: outputs and rejects, written atomically",
    "export": "export a run's model as a TensorFlow SavedModel",
}


@dataclasses.dataclass
class StepOptions:
    """Command-line options that are not part of the config."""

    run: str | None = None  # run folder to use (default runs/<app>/latest)
    input: str | None = None  # file to score
    output: str | None = None  # where score/export write
    rejects: str | None = None  # where score writes rejected rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfield", description="Deepfield deep-learning apps.")
    apps = parser.add_subparsers(dest="app", required=True, metavar="APP")
    for app in APPS:
        app_parser = apps.add_parser(
            app, help=f"the {app} app", description=f"Deepfield {app} app."
        )
        steps = app_parser.add_subparsers(dest="step", required=True, metavar="STEP")
        for step in STEPS:
            sub = steps.add_parser(step, help=STEP_HELP[step], description=STEP_HELP[step])
            sub.add_argument(
                "--config", help="YAML config file (default: the app's configs/default.yaml)"
            )
            sub.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override one config value, e.g. --set train.epochs=3 (repeatable)",
            )
            if step in ("evaluate", "score", "export"):
                sub.add_argument("--run", help="run folder (default: runs/<app>/latest)")
            if step == "score":
                sub.add_argument("--input", required=True, help="file to score")
                sub.add_argument("--rejects", help="rejects file (default: beside the output)")
            if step in ("score", "export"):
                sub.add_argument(
                    "--output", help="output path (default: beside the input / in the run)"
                )
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    args = build_parser().parse_args(argv)
    from shared.config import ConfigError, load_config
    from shared.io import DataError

    try:
        pipeline = importlib.import_module(APPS[args.app])
        config = load_config(
            pipeline.Config, args.config or pipeline.DEFAULT_CONFIG, args.overrides
        )
        options = StepOptions(
            run=getattr(args, "run", None),
            input=getattr(args, "input", None),
            output=getattr(args, "output", None),
            rejects=getattr(args, "rejects", None),
        )
        getattr(pipeline, args.step)(config, options)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
