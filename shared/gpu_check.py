"""`make gpu-check`: each app's smoke config on the GPU, with and without mixed precision and XLA.

Every combination trains in its own process (a precision policy and XLA state are process-wide)
and reports examples/s and step time from the run's history, and the GPU's peak memory. On a
machine without a GPU it says so and exits 0.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from shared.io import write_json

COMBINATIONS = [(False, False), (True, False), (False, True), (True, True)]  # (mixed, xla)


def measure(app: str, mixed: bool, xla: bool, allow_cpu: bool = False) -> dict:
    """Train `app`'s smoke config once in this process and read its throughput and memory."""
    import tensorflow as tf

    from shared.apps import APPS
    from shared.config import load_config

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not allow_cpu:
        raise SystemExit("gpu-check: no GPU in this process")
    pipeline = importlib.import_module(APPS[app].pipeline)
    smoke = Path(pipeline.DEFAULT_CONFIG).with_name("smoke.yaml")
    with tempfile.TemporaryDirectory() as root:
        overrides = [
            f"run.root={root}",
            f"train.mixed_precision={str(mixed).lower()}",
            f"train.xla={str(xla).lower()}",
            "train.verbose=0",
        ]
        config = load_config(pipeline.Config, smoke, overrides)
        start = time.perf_counter()
        run = pipeline.train(config)
        seconds = time.perf_counter() - start
        history = pd.read_csv(run.history_path)
    steady = history[history["epoch"] > 0] if (history["epoch"] > 0).any() else history
    per_network = steady.groupby("network")
    examples_per_s = per_network["examples_per_s"].median() if "examples_per_s" in steady else None
    batch = config.train.batch_size
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] if gpus else None
    return {
        "app": app,
        "mixed_precision": mixed,
        "xla": xla,
        "device": "GPU" if gpus else "CPU",
        "train_seconds": round(seconds, 2),
        "examples_per_s": {k: round(float(v)) for k, v in examples_per_s.items()}
        if examples_per_s is not None
        else None,
        "step_ms": {k: round(1000 * batch / float(v), 3) for k, v in examples_per_s.items()}
        if examples_per_s is not None
        else None,
        "peak_gpu_memory_mb": round(peak / 2**20, 1) if peak is not None else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.gpu_check", description=__doc__)
    parser.add_argument("--output", default="runs/gpu_check.json", help="JSON report path")
    parser.add_argument("--apps", nargs="*", help="apps to check (default: all)")
    parser.add_argument("--one", nargs=3, metavar=("APP", "MIXED", "XLA"), help=argparse.SUPPRESS)
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # for tests
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.one:
        app, mixed, xla = args.one
        print(json.dumps(measure(app, mixed == "1", xla == "1", args.allow_cpu)))
        return 0
    import tensorflow as tf

    from shared.apps import APPS

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        print("gpu-check: no GPU visible to TensorFlow on this machine; nothing to measure.")
        write_json(args.output, {"gpu": None, "reason": "no GPU visible to TensorFlow"})
        return 0
    report = {"gpu": [d.name for d in gpus], "results": []}
    for app in args.apps or list(APPS):
        for mixed, xla in COMBINATIONS:
            command = [
                sys.executable,
                "-m",
                "shared.gpu_check",
                "--one",
                app,
                str(int(mixed)),
                str(int(xla)),
            ]
            command += ["--allow-cpu"] if args.allow_cpu else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                result = {
                    "app": app,
                    "mixed_precision": mixed,
                    "xla": xla,
                    "error": (done.stderr.strip().splitlines() or ["failed"])[-1],
                }
            else:
                result = json.loads(done.stdout.strip().splitlines()[-1])
            report["results"].append(result)
            print(json.dumps(result), flush=True)
            write_json(args.output, report)
    print(f"gpu-check: report -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
