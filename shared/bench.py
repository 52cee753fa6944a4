"""`make bench`: every app's benchmarks, each against a bare Keras baseline measured in the same run.

Each measurement runs in its own process so that its peak memory is its own. The report is
JSON: per app, the measured throughputs, the baselines, their ratio, and peak memory.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.io import write_json

BENCHES = {
    "fraud": "apps.fraud.bench",
    "vision": "apps.vision.bench",
    "recsys": "apps.recsys.bench",
}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_measurement(module: str, name: str, args: dict) -> dict:
    """Run `module.measure(name, args)` in a fresh process and return its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "shared.bench",
            "--measure",
            module,
            name,
            json.dumps(args),
            str(out),
        ]
        done = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark {module}:{name} failed (exit {done.returncode})")
        return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.bench", description=__doc__)
    parser.add_argument("--output", default="runs/bench/bench.json", help="JSON report path")
    parser.add_argument("--apps", nargs="*", default=list(BENCHES), help="apps to benchmark")
    parser.add_argument(
        "--rows", type=int, default=None, help="override the fraud scoring row count"
    )
    parser.add_argument(
        "--measure", nargs=4, metavar=("MODULE", "NAME", "ARGS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure:
        import importlib

        module, name, raw, out = args.measure
        result = importlib.import_module(module).measure(name, json.loads(raw))
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        write_json(out, result)
        return 0
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu_count": os.cpu_count(),
        "apps": {},
    }
    for app in args.apps:
        import importlib

        bench = importlib.import_module(BENCHES[app])
        print(f"bench: {app}", flush=True)
        report["apps"][app] = bench.run(run_measurement, rows=args.rows)
        write_json(args.output, report)
    print(json.dumps(report, indent=2))
    print(f"bench: report -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
