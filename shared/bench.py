"""`make bench`: every app's benchmarks, each beside a bare Keras baseline measured in the same run.

Each measurement runs in its own process so that its peak memory is its own. The report is
JSON: per app, the measured throughputs, the baselines, their ratio, and peak memory.
"""

import argparse
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shared.apps import APPS
from shared.io import write_json


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
        done = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark {module}:{name} failed (exit {done.returncode})")
        return json.loads(out.read_text())


def local_workers(
    app: str, n: int, root: Path, sets: list[str], network: str, config: str | None = None
) -> dict:
    """`network`'s training examples/s with `n` local workers (`train --workers n`), and whether
    every worker ended with the same weights (the `weights sha256` each one prints)."""
    shutil.rmtree(root, ignore_errors=True)
    command = [sys.executable, "-m", "shared.cli", app, "train", "--workers", str(n)]
    command += ["--config", config] if config else []
    command += [arg for s in [f"run.root={root}", "train.verbose=0", *sets] for arg in ("--set", s)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{n}-worker training failed: {done.stderr.strip().splitlines()[-1:]}")
    history = pd.read_csv(root / app / "latest" / "history.csv")
    steady = history[(history["network"] == network) & (history["epoch"] > 0)]
    digests = re.findall(r"weights sha256 ([^;\n]+)", done.stdout)
    return {
        "examples_per_s": round(float(steady["examples_per_s"].median())),
        "identical": len(digests) == n and len(set(digests)) == 1,
    }


def input_rate(dataset, examples: int) -> int:
    """Examples/s of an input pipeline alone (one pass after a warm-up one), to spot an input
    bound: a model that trains near this rate is waiting on its input."""
    for _ in dataset:
        pass
    start = time.perf_counter()
    for _ in dataset:
        pass
    return round(examples / (time.perf_counter() - start))


def workers_report(workers: dict) -> dict:
    """The `local_workers` results at 1 and 2 workers, as the report shows them."""
    return {
        "note": "CPU workers share 2 cores here: this checks the cluster path, not speed-up",
        **{f"{n}_worker_examples_per_s": w["examples_per_s"] for n, w in workers.items()},
        "weights_identical_across_workers": workers[max(workers)]["identical"],
    }


def bench_config(config_cls, default_config, work: Path, *overrides: str, **sets):
    """An app's benchmark config: its default config, run root under `work`, run id `bench`,
    two quiet epochs, then `overrides` ("key=value") and `sets` (key=value)."""
    from shared.config import load_config

    base = [f"run.root={work / 'runs'}", "run.run_id=bench", "train.epochs=2", "train.verbose=0"]
    extra = [*overrides, *(f"{k}={v}" for k, v in sets.items())]
    return load_config(config_cls, default_config, base + extra)


def compare_fits(fit_ours, fit_bare, examples: int, trials: int, work: Path) -> dict:
    """Examples/s of the app's training loop beside a bare `model.fit`, interleaved over
    `trials` so that a busy moment on a shared machine hits both.

    `fit_ours(run, timer)` and `fit_bare(timer)` each build a fresh model and fit it with the
    `EpochTimer` among its callbacks; the first epoch (tracing) is left out of each rate.
    """
    from shared.run import RunDir
    from shared.training import EpochTimer

    seconds = {"ours": [], "bare": []}
    for trial in range(trials):
        run = RunDir(work / f"train-{trial}")
        shutil.rmtree(run.path, ignore_errors=True)
        ours, bare = EpochTimer(), EpochTimer()
        fit_ours(run, ours)
        fit_bare(bare)
        seconds["ours"].append(ours.steady_epoch_s())
        seconds["bare"].append(bare.steady_epoch_s())
    return {name: round(examples / float(np.median(t)), 1) for name, t in seconds.items()}


def train_once(pipeline, config, app: str, work: Path) -> None:
    """Train the benchmark's scoring model (run id `bench` under `work`) unless it exists."""
    if not (work / "runs" / app / "bench" / "model.keras").exists():
        pipeline.train(config)


def sample_folder(sources: list, folder: Path, count: int, suffix: str) -> Path:
    """A folder of `count` files to score, copied from `sources` in turn (written once, whole:
    built under a temporary name, then renamed)."""
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(count):
            shutil.copyfile(sources[i % len(sources)], tmp / f"{i:06d}{suffix}")
        tmp.replace(folder)
    return folder


def time_scoring(
    pipeline, config, inputs: list[str], output: Path, unit: str, count: str = "files"
) -> dict:
    """The app's own `score` step on `inputs`, timed: how many it read (its result's `count`:
    files, rows) and `unit`/s."""
    from shared.steps import StepOptions

    start = time.perf_counter()
    counts = pipeline.score(config, StepOptions(inputs=inputs, output=str(output)))
    seconds = time.perf_counter() - start
    return {unit: counts[count], f"{unit}_per_s": round(counts[count] / seconds, 1)}


def train_and_score(measure, module: str, setup_args: dict) -> dict:
    """The measurements most apps' benchmarks take, each in a process of its own: `setup`
    (train a scoring model, write the input; it returns the arguments of the next two), the
    app's scoring and a bare predict on that input, the training comparison, and training
    with 1 and 2 local workers."""
    setup = measure(module, "setup", setup_args)
    # Every measurement's answer carries its process's peak memory; the next steps take only
    # what setup returned for them.
    setup = {key: value for key, value in setup.items() if key != "peak_rss_mb"}
    return {
        "train": measure(module, "train", {}),
        "ours": measure(module, "score", setup),
        "bare": measure(module, "predict", setup),
        "workers": {n: measure(module, "workers", {"n": n}) for n in (1, 2)},
    }


def training_section(train: dict, unit: str, target_ratio: float = 0.9, **extra) -> dict:
    """The report's training block: the pipeline's `unit`/s beside the bare fit's, their ratio,
    the input pipeline alone (is training waiting on input?) and peak memory."""
    return {
        unit: train[unit],
        f"pipeline_{unit}_per_s": train["ours"],
        f"bare_fit_{unit}_per_s": train["bare"],
        "ratio": round(train["ours"] / train["bare"], 3),
        "target_ratio": target_ratio,
        **extra,
        f"input_pipeline_{unit}_per_s": train["input"],
        "input_bound": train["input"] < 1.5 * train["ours"],
        "peak_rss_mb": train["peak_rss_mb"],
    }


def scoring_section(ours: dict, bare: dict, unit: str, ours_name: str, bare_name: str, **extra):
    """The report's scoring block: the app's scorer (input files to CSV) beside a bare predict
    on the same rows in memory, as `unit`/s, their ratio and peak memory."""
    rate = f"{unit}_per_s"
    return {
        unit: ours[unit],
        f"{ours_name}_{rate}": ours[rate],
        f"{bare_name}_{rate}": bare[rate],
        "ratio": round(ours[rate] / bare[rate], 3),
        **extra,
        "peak_rss_mb": ours["peak_rss_mb"],
    }


STARTUP_COMMANDS = {
    "python_only": ["-c", "pass"],
    "help": ["-m", "shared.cli", "--help"],
    "config_error": ["-m", "shared.cli", "fraud", "train", "--set", "train.epochz=1"],
    "missing_input": ["-m", "shared.cli", "fraud", "score", "--run", ".", "--input", "absent"],
    "import_tensorflow": ["-c", "import tensorflow, keras"],
}


def cli_startup(trials: int = 3) -> dict:
    """Seconds (median of `trials`) until `deepfield --help`, a config error and a missing
    input return, beside a bare interpreter and the TensorFlow import those errors no longer
    wait for; the issue's target is under 2 s."""
    seconds = {}
    for name, args in STARTUP_COMMANDS.items():
        times = []
        for _ in range(trials):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=False)
            times.append(time.perf_counter() - start)
        seconds[name] = round(float(np.median(times)), 3)
    tf_import = seconds["import_tensorflow"]
    return {
        "seconds": seconds,
        "target_s": 2.0,
        "under_target": all(seconds[k] < 2.0 for k in ("help", "config_error", "missing_input")),
        "config_error_vs_tensorflow_import": round(seconds["config_error"] / tf_import, 3),
    }


# `serve`: the sample rows each app's server benchmark sends (JSON objects, values as text).
SERVE_SAMPLES = {"fraud": "datasets/fraud/score_sample.csv", "nlp": "datasets/nlp/score_sample.csv"}
SERVE_WORK = Path("runs/bench/serve")
SERVE_CLIENTS = 16  # concurrent clients of the throughput figure
SERVE_REQUESTS = {"latency": 200, "warm_up": 20}
SERVE_ROWS = 512  # rows the 16 clients send between them, and the in-process figure scores


def serve_rows(app: str, count: int = SERVE_ROWS) -> list[dict]:
    """`count` rows of the app's sample file as JSON objects (cells as text, as a CSV has)."""
    frame = pd.read_csv(SERVE_SAMPLES[app], dtype=str, keep_default_na=False)
    frame = pd.concat([frame] * (count // max(len(frame), 1) + 1)).head(count)
    return frame.to_dict(orient="records")


def serve_run(app: str) -> Path:
    """The smoke run the serve benchmark serves (trained once under runs/bench/serve)."""
    run = SERVE_WORK / "runs" / app / "serve"
    if not (run / "model_meta.json").exists():
        sets = ["--config", "smoke", "--set", f"run.root={SERVE_WORK / 'runs'}"]
        sets += ["--set", "run.run_id=serve", "--set", "train.verbose=0"]
        for step in ("prepare", "train"):
            command = [sys.executable, "-m", "shared.cli", app, step, *sets]
            if subprocess.run(command, capture_output=True, check=False).returncode:
                raise RuntimeError(f"serve benchmark: {app} {step} failed")
    return run


def measure(name: str, args: dict) -> dict:
    """`shared.bench`'s own measurements (in a fresh process, as `run_measurement` runs them):
    `serve_in_process`, the served code path called directly."""
    if name != "serve_in_process":
        raise ValueError(f"unknown measurement {name!r}")
    return _serve_in_process(args["app"], args["run"], args["max_batch"])


def _serve_in_process(app: str, run_path: str, max_batch: int) -> dict:
    """Rows/s of the server's scoring code with no HTTP and no queue: the same checks and
    `model.predict` on the same rows, in batches of `max_batch`, and one row's latency."""
    from shared.cli import quiet_tensorflow_import

    quiet_tensorflow_import()
    from shared.config import load_config
    from shared.run import RunDir
    from shared.server import load_adapter

    package = APPS[app].package
    config_cls = importlib.import_module(f"{package}.config").Config
    configs = Path(importlib.import_module(package).__file__).parent / "configs"
    adapter = load_adapter(app, load_config(config_cls, configs / "smoke.yaml"), RunDir(run_path))
    calls = adapter.model_calls()
    direct = lambda call, part, size=None: calls[call]([part])[0]  # noqa: E731
    rows = serve_rows(app)
    for _ in range(3):  # warm-up: tracing, first batches
        adapter.score(rows[:max_batch], direct)
    rates = {}
    # In batches of --max-batch, and of as many rows as the 16 one-row clients can have
    # waiting at once: the most the server's batches can hold in the throughput figure.
    for size in (max_batch, SERVE_CLIENTS):
        start = time.perf_counter()
        for begin in range(0, len(rows), size):
            adapter.score(rows[begin : begin + size], direct)
        rates[size] = round(len(rows) / (time.perf_counter() - start), 1)
    one = []
    for row in rows[:50]:
        begin = time.perf_counter()
        adapter.score([row], direct)
        one.append(time.perf_counter() - begin)
    return {
        "rows_per_s": rates[max_batch],
        "rows_per_s_batches_of_clients": rates[SERVE_CLIENTS],
        "one_row_ms": round(1000 * float(np.median(one)), 2),
    }


def _percentile_ms(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(seconds, q)), 2)


async def _client(host: str, port: int, bodies: list[bytes]) -> list[float]:
    """Seconds per request of one client: one keep-alive HTTP/1.1 connection posting `bodies`
    to /score one after the other. A bare asyncio client, not httpx: the clients share the
    server's cores, so what they cost is taken from the server's figure."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port)
    seconds = []
    try:
        for body in bodies:
            begin = time.perf_counter()
            head = f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
            writer.write(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            if b" 200 " not in status:
                raise RuntimeError(f"serve benchmark: {status.decode().strip()} {answer[:200]}")
            seconds.append(time.perf_counter() - begin)
    finally:
        writer.close()
    return seconds


def _served_figures(url: str, rows: list[dict]) -> dict:
    """p50/p99 of 1-row requests one at a time, and rows/s of SERVE_CLIENTS clients sending
    1-row requests at once (all of `rows`, once each), against a server at `url`."""
    import asyncio

    host, port = url.removeprefix("http://").rsplit(":", 1)
    bodies = [json.dumps({"rows": [row]}).encode() for row in rows]
    counts = SERVE_REQUESTS

    async def figures():
        await _client(host, int(port), bodies[: counts["warm_up"]])
        latency = await _client(host, int(port), (bodies * 2)[: counts["latency"]])
        before.extend(_batch_totals(url))  # nothing is in flight: a blocking call is fine
        start = time.perf_counter()
        share = [bodies[k::SERVE_CLIENTS] for k in range(SERVE_CLIENTS)]
        waits = await asyncio.gather(*(_client(host, int(port), part) for part in share))
        return latency, [s for got in waits for s in got], time.perf_counter() - start

    before: list[float] = []
    latency, waits, elapsed = asyncio.run(figures())
    after = _batch_totals(url)
    return {
        "p50_ms_1_row": _percentile_ms(latency, 50),
        "p99_ms_1_row": _percentile_ms(latency, 99),
        "rows_per_s_16_clients": round(len(waits) / elapsed, 1),
        "p50_ms_16_clients": _percentile_ms(waits, 50),
        "p99_ms_16_clients": _percentile_ms(waits, 99),
        "rows_per_model_call_16_clients": round(
            (after[0] - before[0]) / max(after[1] - before[1], 1), 1
        ),
    }


def _batch_totals(url: str) -> tuple[float, float]:
    """(rows, model calls) of /score so far, from the server's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            if line.startswith(f'deepfield_batch_rows_{kind}{{call="score"}}'):
                found[kind] = float(line.split()[-1])
    return found.get("sum", 0.0), found.get("count", 0.0)


def serve_section(app: str, max_batch: int = 64, max_wait_ms: float = 5.0) -> dict:
    """The `serve` benchmark of `app` (bounded, loopback only): its server started on a free
    port, 1-row latency and 16-client throughput, beside the same rows scored in-process."""
    run = serve_run(app)
    in_process = run_measurement(
        "shared.bench", "serve_in_process", {"app": app, "run": str(run), "max_batch": max_batch}
    )
    command = [sys.executable, "-m", "shared.cli", app, "serve", "--config", "smoke"]
    command += ["--run", str(run), "--port", "0", "--max-batch", str(max_batch)]
    command += ["--max-wait-ms", str(max_wait_ms)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()  # the start-up line, with the URL
        if " at http://" not in line:
            raise RuntimeError(f"serve benchmark: {app} server did not start ({line.strip()})")
        served = _served_figures(line.split(" at ")[1].split(" ")[0], serve_rows(app))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "run": str(run),
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        **served,
        "rows": SERVE_ROWS,
        "in_process_rows_per_s": in_process["rows_per_s"],
        f"in_process_rows_per_s_batches_of_{SERVE_CLIENTS}": in_process[
            "rows_per_s_batches_of_clients"
        ],
        "in_process_ms_1_row": in_process["one_row_ms"],
        "ratio_16_clients_vs_in_process": round(
            served["rows_per_s_16_clients"] / in_process["rows_per_s"], 3
        ),
        f"ratio_16_clients_vs_in_process_batches_of_{SERVE_CLIENTS}": round(
            served["rows_per_s_16_clients"] / in_process["rows_per_s_batches_of_clients"], 3
        ),
        "ratio_p50_1_row_vs_in_process": round(
            served["p50_ms_1_row"] / in_process["one_row_ms"], 3
        ),
        "note": (
            "loopback HTTP; the clients (one asyncio process, 16 keep-alive connections) share "
            "the server's cores"
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.bench", description=__doc__)
    parser.add_argument("--output", default="runs/bench/bench.json", help="JSON report path")
    parser.add_argument("--apps", nargs="*", default=list(APPS), help="apps to benchmark")
    parser.add_argument(
        "--rows", type=int, default=None, help="override the fraud scoring row count"
    )
    parser.add_argument(
        "--serve-apps",
        nargs="*",
        default=list(SERVE_SAMPLES),
        help="apps whose `serve` is benchmarked (latency, 16 concurrent clients)",
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
    print("bench: CLI start-up", flush=True)
    report["cli_startup"] = cli_startup()
    for app in args.apps:
        import importlib

        bench = importlib.import_module(APPS[app].bench)
        print(f"bench: {app}", flush=True)
        report["apps"][app] = bench.run(run_measurement, rows=args.rows)
        write_json(args.output, report)
    for app in args.serve_apps:
        print(f"bench: {app} serve", flush=True)
        report.setdefault("serve", {})[app] = serve_section(app)
        write_json(args.output, report)
    print(json.dumps(report, indent=2))
    print(f"bench: report -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
