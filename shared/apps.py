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
    # What `make <name>` runs after prepare, train and evaluate, with the latest run: per
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


def demo_commands(app: App, extra: list[str]) -> list[list[str]]:
    """The `deepfield` argument lists `make <app>` runs after evaluate, each writing its output
    into the latest run (`extra`: the --config/--set arguments of the make command)."""
    return [
        [
            app.name,
            step,
            *extra,
            INPUT_FLAG[step],
            source,
            "--output",
            f"runs/{app.name}/latest/{name}",
        ]
        for step, source, name in app.demo
    ]


def main(argv: list[str]) -> int:
    """`names`: the app names, space-separated (for the Makefile); `demo APP [args]`: run the
    app's sample scoring commands."""
    if argv[:1] == ["names"]:
        print(" ".join(APPS))
        return 0
    if argv[:1] == ["demo"] and len(argv) >= 2:
        from shared.cli import main as cli

        for command in demo_commands(get(argv[1]), argv[2:]):
            code = cli(command)
            if code:
                return code
        return 0
    print("usage: python -m shared.apps names | demo APP [--config F] [--set k=v ...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
