"""The step skeleton every app shares: options, the model's metadata, opening a trained run,
saving and exporting its model, and where prepared data is cached.

An app's `pipeline.py` keeps only its domain steps; it names the pieces here:

    run, strategy, policy, data = training.start_run(APP, config, prepare)
    ...
    steps.save_model(run, model, VisionMeta(...), write_saved_model)       # end of train
    opened = steps.open_run(APP, config, options, VisionMeta, prepare, load_model)  # evaluate
    steps.export_step(APP, config, options, load_model, write_saved_model, "uint8 images")

`ModelMeta` is `model_meta.json`: each app subclasses it with its own typed fields, and reads it
back with `<Meta>.read(run)`, so a key is spelled in one place.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from shared.config import load_config, to_dict
from shared.io import DataError, atomic_dir, atomic_path, read_json, source_fingerprint, write_json
from shared.run import RunDir, config_digest


@dataclasses.dataclass
class StepOptions:
    """Command-line options that are not part of the config."""

    run: str | None = None  # run folder to use (default runs/<app>/latest)
    inputs: list[str] = dataclasses.field(default_factory=list)  # files or folders to score
    output: str | None = None  # where score/export/recommend write
    rejects: str | None = None  # where score writes rejected rows
    users: str | None = None  # recommend: comma-separated user ids, or a file of them
    k: int | None = None  # recommend: how many items per user
    host: str | None = None  # serve: address to listen on
    port: int | None = None  # serve: port to listen on
    max_batch: int | None = None  # serve: most rows per model call
    max_wait_ms: float | None = None  # serve: longest wait for a batch to fill
    trials: int | None = None  # tune: how many trials
    max_minutes: float | None = None  # tune: stop starting trials after this long

    @property
    def input(self) -> str:
        """The one input file of steps that take exactly one."""
        if len(self.inputs) != 1:
            raise DataError(f"expected one --input file, got {len(self.inputs)}")
        return self.inputs[0]


NO_OPTIONS = StepOptions()


@dataclasses.dataclass
class ModelMeta:
    """What every run's `model_meta.json` says; each app extends it with its own fields.

    Fields are JSON values (tuples come back as lists). A file written by another version of
    the app, with a field missing or unknown, is one clear error: retrain or use that version.
    """

    app: str  # the app that trained the run
    prepared: str  # the prepared-data folder the run was trained on
    input: str  # what the served model takes, in words
    train_seconds: float  # wall seconds of training, networks and baselines
    precision_policy: str  # the Keras dtype policy the networks trained under
    xla_compiled: Any  # whether the network compiled with XLA (per network where several)

    def write(self, run: RunDir) -> None:
        write_json(run.meta_path, dataclasses.asdict(self))

    @classmethod
    def read(cls, run: RunDir):
        if not run.meta_path.exists():
            raise DataError(f"{run.path}: no model_meta.json; is this a finished training run?")
        raw = read_json(run.meta_path)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = {
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(raw)), sorted(set(raw) - set(fields))
        if missing or unknown or raw.get("app") != cls.APP:
            found = f"app {raw.get('app')!r}, missing {missing}, unknown {unknown}"
            raise DataError(
                f"{run.meta_path}: not a {cls.APP} run of this version ({found}); retrain it"
            )
        return cls(**raw)

    APP = ""  # the app name a subclass reads; a class attribute, not a field


M = TypeVar("M", bound=ModelMeta)


@dataclasses.dataclass
class OpenRun(Generic[M]):
    """A trained run opened for evaluate or score: its folder, metadata, own config, data and
    model (data and model only when asked for)."""

    run: RunDir
    meta: M
    config: Any
    data: Any = None
    model: Any = None


def locate(app: str, config, options: StepOptions | None) -> RunDir:
    """The run a step uses: `--run`, else runs/<app>/latest under the config's run root."""
    return RunDir.locate(app, (options or NO_OPTIONS).run, config.run.root)


def open_run(
    app: str,
    config,
    options: StepOptions | None,
    meta_cls: type[M],
    prepare: Callable | None = None,
    load_model: Callable[[RunDir], Any] | None = None,
) -> OpenRun[M]:
    """Find the run, read its metadata and its own config, prepare its data again (what to
    show comes from this command's config; what the data is, from the run's) and load its
    model."""
    run = locate(app, config, options)
    meta = meta_cls.read(run)
    run_config = load_config(type(config), run.path / "config.yaml")
    data = prepare(run_config) if prepare else None
    model = load_model(run) if load_model else None
    return OpenRun(run, meta, run_config, data, model)


def save_model(
    run: RunDir,
    model,
    meta: ModelMeta,
    write_saved_model: Callable[[Any, str], None] | None,
) -> None:
    """Write the run's model (`model.keras`, then `saved_model/` through the app's
    `write_saved_model(model, folder)`), its metadata, and mark the run finished.

    Only the chief writes; every write is atomic. `model=None` (an app that saves several
    models itself) writes only the metadata.
    """
    if run.is_chief:
        if model is not None:
            with atomic_path(run.model_path, suffix=".keras") as tmp:
                model.save(tmp)
        if model is not None and write_saved_model is not None:
            with atomic_dir(run.saved_model_path) as tmp:
                write_saved_model(model, str(tmp))
        meta.write(run)
    run.finish()


def export_step(
    app: str,
    config,
    options: StepOptions | None,
    load_model: Callable[[RunDir], Any],
    write_saved_model: Callable[[Any, str], None],
    describe: str,
) -> Path:
    """The `export` step: the run's model as a SavedModel at `--output` (default the run's
    saved_model/), written atomically; `describe` says what its `serve` signature takes."""
    run = locate(app, config, options)
    output = (options or NO_OPTIONS).output
    target = Path(output) if output else run.saved_model_path
    model = load_model(run)
    with atomic_dir(target) as tmp:
        write_saved_model(model, str(tmp))
    print(f"export: SavedModel -> {target} ({describe})", flush=True)
    return target


def prepared_folder(app: str, config, sources=(), **extra) -> Path:
    """The cache folder of an app's prepared data: one per data config, seed, the size and
    time of every source file, and what else `extra` names (runs/<app>/prepared/<digest>)."""
    key = {"data": to_dict(config.data), "seed": config.train.seed, **extra}
    key["files"] = [source_fingerprint(Path(source)) for source in sources]
    return Path(config.run.root) / app / "prepared" / config_digest(key)[:12]


def report_rejects(rejects: list, folder: Path) -> None:
    """The one line `prepare` prints when files were rejected: how many, where the reasons
    are (`folder`/rejects.csv) and the first (path, reason)."""
    if rejects:
        path, reason = rejects[0][0], rejects[0][1]
        print(
            f"prepare: {len(rejects):,} file(s) rejected, reasons in {folder / 'rejects.csv'}; "
            f"first: {path}: {reason}",
            flush=True,
        )
