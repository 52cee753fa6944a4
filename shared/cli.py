"""The `deepfield` command: `deepfield <app> <step> [--config FILE] [--set key=value ...]`.

The apps are those of `shared.apps`. Each app's `config` module provides `Config` (a
dataclass, read from the package's `configs/default.yaml` unless `--config` names a file) and
imports no TensorFlow, so a config or path error is reported before TensorFlow loads; its
pipeline module provides one function per step taking `(config, options:
shared.steps.StepOptions)`.
"""

import argparse
import dataclasses
import functools
import importlib
import os
import signal
import sys
from pathlib import Path

from shared.apps import APPS

STEPS = ("prepare", "train", "evaluate", "score", "export", "serve", "tune")
STEP_HELP = {
    "prepare": "read or generate the data, build features and splits",
    "train": "train the models into a new run folder (resumes an unfinished identical run)",
    "evaluate": "compute test metrics, plots and the model card for a run",
    "score": "score input with a trained run: outputs and rejects, written atomically",
    "export": "export a run's model as a TensorFlow SavedModel",
    "serve": "load a run's model once and answer HTTP scoring requests (FastAPI, batched)",
    "tune": "hyper-parameter search (KerasTuner) over the config's tune.space; each trial a run",
}
USES_RUN = ("evaluate", "score", "export", "recommend", "serve", "tune")
# Steps every app has that live in shared/ rather than in the app's pipeline: the module that
# runs them, called as `<module>.<step>(app_name, config, options)`.
SHARED_STEPS = {"serve": "shared.server", "tune": "shared.tuning"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfield", description="Deepfield deep-learning apps.")
    apps = parser.add_subparsers(dest="app", required=True, metavar="APP")
    for app, entry in APPS.items():
        app_parser = apps.add_parser(
            app, help=f"the {app} app", description=f"Deepfield {app} app."
        )
        steps = app_parser.add_subparsers(dest="step", required=True, metavar="STEP")
        for step, help_text in {**STEP_HELP, **dict(entry.extra_steps)}.items():
            sub = steps.add_parser(step, help=help_text, description=help_text)
            sub.add_argument(
                "--config",
                help="YAML config file, or the name of one the app ships (smoke, default, ...; "
                "default: default)",
            )
            sub.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override one config value, e.g. --set train.epochs=3 (repeatable)",
            )
            if step == "train":
                sub.add_argument(
                    "--workers",
                    type=int,
                    default=1,
                    help="train as N local workers (MultiWorkerMirroredStrategy)",
                )
            if step in USES_RUN:
                sub.add_argument(
                    "--run",
                    help="the search folder: an unfinished one to resume, or a new one "
                    "(default: the newest unfinished search of this config)"
                    if step == "tune"
                    else "run folder (default: runs/<app>/latest)",
                )
            if step == "score":
                sub.add_argument(
                    "--input", nargs="+", required=True, help="file(s) or folder to score"
                )
                sub.add_argument("--rejects", help="rejects file (default: beside the output)")
            if step == "recommend":
                sub.add_argument(
                    "--users",
                    required=True,
                    help="comma-separated user ids, or a file with one per line",
                )
                sub.add_argument("--k", type=int, help="items per user (default: from the config)")
            if step == "export":
                sub.add_argument(
                    "--format",
                    choices=("savedmodel", "tflite"),
                    help="savedmodel (default), or tflite: LiteRT float16 and int8 files with "
                    "their test accuracy beside the Keras model's (image apps)",
                )
            if step == "serve":
                sub.add_argument("--host", default="127.0.0.1", help="address to listen on")
                sub.add_argument("--port", type=int, default=8080, help="port to listen on")
                sub.add_argument(
                    "--max-batch",
                    type=int,
                    default=64,
                    help="most rows the server scores in one model call (default: 64)",
                )
                sub.add_argument(
                    "--max-wait-ms",
                    type=float,
                    default=5.0,
                    help="longest a request waits for others to fill a batch (default: 5)",
                )
            if step == "tune":
                sub.add_argument("--trials", type=int, default=10, help="trials to run")
                sub.add_argument(
                    "--max-minutes", type=float, help="stop starting trials after this long"
                )
            if step in ("score", "export", "recommend"):
                sub.add_argument(
                    "--output", help="output path (default: beside the input / in the run)"
                )
    return parser


def quiet_tensorflow_import() -> None:
    """Import TensorFlow and Keras with the process's stderr muted.

    TensorFlow 2.21 prints C++ start-up lines (oneDNN, no CUDA driver) before any log level
    applies, which buried the one line of error a user should see. Errors still surface: a
    failed import raises after stderr is back.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    return run_step(argv)[0]


def run_step(argv: list[str] | None = None) -> tuple[int, object]:
    """`main`, also returning what the step returned (the `RunDir` that `train` made, ...)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stopped: list[int] = []
    if os.environ.get("TF_CONFIG"):
        # A launcher or cluster manager stops a worker with SIGTERM or SIGINT: exit through
        # Python, so files are closed and temporaries removed.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, functools.partial(_stop, stopped))
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) > 1 and not os.environ.get("TF_CONFIG"):
        from shared.launcher import launch

        # Prepare once, here, so the workers do not all generate or cache the same data at once.
        argv = _without_workers(argv)
        code = main([argv[0], "prepare", *argv[2:]])
        return code or launch(argv, args.workers), None
    from shared.config import ConfigError
    from shared.io import DataError

    try:
        # The config and the paths named are checked before TensorFlow loads (seconds): a
        # typo is one line at once, not after the import.
        config = _checked_config(args)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    quiet_tensorflow_import()
    from shared.steps import StepOptions
    from shared.training import Diverged, TrainingFailed

    try:
        pipeline = importlib.import_module(APPS[args.app].pipeline)
        options = StepOptions(
            run=getattr(args, "run", None),
            inputs=getattr(args, "input", None) or [],
            output=getattr(args, "output", None),
            rejects=getattr(args, "rejects", None),
            users=getattr(args, "users", None),
            k=getattr(args, "k", None),
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            max_batch=getattr(args, "max_batch", None),
            max_wait_ms=getattr(args, "max_wait_ms", None),
            trials=getattr(args, "trials", None),
            max_minutes=getattr(args, "max_minutes", None),
        )
        if args.step in SHARED_STEPS:
            shared_step = getattr(importlib.import_module(SHARED_STEPS[args.step]), args.step)
            result = shared_step(args.app, config, options)
        else:
            result = getattr(pipeline, args.step)(config, options)
        if args.step == "evaluate":
            # evaluate is a process of its own: TensorBoard, and MLflow when the run or this
            # command tracks, get what it measured
            from shared.tracking import evaluated

            evaluated(args.app, config, options)
        if args.step == "prepare":
            from shared.samples import install_samples

            install_samples(args.app)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    except (Diverged, TrainingFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1, None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130, None
    except BaseException:
        if not stopped:
            raise
        # Whatever a stop signal interrupts ends here as one line: TensorFlow turns a signal
        # during one of its calls into an unrelated error, and a peer that has stopped first
        # fails this worker's collective ops.
        print(f"stopped by {signal.Signals(stopped[0]).name}", file=sys.stderr)
        return 128 + stopped[0], None
    return 0, result


def _checked_config(args: argparse.Namespace):
    """The step's config from the app's `config` module (no TensorFlow in it), and the run
    folder and inputs it names, checked to exist."""
    from shared.config import ConfigError, load_config
    from shared.run import RunDir
    from shared.scoring import expand_inputs

    package = APPS[args.app].package
    config_cls = importlib.import_module(f"{package}.config").Config
    configs = Path(importlib.import_module(package).__file__).parent / "configs"
    overrides = list(args.overrides)
    if getattr(args, "format", None):
        if "export" not in {f.name for f in dataclasses.fields(config_cls)}:
            raise ConfigError(
                f"{args.app} export writes a SavedModel only; --format {args.format} is for the "
                "image apps"
            )
        overrides.append(f"export.format={args.format}")
    config = load_config(config_cls, _config_path(args.config, configs), overrides)
    if args.step in USES_RUN and args.step != "tune":  # tune's --run may name a new folder
        RunDir.locate(args.app, args.run, config.run.root)
    if args.step == "score":
        expand_inputs(args.input, "")
    return config


def _config_path(named: str | None, configs: Path) -> Path:
    """`--config`: a file, or the name of one of the app's packaged configs (`smoke`,
    `creditcard`), which an installed wheel carries; none: the app's `default`."""
    if not named:
        return configs / "default.yaml"
    path = Path(named)
    packaged = configs / f"{named}.yaml"
    if path.exists() or path.name != named or path.suffix:
        return path
    if packaged.exists():
        return packaged
    from shared.config import ConfigError

    shipped = ", ".join(sorted(p.stem for p in configs.glob("*.yaml")))
    raise ConfigError(
        f"config not found: {named} is neither a file nor a shipped config ({shipped})"
    )


def _stop(stopped: list[int], signum: int, frame) -> None:
    stopped.append(signum)
    raise SystemExit(128 + signum)


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--workers":
            skip = True
        elif not item.startswith("--workers="):
            out.append(item)
    return out


if __name__ == "__main__":
    sys.exit(main())
