"""Typed configs: dataclasses with defaults, loaded from YAML and `--set key=value` overrides.

Every value is checked against the field's type and its declared range before any work starts;
a bad value fails with one line naming the key and what is allowed.
"""

import dataclasses
import datetime
import math
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config problem, reported as one line that names the key."""


def bounded(default, *, low=None, high=None, low_open=False, choices=None, doc: str = ""):
    """A dataclass field with a default and an allowed range or set of values."""
    meta = {"low": low, "high": high, "low_open": low_open, "choices": choices, "doc": doc}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def listed(default: list):
    """A list-valued field (dataclasses need a factory for mutable defaults)."""
    return dataclasses.field(default_factory=lambda: list(default))


@dataclasses.dataclass
class TrainConfig:
    """How a network is fitted; shared by every app."""

    epochs: int = bounded(
        20, low=1
    )  # passes over the training data (early stopping may end sooner)
    batch_size: int = bounded(512, low=1)  # examples per step, summed over all replicas
    learning_rate: float = bounded(1e-3, low=0.0, low_open=True)  # peak rate after warm-up
    warmup_epochs: float = bounded(1.0, low=0.0)  # linear warm-up length before the cosine decay
    min_learning_rate_ratio: float = bounded(0.01, low=0.0, high=1.0)  # cosine floor / peak
    weight_decay: float = bounded(1e-4, low=0.0)  # AdamW decoupled weight decay
    patience: int = bounded(4, low=0)  # epochs without improvement before early stopping (0: off)
    mixed_precision: bool = False  # mixed_float16 on GPU, mixed_bfloat16 on CPU
    xla: bool = False  # compile the train step with XLA (jit_compile)
    steps_per_execution: int = bounded(
        8, low=1
    )  # train steps per compiled call (fewer Python round trips)
    max_minutes: float = bounded(0.0, low=0.0)  # per network: stop after the epoch that passes
    # this many minutes of training (0: no limit); the best weights so far are kept
    seed: int = bounded(42, low=0)  # seeds Python, NumPy and TensorFlow
    verbose: int = bounded(
        2, choices=[0, 1, 2]
    )  # Keras fit verbosity: 0 silent, 1 bar, 2 line per epoch


@dataclasses.dataclass
class ScheduledTrainConfig(TrainConfig):
    """TrainConfig with the schedule, range-test and callback switches (issue 19). An app that
    wants them uses this as its `train` section; every switch defaults to what a plain
    TrainConfig does, so the two train the same until a switch is set."""

    # cosine: linear warm-up over `warmup_epochs`, then cosine decay; one_cycle: Smith's and
    # fastai's (up from peak/25 over the first quarter, cosine down to peak/1e4)
    schedule: typing.Literal["cosine", "one_cycle"] = "cosine"
    one_cycle_warmup: float = bounded(0.25, low=0.0, high=0.9)  # one_cycle: fraction rising
    lr_find: bool = False  # a range test before training picks the peak `learning_rate`
    lr_find_steps: int = bounded(100, low=10)  # its steps (rates from 1e-7 to 10, geometric)
    lr_find_pick: typing.Literal["valley", "steep", "minimum"] = (
        "valley"  # which suggestion is used
    )
    # Epochs between BackupAndRestore saves (a killed run resumes from the last one); 0: no
    # backup, so a killed run trains the network again from its first epoch.
    backup_every: int = bounded(1, low=0)
    checkpoint_best: bool = True  # also write checkpoints/<name>.best.weights.h5 when the
    # monitored value improves (early stopping keeps the best weights in memory either way)
    tensorboard: bool = True  # write TensorBoard event files under tensorboard/
    # mixup (Zhang et al. 2018): blend each training image and its one-hot target with another
    # of the batch, weight ~ Beta(mixup, mixup); 0: off (shared.training.soft_targets)
    mixup: float = bounded(0.0, low=0.0, high=10.0)


@dataclasses.dataclass
class ExportConfig:
    """What `export` writes (image apps): a SavedModel, or LiteRT (TFLite) files for the edge."""

    format: typing.Literal["savedmodel", "tflite"] = "savedmodel"  # tflite: float16 and int8 files
    # with their accuracy beside the Keras model's on the test split
    representative_images: int = bounded(200, low=1)  # train images that calibrate int8


@dataclasses.dataclass
class RunConfig:
    """Where run folders go."""

    root: str = "runs"  # runs/<app>/<run-id>/ are created under this folder
    run_id: str = ""  # empty: a new id from the time and the config hash (a rerun resumes)


@dataclasses.dataclass
class TrackConfig:
    """Experiment tracking (MLflow, an optional extra: `pip install -e ".[track]"`)."""

    mlflow: bool = False  # log params, per-epoch and final metrics, plots and the model (also
    # on whenever $DEEPFIELD_MLFLOW_URI is set)
    uri: str = ""  # tracking URI or folder; empty: $DEEPFIELD_MLFLOW_URI, else ./mlruns
    experiment: str = ""  # MLflow experiment name; empty: deepfield-<app>
    log_model: bool = True  # upload model.keras as an artifact (off: metrics and plots only)


TUNE_RANGE_KEYS = {"min", "max", "log", "step"}


@dataclasses.dataclass
class TuneConfig:
    """`tune`: a KerasTuner search over config keys; each trial is a normal run."""

    algorithm: typing.Literal["hyperband", "bayesian", "random"] = "bayesian"
    # config key (`train.learning_rate`) -> its range: {min, max, log, step} for numbers (an
    # integer key draws integers), {values: [...]} for a choice (lists allowed: `[16, 32]`)
    space: dict[str, dict[str, typing.Any]] = dataclasses.field(default_factory=dict)
    leaderboard: str = ""  # the leaderboard of metrics.json that holds the objective (recsys:
    # rating or retrieval); empty: the run's first
    objective_model: typing.Literal["best_network", "selected"] = "best_network"  # best_network:
    # the best validation score among the run's networks (what a network's keys move);
    # selected: the score of the model the run ships (it may be a baseline or a blend)
    hyperband_factor: int = bounded(3, low=2)  # hyperband: each round keeps 1/factor of trials

    def validate(self) -> None:
        for key, spec in self.space.items():
            check_tune_range(key, spec)


def check_tune_range(key: str, spec: dict) -> None:
    """One ConfigError naming `tune.space.<key>` when its range is not {min, max[, log, step]}
    with min < max (min > 0 on a log scale) or {values: [one or more]}."""
    where = f"tune.space.{key}"
    if "values" in spec:
        values = spec["values"]
        if set(spec) != {"values"} or not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: a choice is {{values: [a, b, ...]}}, got {spec!r}")
        return
    unknown = sorted(set(spec) - TUNE_RANGE_KEYS)
    if unknown or not {"min", "max"} <= set(spec):
        raise ConfigError(
            f"{where}: a range is {{min, max}} with optional log and step, or {{values: [...]}}; "
            f"got {spec!r}"
        )
    low, high = spec["min"], spec["max"]
    low, high = _float_or_none(str(low)), _float_or_none(str(high))
    if low is None or high is None or isinstance(spec["min"], bool) or not low < high:
        raise ConfigError(f"{where}: expected numbers with min < max, got {spec!r}")
    if not isinstance(spec.get("log", False), bool):
        raise ConfigError(f"{where}: log is true or false, got {spec['log']!r}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log range needs min > 0, got {spec['min']!r}")
    step = _float_or_none(str(spec.get("step", 1)))
    if step is None or step <= 0:
        raise ConfigError(f"{where}: step must be a number > 0, got {spec.get('step')!r}")


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None):
    """Build a `cls` instance from defaults, then a YAML file, then `key=value` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = _read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        data = loaded or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        _assign(data, key.strip().split("."), SetValue(_parse_scalar(raw), raw.strip()))
    return from_dict(cls, data)


class SetValue(typing.NamedTuple):
    """A `--set` value: what YAML reads it as, and the text typed. A string-typed key takes the
    text (`--set data.negative_class=0` means the class written `0`, `=1.10` keeps `1.10`);
    every other key takes the parsed value."""

    value: object
    raw: str


def _read_yaml(path: Path):
    try:
        # utf-8-sig: an editor's byte-order mark is not part of the first key.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} on line {line}); "
            "save the config as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc


def from_dict(cls: type, data: dict, prefix: str = ""):
    """Recursively build dataclass `cls` from `data`, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; allowed keys here: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = prefix + name
        values[name] = _check(hints[name], value, key)
        _check_range(fields[name].metadata, values[name], key)
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        validate()
    return instance


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _check(hint, value, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(value, SetValue):
        value = _typed_text(hint, origin, args, value)
    if hint is typing.Any:  # free-form values (a tune.space range); their reader checks them
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _check(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(options) == 1 else f"{key}: expected {_describe(hint)}, got {value!r}"
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_describe(args[0])}, got {value!r}")
        return [_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _check(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _float_or_none(value) is not None:
            value = _float_or_none(value)  # PyYAML reads `1e-3` as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # NaN passes every range check: a NaN rate trains to NaN
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `--set data.positive_label=2` means the label written `2`
        elif isinstance(value, datetime.date):
            value = value.isoformat()  # YAML reads `2019-06-15` as a date: it meant the text
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")  # a bug in a config class


def _typed_text(hint, origin, args, value: SetValue):
    """What a `--set` value means for a key of type `hint`: a union decides per option; a
    list or mapping (`[a, b]`) is structure, never text."""
    if isinstance(value.value, list | dict):
        return value.value
    if origin in (typing.Union, types.UnionType):
        return None if value.value is None and type(None) in args else value
    if hint is str or (origin is typing.Literal and value.raw in args):
        return value.raw
    return value.value


def _check_range(meta, value, key: str) -> None:
    if value is None or not meta:
        return
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
    items = value if isinstance(value, list) else [value]
    for item in items:
        if choices is not None and item not in choices:
            raise ConfigError(
                f"{key}: expected one of {', '.join(map(str, choices))}, got {item!r}"
            )
        if low is not None and (item < low or (meta.get("low_open") and item == low)):
            bound = f"> {low}" if meta.get("low_open") else f">= {low}"
            raise ConfigError(f"{key}: must be {bound}, got {item!r}")
        if high is not None and item > high:
            raise ConfigError(f"{key}: must be <= {high}, got {item!r}")


def _float_or_none(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _parse_scalar(raw: str):
    # YAML scalar rules give `3` -> int, `1e-3` -> float, `true` -> bool, `[a, b]` -> list.
    # A value YAML reads as nothing (`|`, `>`, a comment) but that is not blank stays the text
    # typed: `--set data.label_delimiter=|` means the bar.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    return raw if value in (None, "") and raw.strip() not in ("", "null", "~") else value


def _assign(data: dict, keys: list[str], value) -> None:
    node = data
    for part in keys[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {part} is not a section")
        node = child
    node[keys[-1]] = value
