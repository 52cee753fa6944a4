"""The training core: seeding, devices and distribution strategy, precision, schedules, callbacks.

The same call trains on a CPU, one GPU, several GPUs (MirroredStrategy) and several machines
(MultiWorkerMirroredStrategy, whenever TF_CONFIG is set).
"""

import dataclasses
import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from shared import tracking
from shared.config import ConfigError, ScheduledTrainConfig, TrainConfig, to_dict
from shared.io import read_json, write_json, write_table
from shared.run import RunDir


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so a run can be repeated."""
    keras.utils.set_random_seed(seed)


def start_run(app: str, config, prepare) -> tuple[RunDir, tf.distribute.Strategy, str, object]:
    """Seed, pick the distribution strategy and precision policy, `prepare(config)` the data,
    then open the run folder (a new one, or the unfinished run of the same config to resume).
    Returns (run, strategy, policy, data).

    The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF ops run.
    The data comes before the run folder, so bad data stops with no empty run left behind;
    with tracking on (`track.mlflow`), the run is also an MLflow run (`run.tracker`).
    """
    if tracking.enabled(tracking.track_of(config)):
        tracking.import_mlflow()  # a missing MLflow is one line before any work
    seed_everything(config.train.seed)
    strategy = select_strategy()
    policy = set_precision(config.train.mixed_precision)
    data = prepare(config)
    run = RunDir.create(
        app, to_dict(config), config.run.root, config.run.run_id, is_chief=is_chief()
    )
    run.tracker = tracking.Tracker.start(app, config, run)
    print(
        f"train: run folder {run.path}{' (resuming)' if run.resumed else ''}; "
        f"{strategy.num_replicas_in_sync} replica(s), policy {policy}",
        flush=True,
    )
    return run, strategy, policy, data


REDUCIBLE = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)  # all-reducible


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3.15's `fit` hands it.

    With two or more workers, Keras reduces a whole (features, target) batch in one call to
    build the model, and each step's scalar logs with `axis=0`; the collective all-reduce takes
    only single values, and a scalar has no axis 0, so `fit` failed on every multi-worker run.
    Reducing leaf by leaf, scalars over replicas only, and leaving types the collective cannot
    reduce (uint8 images) as they are, is what those calls mean.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_leaf(leaf):
            local = self.experimental_local_results(leaf)[0]
            if getattr(local, "dtype", None) is not None and local.dtype not in REDUCIBLE:
                return local  # raw uint8 images or strings: Keras only needs their shape here
            leaf_axis = (
                None
                if getattr(local, "shape", None) is not None and local.shape.rank == 0
                else axis
            )
            return parent.reduce(reduce_op, leaf, leaf_axis)

        return tf.nest.map_structure(reduce_leaf, value)


def select_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG is set, Mirrored for several GPUs, else the default."""
    if os.environ.get("TF_CONFIG"):
        # The strategy starts TensorFlow's coordination service, whose preemption notifier
        # takes SIGTERM over and only records it: a worker told to stop trained on until it
        # was killed. Python's own handler (the CLI's exit, or the default) is put back.
        handler = signal.getsignal(signal.SIGTERM)
        strategy = MultiWorkerStrategy()
        if handler is not None:  # None: a handler set outside Python, left to its owner
            signal.signal(signal.SIGTERM, handler)
        return strategy
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """True unless TF_CONFIG names this process as a non-chief worker."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    task = json.loads(raw).get("task", {})
    cluster = json.loads(raw).get("cluster", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if "chief" in cluster:
        return kind == "chief"
    return kind == "worker" and index == 0


# What KerasHub's `from_preset` reads from a preset folder: the config, then the weights (one
# file, or the index of a sharded set).
PRESET_CONFIG = "config.json"
PRESET_WEIGHTS = ("model.weights.h5", "model.weights.json")


def local_preset(value: str, key: str) -> str:
    """`value` as the absolute path of a local KerasHub preset folder, else one ConfigError
    naming the config `key`.

    `from_preset` downloads whatever is not an existing folder: a `kaggle://` or `hf://`
    handle, or a bare preset name, which KerasHub looks up among its Kaggle presets even when a
    folder of that name exists. Nothing is ever downloaded here, so only a folder written by
    `save_to_preset` is let through, as an absolute path that no preset lookup matches.
    """
    path = Path(value).expanduser()
    if "://" in value:
        why = "a download handle"
    elif not path.is_dir():
        why = "not a folder (a preset name would be a download)"
    elif not (path / PRESET_CONFIG).is_file():
        why = f"a folder without {PRESET_CONFIG}"
    elif not any((path / name).is_file() for name in PRESET_WEIGHTS):
        why = f"a folder without {' or '.join(PRESET_WEIGHTS)}"
    else:
        return str(path.resolve())
    raise ConfigError(
        f"{key}: {value!r} is {why}; nothing is downloaded, so give a local KerasHub preset "
        "folder (one written by save_to_preset)"
    )


def set_precision(mixed: bool) -> str:
    """Set the global dtype policy: mixed_float16 on GPU, mixed_bfloat16 on CPU, else float32."""
    if not mixed:
        policy = "float32"
    elif tf.config.list_physical_devices("GPU"):
        policy = "mixed_float16"
    else:
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _switch(config, name: str):
    """A ScheduledTrainConfig switch, or its default for a plain TrainConfig."""
    default = {f.name: f.default for f in dataclasses.fields(ScheduledTrainConfig)}[name]
    return getattr(config, name, default)


ONE_CYCLE_DIV, ONE_CYCLE_FINAL_DIV = 25.0, 1e4  # start at peak / 25, end at peak / 1e4 (fastai)


def one_cycle(
    peak: float, total_steps: int, warmup_fraction: float = 0.25
) -> keras.optimizers.schedules.CosineDecay:
    """The one-cycle rate (Smith 2018; fastai's fit_one_cycle): up from `peak / 25` to `peak`
    over the first `warmup_fraction` of the steps, then cosine annealing to `peak / 1e4`.

    Built from Keras's own CosineDecay (whose warm-up is linear, as in Smith's paper; fastai
    warms up along a cosine): a saved model's optimizer then deserialises in a process that
    imports only keras, which a custom schedule class would break (the medical app's exports
    are loaded that way). fastai also cycles Adam's beta_1; Keras's Adam takes a constant one.
    """
    total = max(2, int(total_steps))
    rise = min(total - 1, max(1, int(round(warmup_fraction * total))))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / ONE_CYCLE_DIV,
        decay_steps=total - rise,
        alpha=1.0 / ONE_CYCLE_FINAL_DIV,
        warmup_target=peak,
        warmup_steps=rise,
    )


def learning_rate_schedule(
    config: TrainConfig, steps_per_epoch: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """`train.schedule`: cosine (linear warm-up to the peak rate, then cosine decay to
    `min_learning_rate_ratio` of it; a plain TrainConfig's only one) or one_cycle."""
    total = max(1, config.epochs * steps_per_epoch)
    if _switch(config, "schedule") == "one_cycle":
        return one_cycle(config.learning_rate, total, _switch(config, "one_cycle_warmup"))
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.01 if warmup else config.learning_rate,
        decay_steps=total - warmup,
        alpha=config.min_learning_rate_ratio,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int, model: keras.Model | None = None
) -> keras.optimizers.Optimizer:
    """AdamW on the config's schedule; with `model`, its biases and normalisation scales and
    offsets (the variables of fewer than two dimensions) are left out of the weight decay.

    Decaying those pulls the normalisation towards zero for no regularisation gain (the common
    practice, as in timm and fastai, leaves them out), and Keras evaluates the learning-rate
    schedule once per decayed variable while it traces a step: on a four-stage CNN the
    exclusion took a third off the first epoch's tracing. `train.weight_decay=0` is plain Adam,
    with no decay ops at all.
    """
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer at compile time.
    rate = learning_rate_schedule(config, steps_per_epoch)
    if not config.weight_decay:  # AdamW with no decay is Adam
        return keras.optimizers.Adam(learning_rate=rate)
    optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay)
    if model is not None:
        flat = [v for v in model.trainable_variables if len(v.shape) < 2]
        optimizer.exclude_from_weight_decay(var_list=flat)
    return optimizer


def compile_model(
    model: keras.Model, config: TrainConfig, n_rows: int, loss, metrics=None
) -> keras.Model:
    """Compile with AdamW (Adam without weight decay) on the config's schedule and its XLA and
    step switches.

    Under several workers one step runs per call: Keras 3.15's multi-step loop feeds a
    placeholder that the collective strategy never fills, and the run fails.
    """
    multi_worker = isinstance(tf.distribute.get_strategy(), MultiWorkerStrategy)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch(n_rows, config.batch_size), model),
        loss=loss,
        metrics=metrics,
        jit_compile=config.xla,
        steps_per_execution=1 if multi_worker else config.steps_per_execution,
    )
    return model


def xla_split(
    model: keras.Model, config: TrainConfig, boundary: list[str]
) -> tuple[keras.Model | None, keras.Model]:
    """(head, core): with `xla` on, the preprocessing XLA cannot compile, split from the rest.

    Keras compiles a model with XLA only when every layer supports it, and string lookups,
    text vectorisation and random augmentation do not, so one such layer silently turned XLA
    off for the whole network. The head (inputs up to the outputs of the `boundary` layers,
    which may name inputs the core takes as they are) then runs in the tf.data pipeline and
    the core, which shares the model's layers and weights, trains compiled. Without `xla`, or
    when every layer compiles, the head is None.
    """
    if not config.xla or _supports_jit(model):
        return None, model
    found = _outputs_in_graph(model, boundary)
    missing = [name for name in boundary if name not in found]
    if missing:
        raise ValueError(f"no layer named {missing} in {model.name}'s graph")
    cut = [found[name] for name in boundary]
    cut = cut[0] if len(cut) == 1 else cut
    # A core layer may still refuse XLA (an LSTM on cuDNN): Keras then warns and trains it
    # uncompiled, and the app records `jit_compile` as it ended up.
    return keras.Model(model.input, cut), keras.Model(cut, model.output)


def _outputs_in_graph(model: keras.Model, names: list[str]) -> dict:
    """The output tensor, in this model's own graph, of each layer named in `names`.

    `layer.output` will not do for a layer shared by several models (one vectorizer for two
    text networks): it is the output of the layer's first call, in another model's graph.
    """
    found, seen, stack = {}, set(), list(keras.tree.flatten(model.output))
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        if operation.name in names:
            found.setdefault(operation.name, tensor)
        stack.extend(operation._inbound_nodes[node_index].input_tensors)
    return found


def _supports_jit(model: keras.Model) -> bool:
    return all(getattr(layer, "supports_jit", True) for layer in _all_layers(model))


def _all_layers(layer):
    yield layer
    for inner in getattr(layer, "layers", []):
        yield from _all_layers(inner)


def through_head(
    head: keras.Model | None, dataset: tf.data.Dataset | None, training: bool
) -> tf.data.Dataset | None:
    """`dataset` with the head applied to its inputs (random augmentation only if training)."""
    if head is None or dataset is None:
        return dataset

    def apply(inputs, *rest):
        out = head(inputs, training=training)
        # tf.data would stack a list of same-shaped outputs into one tensor; a tuple stays apart.
        return (tuple(out) if isinstance(out, list) else out, *rest)

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_callbacks(run: RunDir, config: TrainConfig, name: str, monitor: str, mode: str) -> list:
    """Early stopping, best checkpoint, BackupAndRestore, TensorBoard, the CSV history and,
    when the run is tracked, the per-epoch MLflow metrics.

    `name` keeps the files of several networks trained in one run apart. The switches of a
    ScheduledTrainConfig (`backup_every`, `checkpoint_best`, `tensorboard`) leave out the
    file writers a run does not need: on a small network each costs a second or two a run.
    """
    checkpoints = run.subdir("checkpoints")
    callbacks = []
    every = _switch(config, "backup_every")
    if every:
        callbacks.append(EveryEpochs(str(run.path / "backup" / name), every, config.epochs))
    if _switch(config, "checkpoint_best"):
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(checkpoints / f"{name}.best.weights.h5"),
                monitor=monitor,
                mode=mode,
                save_best_only=True,
                save_weights_only=True,
            )
        )
    callbacks.append(keras.callbacks.CSVLogger(str(run.path / f"history-{name}.csv"), append=True))
    if _switch(config, "tensorboard"):
        callbacks.append(
            keras.callbacks.TensorBoard(
                str(run.path / "tensorboard" / name), update_freq="epoch", write_graph=False
            )
        )
    if run.tracker is not None:
        callbacks.append(run.tracker.epoch_logger(name))
    if config.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=config.patience, restore_best_weights=True
            )
        )
    return [_epoch_only(callback) for callback in callbacks]


class EveryEpochs(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that saves after every `every`-th epoch (and the last one): a killed
    run resumes from the last save and loses at most `every - 1` epochs."""

    def __init__(self, backup_dir: str, every: int, epochs: int):
        super().__init__(backup_dir)
        self.every, self.epochs = every, epochs

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            super().on_epoch_end(epoch, logs)


def _epoch_only(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    """Remove the per-batch hook of a callback that only acts at epoch ends.

    Keras fetches every step's logs synchronously as soon as one callback has a batch hook;
    BackupAndRestore, ModelCheckpoint and TensorBoard have one even when they save per epoch,
    which cost about a fifth of the training throughput on a small network.
    """
    callback.on_train_batch_end = keras.callbacks.Callback.on_train_batch_end.__get__(callback)
    return callback


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    """Per-class loss weights: 'balanced' (n / (k * n_c)), 'sqrt' (its square root) or 'none'."""
    if mode == "none":
        return None
    classes, counts = np.unique(np.asarray(y).astype(int), return_counts=True)
    balanced = len(y) / (len(classes) * counts)
    weights = np.sqrt(balanced) if mode == "sqrt" else balanced
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}


class Diverged(RuntimeError):
    """A network's loss or weights became NaN, infinite or exploded: its training stopped, and it
    never ships. `learning_rate` is the schedule's rate when it happened, `peak` the configured one.
    """

    def __init__(
        self, network: str, epoch: int, learning_rate: float, what: str, peak: float | None = None
    ):
        self.network, self.epoch, self.what = network, epoch, what
        self.learning_rate, self.peak = learning_rate, peak
        rate = f"learning rate {learning_rate:.3g}"
        if peak is not None and not math.isclose(peak, learning_rate, rel_tol=1e-3):
            rate += f" on its schedule to a peak of {peak:.3g}"
        super().__init__(
            f"{network} diverged: {what} at epoch {epoch} ({rate}); "
            "its training stopped and it is marked failed"
        )


class TrainingFailed(RuntimeError):
    """Every network of a run failed: the run exits non-zero and never becomes `latest`."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose loss or weights are not finite, or
    whose training loss has exploded past EXPLODED times the loss before training (measured on
    one batch, as `initial_loss`).

    An optimiser driven far too hard (AdamW at a learning rate of 1e3) often keeps its loss
    finite but astronomically high: that network has diverged as surely as a NaN one. Checked
    per epoch, not per batch: a batch hook would make Keras fetch every step's logs (see
    `_epoch_only`). The epoch's mean loss is NaN as soon as one batch's was.
    """

    EXPLODED = 1000.0

    def __init__(self, initial_loss: float | None = None, peak: float | None = None):
        super().__init__()
        self.initial_loss, self.peak = initial_loss, peak
        self.failure: dict | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        bad = [k for k in ("loss", "val_loss") if k in logs and not math.isfinite(logs[k])]
        initial, loss = self.initial_loss, logs.get("loss")
        if bad:
            what = f"non-finite {bad[0]} ({logs[bad[0]]})"
        elif not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.weights):
            what = "non-finite weights"
        elif initial and loss is not None and abs(loss) > self.EXPLODED * abs(initial):
            what = f"loss {loss:.3g}, over {self.EXPLODED:g}x its {initial:.3g} before training"
        else:
            return
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.failure = {"epoch": epoch + 1, "learning_rate": rate, "what": what, "peak": self.peak}
        self.model.stop_training = True


def initial_loss(model: keras.Model, data: tf.data.Dataset) -> float | None:
    """The loss on one batch before training: what an exploded loss is measured by.

    Taken from the validation data when there is some: reading a batch of the shuffled
    training data would move every later epoch's order, and the guard must not change what a
    run learns. Skipped under several workers, where one batch cannot be shared out.
    """
    if isinstance(tf.distribute.get_strategy(), MultiWorkerStrategy):
        return None
    loss = model.evaluate(data.take(1), verbose=0, return_dict=True).get("loss")
    return float(loss) if loss is not None and math.isfinite(loss) and loss > 0 else None


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the first epoch that ends past `minutes` (`train.max_minutes`)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.minutes, self.stopped_epoch = minutes, None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.minutes and time.perf_counter() - self.start >= 60 * self.minutes:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True


class EpochScore(keras.callbacks.Callback):
    """Adds `val_<name>` = `score(model)` to each epoch's logs (and so to the history).

    For metrics Keras has no exact equivalent of (average precision, macro ROC-AUC,
    Recall@K): the history then holds the same number `evaluate` reports, so the time a network
    takes to reach its baseline is read off it in the baseline's own units.
    """

    def __init__(self, name: str, score):
        super().__init__()
        self.name, self.score = name, score

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # After the divergence guard: a model it stopped may output NaN, which the score's own
        # checks (scikit-learn's) would turn into a traceback instead of the one-line failure.
        stopped = self.model.stop_training
        logs[f"val_{self.name}"] = float("nan") if stopped else float(self.score(self.model))


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    run: RunDir,
    config: TrainConfig,
    name: str,
    monitor: str = "val_loss",
    mode: str = "min",
    class_weight: dict | None = None,
    examples: int | None = None,
    scores: list[EpochScore] = (),
) -> keras.Model:
    """Fit with the shared callbacks, resuming after a kill; skip if this network already finished.

    With `examples` (rows per epoch), history gains each epoch's training seconds and examples/s;
    each of `scores` adds its `val_<name>` column (before the callbacks that read the logs).
    A non-finite loss or weight stops training and raises `Diverged`; `train.max_minutes`
    stops it at the end of the epoch that passes the budget. What happened is recorded in
    checkpoints/<name>.json (`fit_summary`).

    The finished network's weights are kept in checkpoints/<name>.final.weights.h5 so a run that
    was killed while training a later network does not train this one again.
    """
    final = run.subdir("checkpoints") / f"{name}.final.weights.h5"
    summary = fit_summary(run, name)
    if summary and summary["status"] == "failed":  # a resumed run does not retry a diverged one
        raise Diverged(
            name, summary["epoch"], summary["learning_rate"], summary["what"], summary.get("peak")
        )
    if final.exists():
        model.load_weights(str(final))
        print(f"[{name}] already trained in this run; loaded {final.name}", flush=True)
        return model
    reference = validation if validation is not None else train
    guard = DivergenceGuard(initial_loss(model, reference), config.learning_rate)
    budget = TimeBudget(config.max_minutes)
    start = time.perf_counter()
    callbacks = [EpochThroughput(examples), guard, *scores, budget]
    model.fit(
        train,
        validation_data=validation,
        epochs=config.epochs,
        callbacks=callbacks + make_callbacks(run, config, name, monitor, mode),
        class_weight=class_weight,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=config.verbose,
    )
    _collect_history(run)
    record = {"seconds": round(time.perf_counter() - start, 2), "monitor": monitor}
    if guard.failure:
        _write_summary(run, name, {"status": "failed", **guard.failure, **record})
        error = Diverged(name, **guard.failure)
        print(f"train: {error}", flush=True)
        raise error
    if budget.stopped_epoch:
        record["stopped_by_time_budget_at_epoch"] = budget.stopped_epoch
        print(
            f"[{name}] stopped by train.max_minutes={config.max_minutes:g} after epoch "
            f"{budget.stopped_epoch}; best weights kept",
            flush=True,
        )
    model.save_weights(str(final))
    _write_summary(run, name, {"status": "ok", **record})
    return model


def fit_summary(run: RunDir, name: str) -> dict | None:
    """How network `name`'s training ended: status ok or failed, seconds, and why it stopped."""
    path = run.path / "checkpoints" / f"{name}.json"
    return read_json(path) if path.exists() else None


def _write_summary(run: RunDir, name: str, summary: dict) -> None:
    if run.is_chief:
        write_json(run.subdir("checkpoints") / f"{name}.json", summary)


def best_network(scores: dict[str, float], mode: str = "min") -> str | None:
    """The name with the best finite score (`mode` min or max); None when none is finite.

    A NaN compares false with everything, so `min` over NaNs depends on the order of the keys:
    non-finite scores are left out first.
    """
    finite = {n: s for n, s in scores.items() if s is not None and math.isfinite(s)}
    if not finite:
        return None
    pick = min if mode == "min" else max
    return pick(finite, key=finite.get)


def fail_run(run: RunDir, title: str, failures: dict[str, str]) -> None:
    """Record that every network failed (metrics.json, model card) and raise TrainingFailed.

    The run is not marked finished, so it never becomes `latest` and nothing scores with it.
    """
    from shared.model_card import write_model_card

    if run.tracker is not None:
        run.tracker.failed()
    if run.is_chief:
        write_json(run.metrics_path, {"status": "failed", "failed_networks": failures})
        lines = "\n".join(f"- `{name}`: {reason}" for name, reason in failures.items())
        write_model_card(
            run.card_path,
            title,
            {
                "Status: failed": "Every network of this run failed to train; there is no "
                f"model to use.\n\n{lines}\n\nLower `train.learning_rate` (or the network's "
                "own rate) and train again."
            },
        )
    names = ", ".join(failures)
    raise TrainingFailed(f"every network failed ({names}); the run at {run.path} does not ship")


class EpochThroughput(keras.callbacks.Callback):
    """Adds `train_seconds` (validation excluded) and `examples_per_s` to each epoch's logs."""

    def __init__(self, examples: int | None):
        super().__init__()
        self.examples = examples

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.stop = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if getattr(self, "start", None) is not None and self.stop is None:
            self.stop = time.perf_counter()  # validation starts: training of this epoch is done

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self.stop or time.perf_counter()) - self.start
        if logs is not None:
            logs["train_seconds"] = seconds
            if self.examples:
                logs["examples_per_s"] = self.examples / seconds


class EpochTimer(keras.callbacks.Callback):
    """Records when each epoch ends; benchmarks read the steady epoch time from it."""

    def on_train_begin(self, logs=None):
        self.ends = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())

    def steady_epoch_s(self) -> float:
        return float(np.median(np.diff(self.ends)[1:]))  # epoch 1 includes tracing


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of the trainable weights, to check that workers ended with the same model.

    Non-trainable state such as BatchNormalization's moving statistics is left out: each worker
    accumulates it from its own shard of the data.
    """
    digest = hashlib.sha256()
    for weight in model.trainable_weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def float32_twin(model: keras.Model) -> keras.Model:
    """The same model and weights with every layer computing in float32.

    A model trained under a mixed policy saves that policy in each layer's config; rebuilding
    from the config with the policies set to float32 gives the reference its predictions are
    checked against.
    """

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [to_float32(value) for value in node]
        return node

    twin = model.__class__.from_config(to_float32(model.get_config()))
    twin.set_weights(model.get_weights())
    # Lookup tables are not weights: an adapted vocabulary is copied across on its own.
    for ours, theirs in zip(_all_layers(twin), _all_layers(model), strict=True):
        if hasattr(theirs, "get_vocabulary") and hasattr(ours, "set_vocabulary"):
            ours.set_vocabulary(theirs.get_vocabulary())
    return twin


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return max(1, math.ceil(n_rows / batch_size))


def _collect_history(run: RunDir) -> None:
    """history.csv: every network's per-epoch log (from its CSVLogger file) in one table."""
    frames = []
    for path in sorted(run.path.glob("history-*.csv")):
        frame = pd.read_csv(path)
        frame.insert(0, "network", path.stem.removeprefix("history-"))
        frames.append(frame)
    if frames:
        write_table(run.history_path, pd.concat(frames, ignore_index=True))


def soft_targets(
    dataset: tf.data.Dataset,
    n_classes: int,
    mixup: float = 0.0,
    seed: int = 0,
    multilabel: bool = False,
) -> tf.data.Dataset:
    """Batches of (images, labels) -> (images, float targets of width `n_classes`), for a
    categorical (or binary) cross-entropy with optional label smoothing.

    Integer class labels become one-hot rows (multi-hot labels are kept as they are). With
    `mixup` > 0 (the Beta distribution's alpha, Zhang et al. 2018; `keras.layers.MixUp`), each
    image is blended with another image of the same batch (a random pairing),
    `lam * a + (1 - lam) * b` with one `lam ~ Beta(alpha, alpha)` per image, and its target the
    same blend of the two targets.
    Images keep their dtype: uint8 images are blended in float and rounded back (an error of at
    most half a grey level), so a model that takes raw uint8 images trains on them unchanged.
    Reproducible from `seed`, different every epoch; the validation split gets `mixup=0`.
    """
    if mixup < 0:
        raise ValueError(f"`mixup` must be >= 0. Received: mixup={mixup}")

    def targets(y):
        if multilabel:
            return tf.cast(y, tf.float32)
        return tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), n_classes, dtype=tf.float32)

    if not mixup:
        return dataset.map(
            lambda x, y, *rest: (x, targets(y), *rest), num_parallel_calls=tf.data.AUTOTUNE
        )

    layer = keras.layers.MixUp(alpha=mixup, seed=seed)  # Keras's own: Beta weight per image

    def blend(x, y, *rest):
        out = layer({"images": tf.cast(x, tf.float32), "labels": targets(y)}, training=True)
        mixed = out["images"]
        if x.dtype.is_integer:
            mixed = tf.clip_by_value(tf.round(mixed), x.dtype.min, x.dtype.max)
        return (tf.cast(mixed, x.dtype), out["labels"], *rest)

    # One map call at a time: the layer's seed generator then draws in batch order, so the
    # blends are reproducible from `seed` (and new every epoch: its state moves on).
    mixed = dataset.map(blend)
    return mixed.prefetch(tf.data.AUTOTUNE)
