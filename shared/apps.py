"""The one list of Deepfield apps: the CLI, `make bench`, `make quality`, `make gpu-check` and
the Makefile all read it. Adding an app is one entry here plus its package (CONTRIBUTING.md).

Standard library only, and nothing imported at load time: the Makefile runs
`python3 -m shared.apps names` before the virtual environment exists.
"""

import dataclasses
import sys


@dataclasses.dataclass(frozen=True)
class App:
    """One app: its CLI name, its package and what `make <name>` runs on its sample data."""

    name: str  # the CLI and Makefile name: `deepfield <name> <step>`, `make <name>`
    package: str  # the Python package holding config.py, pipeline.py, bench.py, ...
    aliases: tuple[str, ...] = ()  # other names people use for it (`make quality APPS=text`)
    extra_steps: tuple[tuple[str, str], ...] = ()  # steps beyond the five: (name, help)
    # What `make <name>` runs after prepare, train and evaluate, with the run it trained: per
    # command (step, its sample input, the output's file name in the run folder).
    demo: tuple[tuple[str, str, str], ...] = ()

    @property
    def pipeline(self) -> str:
        return f"{self.package}.pipeline"

    @property
    def bench(self) -> str:
        return f"{self.package}.bench"


REGISTRY = (
    App("fraud", "apps.fraud", demo=(("score", "datasets/fraud/score_sample.csv", "scores.csv"),)),
    App("vision", "apps.vision", demo=(("score", "datasets/vision/samples", "scores.csv"),)),
    App(
        "recsys",
        "apps.recsys",
        extra_steps=(
            ("recommend", "top-K items for users, popularity fallback for unknown users"),
            ("cv", "train and evaluate on each fold of a cross-validation (u1..u5 files)"),
        ),
        demo=(
            ("recommend", "datasets/recsys/users.txt", "recommendations.csv"),
            ("score", "datasets/recsys/pairs.csv", "pair_scores.csv"),
        ),
    ),
    App("medical", "apps.medical", demo=(("score", "datasets/medical/samples", "scores.csv"),)),
    App(
        "nlp",
        "apps.nlp.text",
        aliases=("text",),
        extra_steps=(
            (
                "pretrain",
                "masked-token pretraining of the encoder on the training and unlabelled texts",
            ),
        ),
        demo=(("score", "datasets/nlp/score_sample.csv", "scores.csv"),),
    ),
    App("speech", "apps.nlp.speech", demo=(("score", "datasets/speech/samples", "scores.csv"),)),
)
APPS = {app.name: app for app in REGISTRY}
INPUT_FLAG = {"score": "--input", "recommend": "--users"}


def get(name: str) -> App:
    """The app called `name` (or one of its aliases); one clear error for an unknown name."""
    for app in REGISTRY:
        if name == app.name or name in app.aliases:
            return app
    raise KeyError(f"unknown app {name!r}; apps: {', '.join(APPS)}")


def demo_commands(app: App, extra: list[str], run: str) -> list[list[str]]:
    """The `deepfield` argument lists `make <app>` runs after evaluate, each scoring the
    sample data with `run` and writing its output into that run's folder (`extra`: the
    --config/--set arguments of the make command)."""
    return [
        [
            app.name,
            step,
            *extra,
            "--run",
            run,
            INPUT_FLAG[step],
            source,
            "--output",
            f"{run}/{name}",
        ]
        for step, source, name in app.demo
    ]


def pipeline(name: str, extra: list[str]) -> int:
    """`make <app>`: prepare, train, then evaluate and the sample scoring commands with the
    run this train made (passed along by path, never `latest`, which another run may have
    moved meanwhile). Stops at the first step that fails, with its exit code."""
    from shared.cli import main as cli
    from shared.cli import run_step

    app = get(name)
    code = cli([app.name, "prepare", *extra])
    if code:
        return code
    code, run = run_step([app.name, "train", *extra])
    if code:
        return code
    commands = [[app.name, "evaluate", *extra, "--run", str(run.path)]]
    for command in commands + demo_commands(app, extra, str(run.path)):
        code = cli(command)
        if code:
            return code
    return 0


def main(argv: list[str]) -> int:
    """`names`: the app names, space-separated (for the Makefile); `pipeline APP [args]`: the
    app's whole pipeline on its sample data."""
    if argv[:1] == ["names"]:
        print(" ".join(APPS))
        return 0
    if argv[:1] == ["pipeline"] and len(argv) >= 2:
        return pipeline(argv[1], argv[2:])
    print("usage: python -m shared.apps names | pipeline APP [--config F] [--set k=v ...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
