"""`make quality`: every app through its own steps on real public datasets, each model beside
the baselines measured in the same run.

One small file per dataset in `benchmarks/quality/` says how its app is pointed at it: the
config, the `--set` overrides and the split people use for it. For each dataset this runs
`prepare`, `train`, `evaluate` and `score` (on the test split `evaluate` wrote, or on the input
the file names) as separate processes of the same command a user types, and reads back the
leaderboard `evaluate` wrote: per model the primary metric on test and validation, training
seconds, and the training seconds each network took to first match the best baseline on
validation. Each step's wall time and peak memory are measured from outside.

Writes `runs/quality/quality.json` and `runs/quality/quality.md`. Datasets whose files are not
in the pack are listed as missing, not failed.

    python -m shared.quality [--data ../shared/realdata] [--apps nlp,fraud] [--quick]
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from shared import apps as apps_registry
from shared.io import read_json, write_json, write_text

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks" / "quality"
DEFAULT_DATA = os.environ.get("DEEPFIELD_REALDATA", "../shared/realdata")
STEPS = ("prepare", "train", "evaluate", "score")
SPEC_KEYS = {
    "dataset",
    "app",
    "description",
    "files",
    "config",
    "split",
    "set",
    "quick",
    "score",
    "extra_scores",
    "seeds",
}
QUICK_MINUTES = 2.0  # QUICK=1: each network's training stops after the epoch passing this


class SpecError(ValueError):
    """A benchmark file that cannot be used, as one line."""


def load_specs(folder: Path = BENCHMARKS) -> list[dict]:
    """The benchmark files, in name order, checked."""
    specs = []
    for path in sorted(folder.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        unknown = sorted(set(spec) - SPEC_KEYS)
        if unknown:
            raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}")
        for key in ("dataset", "app", "files", "split"):
            if key not in spec:
                raise SpecError(f"{path}: missing key {key!r}")
        spec.setdefault("set", {})
        spec.setdefault("quick", {})
        spec.setdefault("score", {})
        spec.setdefault("extra_scores", [])
        spec["file"] = str(path)
        specs += _per_seed(spec)
    return specs


def _per_seed(spec: dict) -> list[dict]:
    """A spec with `seeds: [...]` runs once per seed (`train.seed`), each as its own dataset
    entry `<dataset>-seed<N>`; the report adds their mean and spread under the spec's name."""
    seeds = spec.pop("seeds", None)
    if seeds is None:
        return [spec]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds):
        raise SpecError(f"{spec['file']}: seeds must be a list of integers, got {seeds!r}")
    return [
        spec
        | {
            "dataset": f"{spec['dataset']}-seed{seed}",
            "seed_group": spec["dataset"],
            "set": {**spec["set"], "train.seed": seed},
        }
        for seed in seeds
    ]


def select(specs: list[dict], apps: list[str] | None, datasets: list[str] | None) -> list[dict]:
    try:
        wanted = {apps_registry.get(a).name for a in apps} if apps else None
    except KeyError as exc:
        raise SpecError(str(exc).strip("'\"")) from exc
    chosen = [s for s in specs if wanted is None or s["app"] in wanted]
    if datasets:
        chosen = [s for s in chosen if {s["dataset"], s.get("seed_group")} & set(datasets)]
    return chosen


def overrides(spec: dict, data: Path, root: Path, quick: bool) -> list[str]:
    """`--set` arguments: the spec's (with `{data}` the pack), the run folder, QUICK's caps."""
    values = {**spec["set"], **(spec["quick"] if quick else {})}
    if quick:
        values.setdefault("train.max_minutes", QUICK_MINUTES)
    values["run.root"] = str(root)
    values["run.run_id"] = spec["dataset"]
    values.setdefault("train.verbose", 2)
    return [f"{key}={_yaml_scalar(_fill(value, data))}" for key, value in values.items()]


def _fill(value, data: Path):
    if isinstance(value, str):
        return value.replace("{data}", str(data))
    if isinstance(value, list):
        return [_fill(v, data) for v in value]
    return value


def _yaml_scalar(value) -> str:
    # One line of YAML flow style, which `--set` parses back to the same type.
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def run_step(command: list[str], log: Path) -> dict:
    """Run one step as its own process; its wall time, peak memory and exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "exit": process.returncode,
    }
    if process.returncode != 0:
        result["error"] = _last_error(log)
    return result


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


def score_summary(output: Path, rejects: Path, seconds: float) -> dict:
    """Rows scored and rejected (read back from the files) and any non-finite output."""
    out = pd.read_csv(output) if output.exists() else pd.DataFrame()
    rej = pd.read_csv(rejects) if rejects.exists() else pd.DataFrame()
    numbers = out.select_dtypes("number")
    non_finite = int((~numbers.apply(lambda c: c.map(math.isfinite))).to_numpy().sum())
    total = len(out) + len(rej)
    return {
        "rows": total,
        "scored": len(out),
        "rejected": len(rej),
        "non_finite_outputs": non_finite,
        "rows_per_s": round(total / seconds, 1) if seconds else None,
        "first_rejects": rej.head(3).astype(str).to_dict("records") if len(rej) else [],
    }


def run_dataset(spec: dict, data: Path, out: Path, quick: bool, progress) -> dict:
    """One dataset through prepare, train, evaluate and score; the figures `evaluate` wrote."""
    result = {"app": spec["app"], "split": spec["split"], "source": spec["file"]}
    if spec.get("description"):
        result["description"] = spec["description"]
    missing = [f for f in spec["files"] if not (data / f).exists()]
    if missing:
        progress(spec, "missing", len(STEPS))
        return result | {"status": "missing", "missing": missing}
    root = out / "runs" / spec["dataset"]
    shutil.rmtree(root, ignore_errors=True)  # a rerun measures training again, not a resume
    base = [sys.executable, "-m", "shared.cli", spec["app"]]
    config = ["--config", spec["config"]] if spec.get("config") else []
    sets = [arg for item in overrides(spec, data, root, quick) for arg in ("--set", item)]
    run_dir = root / spec["app"] / spec["dataset"]
    result["run"] = str(run_dir)
    result["steps"] = {}
    for step in STEPS:
        progress(spec, step, 1)
        command = [*base, step, *config, *sets]
        if step == "score":
            output, rejects = run_dir / "quality_scores.csv", run_dir / "quality_rejects.csv"
            command += ["--run", str(run_dir), "--input", *_score_inputs(spec, run_dir, data)]
            command += ["--output", str(output), "--rejects", str(rejects)]
        elif step == "evaluate":
            command += ["--run", str(run_dir)]
        done = run_step(command, out / "logs" / f"{spec['dataset']}-{step}.log")
        result["steps"][step] = done
        if done["exit"] != 0:
            progress(spec, "failed", len(STEPS) - STEPS.index(step) - 1)
            return result | {"status": "failed", "failed_step": step, "error": done["error"]}
        if step == "evaluate":
            metrics = read_json(run_dir / "metrics.json")
            result["leaderboard"] = metrics.get("leaderboard", {})
        if step == "score":
            result["score"] = score_summary(output, rejects, done["seconds"])
    for extra in spec["extra_scores"]:  # other real inputs scored with the same run
        name = extra["name"]
        output, rejects = run_dir / f"quality_{name}.csv", run_dir / f"quality_{name}.rejects.csv"
        command = [*base, "score", *config, *sets, "--run", str(run_dir)]
        command += ["--input", _fill(extra["input"], data), "--output", str(output)]
        command += ["--rejects", str(rejects)]
        done = run_step(command, out / "logs" / f"{spec['dataset']}-score-{name}.log")
        result["steps"][f"score {name}"] = done
        if done["exit"] != 0:
            failure = {"status": "failed", "failed_step": f"score {name}", "error": done["error"]}
            return result | failure
        result.setdefault("extra_scores", {})[name] = score_summary(
            output, rejects, done["seconds"]
        )
    return result | {"status": "ok"}


def _score_inputs(spec: dict, run_dir: Path, data: Path) -> list[str]:
    """The spec's own score input, else the test split the app's evaluate wrote."""
    named = spec["score"].get("input")
    if named:
        return [_fill(named, data)]
    metrics = read_json(run_dir / "metrics.json")
    listed = metrics.get("test_input")
    if not listed:
        raise SpecError(f"{spec['file']}: the app wrote no test_input and the spec names none")
    if listed.startswith("@"):
        return ["@" + str(run_dir / listed[1:])]
    return [str(run_dir / listed)]


def to_markdown(report: dict) -> str:
    """The report as people read it: per dataset, each model beside its baselines."""
    from shared.leaderboard import to_markdown as board

    quick = f"QUICK (each network capped at {QUICK_MINUTES:g} min); " if report["quick"] else ""
    lines = [
        "# Quality on real data",
        "",
        f"Pack `{report['data']}`; {quick}started {report['started']}, "
        f"{report['cpu_count']} CPU(s), {report['seconds']:.0f} s in all.",
        "",
    ]
    lines += [summary_table(report), ""]
    spread = seeds_table(report)
    if spread:
        lines += ["## Across seeds", "", spread, ""]
    for name, entry in report["datasets"].items():
        lines += [f"## {name} ({entry['app']})", "", f"Split: {entry['split']}", ""]
        if entry["status"] == "missing":
            lines += [f"**missing** from the pack: {', '.join(entry['missing'])}", ""]
            continue
        if entry["status"] == "failed":
            lines += [f"**failed** at `{entry['failed_step']}`: {entry['error']}", ""]
        for task, block in entry.get("leaderboard", {}).items():
            lines += [f"### {task}: {block['metric']}", "", board(block), ""]
        steps = entry.get("steps", {})
        if steps:
            cells = ", ".join(
                f"{s} {v['seconds']:.0f} s / {v['peak_rss_mib']:,.0f} MiB" for s, v in steps.items()
            )
            lines += [f"Steps (wall time / peak memory): {cells}.", ""]
        scores = {"test split": entry["score"]} if "score" in entry else {}
        for label, s in {**scores, **entry.get("extra_scores", {})}.items():
            lines += [
                f"Score ({label}): {s['rows']:,} rows, {s['scored']:,} scored, "
                f"{s['rejected']:,} rejected, {s['non_finite_outputs']} non-finite outputs, "
                f"{s['rows_per_s']} rows/s (process start included).",
                "",
            ]
    return "\n".join(lines)


def summary_table(report: dict) -> str:
    """One line per dataset and task: the run's model beside the best baseline, on test."""
    lines = [
        "| dataset | task (metric) | run's model | test | best baseline | test | time to "
        "baseline s | train step s | peak MiB |",
        "|---" * 9 + "|",
    ]
    for name, entry in report["datasets"].items():
        if entry["status"] != "ok":
            lines.append(f"| {name} | {entry['status']} |" + " |" * 7)
            continue
        steps = entry["steps"]
        peak = max(step["peak_rss_mib"] for step in steps.values())
        for task, block in entry["leaderboard"].items():
            metric, models = block["metric"], block["models"]
            chosen, base = block["selected"], block["best_baseline"]
            reached = models.get(chosen, {}).get("time_to_baseline_s")
            is_network = models.get(chosen, {}).get("kind") == "network"
            cells = [
                name,
                f"{task} ({metric})",
                chosen or "none",
                _cell(models.get(chosen, {}).get("test", {}).get(metric)),
                base or "none",
                _cell(models.get(base, {}).get("test", {}).get(metric)),
                "-" if not is_network else "never" if reached is None else f"{reached:.1f}",
                f"{steps['train']['seconds']:.0f}",
                f"{peak:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(report: dict) -> str:
    """Per seeded benchmark and model: the test metric's mean and spread over its seeds, and
    how many seeds failed or ended non-finite (a network that diverged)."""
    groups: dict[tuple, dict[str, list]] = {}
    for entry in report["datasets"].values():
        if not entry.get("seed_group"):
            continue
        for task, block in entry.get("leaderboard", {}).items():
            models = groups.setdefault((entry["seed_group"], task, block["metric"]), {})
            for name, model in block["models"].items():
                value = model.get("test", {}).get(block["metric"])
                models.setdefault(name, []).append(value)
    if not groups:
        return ""
    lines = ["| benchmark | task (metric) | model | seeds | mean | std | min | failed or NaN |"]
    lines.append("|---" * 8 + "|")
    for (group, task, metric), models in groups.items():
        for name, values in models.items():
            finite = [v for v in values if v is not None and math.isfinite(v)]
            stats = pd.Series(finite, dtype=float)
            cells = [group, f"{task} ({metric})", name, str(len(values))]
            cells += [_cell(stats.mean() if finite else None)]
            cells += [_cell(stats.std(ddof=0) if finite else None)]
            cells += [_cell(stats.min() if finite else None), str(len(values) - len(finite))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.quality", description=__doc__)
    parser.add_argument("--data", default=DEFAULT_DATA, help="the real-data pack (DATA=...)")
    parser.add_argument("--apps", help="comma-separated apps (text = nlp), default all")
    parser.add_argument("--datasets", help="comma-separated dataset names, default all")
    parser.add_argument("--quick", action="store_true", help="cap each training (QUICK=1)")
    parser.add_argument("--output", default="runs/quality", help="report folder")
    parser.add_argument("--benchmarks", default=str(BENCHMARKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        specs = select(
            load_specs(Path(args.benchmarks)),
            args.apps.split(",") if args.apps else None,
            args.datasets.split(",") if args.datasets else None,
        )
    except (SpecError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not specs:
        print("error: no benchmark matches --apps/--datasets", file=sys.stderr)
        return 2
    data, out = Path(args.data).resolve(), Path(args.output)
    report = {
        "data": str(data),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu_count": os.cpu_count(),
        "datasets": {},
    }
    start, total, done = time.perf_counter(), len(specs) * len(STEPS), [0]

    def progress(spec: dict, step: str, count: int) -> None:
        elapsed = time.perf_counter() - start
        eta = elapsed / done[0] * (total - done[0]) if done[0] else None
        print(
            f"quality [{done[0] + 1}/{total}] {spec['dataset']}: {step}"
            + (f" (elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min)" if eta else ""),
            flush=True,
        )
        done[0] += count

    for spec in specs:
        try:
            entry = run_dataset(spec, data, out, args.quick, progress)
        except SpecError as exc:
            entry = {"app": spec["app"], "split": spec["split"], "status": "failed"}
            entry |= {"failed_step": "score", "error": str(exc)}
        if spec.get("seed_group"):
            entry["seed_group"] = spec["seed_group"]
        report["datasets"][spec["dataset"]] = entry
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(out / "quality.json", report)
    write_text(out / "quality.md", to_markdown(report) + "\n")
    print(to_markdown(report))
    print(f"quality: report -> {out / 'quality.json'}, {out / 'quality.md'}", flush=True)
    failed = [n for n, e in report["datasets"].items() if e["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
