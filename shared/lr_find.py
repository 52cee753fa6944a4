"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's `lr_find`).

A copy of the optimiser trains the network for a few hundred steps at exponentially rising
rates, from `min_lr` to `max_lr`, and records each batch's loss. The loss is smoothed with a
bias-corrected moving average; the test stops once the smoothed loss passes `diverge` times
its best (or any loss goes non-finite), as fastai's does. The network's weights (batch-norm
statistics included) are put back afterwards, so the run then trains from the same start.

Three suggestions are read off the smoothed curve, after dropping the first tenth and the last
five points as fastai does (the start is flat noise, the end divergence):
- `valley` (fastai's default since 2.4): two thirds of the way down the longest run of
  falling loss;
- `steep`: where the loss falls fastest against log rate, before its minimum;
- `minimum`: the rate of the lowest loss, divided by 10.
"""

import dataclasses
import math
import time
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from shared.evaluation import save_figure  # noqa: E402
from shared.io import read_json, write_json  # noqa: E402

SUGGESTIONS = ("valley", "steep", "minimum")
BETA = 0.98  # the loss's moving-average factor (fastai's)
SKIP_END = 5  # last points left out of the suggestions: they are the divergence


@dataclasses.dataclass
class RangeTest:
    """What one range test measured and suggests."""

    rates: list[float]  # the rate of each step taken
    losses: list[float]  # each step's batch loss
    smoothed: list[float]  # bias-corrected moving average of `losses`
    suggestions: dict[str, float]  # valley, steep, minimum (see the module docstring)
    pick: str  # which suggestion `rate` is
    rate: float  # the suggested peak rate
    stopped: str  # why the test ended: "diverged at step N", "non-finite loss ..." or "done"
    seconds: float

    def summary(self) -> dict:
        """What a run records of the test (meta, card): everything but the per-step lists."""
        return {
            "rate": self.rate,
            "pick": self.pick,
            "suggestions": self.suggestions,
            "steps": len(self.rates),
            "range": [self.rates[0], self.rates[-1]] if self.rates else [],
            "stopped": self.stopped,
            "seconds": round(self.seconds, 1),
        }


def exponential_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """`steps` rates rising geometrically from `min_lr` to `max_lr`."""
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr. Received: min_lr={min_lr}, max_lr={max_lr}")
    return np.geomspace(min_lr, max_lr, max(2, steps))


def smooth(losses, beta: float = BETA) -> np.ndarray:
    """Bias-corrected exponential moving average (the first values are not pulled to 0)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * float(loss)
        out.append(average / (1 - beta**i))
    return np.asarray(out, dtype=float)


def suggest(rates, smoothed) -> dict[str, float]:
    """valley, steep and minimum suggestions of a smoothed curve (fastai's three), or {} when
    too few points remain once the ends are dropped."""
    rates, smoothed = np.asarray(rates, float), np.asarray(smoothed, float)
    start, stop = len(rates) // 10, len(rates) - SKIP_END
    rates, smoothed = rates[start:stop], smoothed[start:stop]
    if len(rates) < 3:
        return {}
    # The steepest fall on the way down to the minimum: past it, a diverging curve's wiggles
    # can fall steeply too, at rates that are already too high.
    lowest = int(np.argmin(smoothed))
    slopes = np.diff(smoothed[: lowest + 1]) / np.diff(np.log(rates[: lowest + 1]))
    return {
        "valley": float(rates[_valley(smoothed)]),
        "steep": float(rates[int(np.argmin(slopes))] if len(slopes) else rates[lowest]),
        "minimum": float(rates[int(np.argmin(smoothed))] / 10),
    }


def _valley(losses: np.ndarray) -> int:
    """fastai's valley: the longest decreasing subsequence, then two thirds of the way in."""
    n = len(losses)
    longest, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[max_end] < longest[i]:
            max_end, max_start = i, i - longest[i]
    third = (max_end - max_start) / 3
    return min(n - 1, max(0, max_start + int(third) + int(third / 2)))


def lr_range_test(
    model: keras.Model,
    dataset: tf.data.Dataset,
    loss,
    *,
    steps: int = 100,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    weight_decay: float = 0.0,
    diverge: float = 4.0,
    pick: str = "valley",
) -> RangeTest:
    """Run the range test on `model` with batches of (inputs, targets) from `dataset` (repeated
    as needed), AdamW with `weight_decay` and the `loss` Keras names (or a loss object).

    The model need not be compiled; its weights are restored at the end. One device only: the
    step is a plain `tf.function`, not a distributed one.
    """
    if pick not in SUGGESTIONS:
        raise ValueError(f"pick must be one of {SUGGESTIONS}. Received: pick={pick!r}")
    schedule = exponential_rates(min_lr, max_lr, steps)
    inner = keras.optimizers.AdamW(learning_rate=float(schedule[0]), weight_decay=weight_decay)
    optimizer = inner
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(inner)
    loss_fn = keras.losses.get(loss)
    saved = model.get_weights()
    step = _train_step(model, optimizer, loss_fn)
    start = time.perf_counter()
    rates, losses, stopped = [], [], "done"
    for i, batch in enumerate(dataset.repeat().take(len(schedule))):
        inner.learning_rate.assign(float(schedule[i]))  # read by the compiled step
        value = float(step(batch[0], batch[1]))  # a sample-weight third element is left out
        rates.append(float(schedule[i]))
        losses.append(value)
        if not math.isfinite(value):
            stopped = f"non-finite loss at step {i + 1}"
            break
        smoothed = smooth(losses)
        if i > 0 and smoothed[-1] > diverge * smoothed.min():
            stopped = f"diverged at step {i + 1} (smoothed loss over {diverge:g}x its best)"
            break
    model.set_weights(saved)
    finite = [v if math.isfinite(v) else np.nan for v in losses]
    smoothed = _smooth_finite(finite)
    suggestions = suggest(rates[: len(smoothed)], smoothed)
    chosen = suggestions.get(pick, float("nan"))
    return RangeTest(
        rates, losses, smoothed.tolist(), suggestions, pick, chosen, stopped,
        time.perf_counter() - start,
    )  # fmt: skip


def _smooth_finite(losses: list[float]) -> np.ndarray:
    """The smoothed curve up to the first non-finite loss (which ended the test)."""
    values = np.asarray(losses, float)
    bad = np.flatnonzero(~np.isfinite(values))
    return smooth(values[: bad[0]] if len(bad) else values)


def _train_step(model: keras.Model, optimizer, loss_fn):
    """One compiled training step at the optimiser's current rate; returns the batch loss."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            value = tf.reduce_mean(tf.cast(loss_fn(y, out), "float32"))
            if model.losses:
                value += tf.add_n([tf.cast(v, "float32") for v in model.losses])
            objective = optimizer.scale_loss(value) if scaled else value
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(objective, variables), variables)
        return value

    return step


def plot_range_test(result: RangeTest, path: str | Path, title: str = "Learning-rate range test"):
    """The raw and smoothed loss against the rate (log axis), each suggestion marked, the one
    used drawn as a line; the y axis stops short of the divergence so the valley is readable."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    rates = np.asarray(result.rates[: len(result.smoothed)])
    smoothed = np.asarray(result.smoothed)
    raw = np.asarray(result.losses[: len(smoothed)])
    ax.plot(rates, raw, color="0.75", lw=0.8, label="batch loss")
    ax.plot(rates, smoothed, color="C0", lw=1.8, label="smoothed")
    markers = {"valley": ("o", "C2"), "steep": ("v", "C1"), "minimum": ("s", "C3")}
    for name, value in result.suggestions.items():
        y = float(np.interp(np.log(value), np.log(rates), smoothed))
        marker, color = markers[name]
        ax.plot([value], [y], marker, color=color, ms=8, label=f"{name} {value:.2g}")
    if math.isfinite(result.rate):
        ax.axvline(result.rate, color="k", ls="--", lw=1, label=f"used ({result.pick})")
    # fastai's view: the first tenth (flat noise) and the last points (divergence) set no scale
    visible = smoothed[len(smoothed) // 10 : max(len(smoothed) // 10 + 1, len(smoothed) - SKIP_END)]
    if len(visible):
        low, high = float(np.nanmin(visible)), float(np.nanmax(visible))
        margin = 0.08 * (high - low) + 1e-6
        ax.set_ylim(low - margin, high + margin)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}\n{len(rates)} steps; {result.stopped}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def find_for_run(run, model: keras.Model, dataset: tf.data.Dataset, config, loss, name: str):
    """`config` with `learning_rate` set by a range test on `model` (`train.lr_find`), and the
    test's summary (None when off): plots/lr_find.png and lr_find-<name>.json in the run folder.

    A resumed run reads the rate its first attempt found instead of testing again, so it goes
    on with the same schedule. Under several replicas, or when the test gives no usable
    suggestion, the configured rate stays (said in one line and in the summary).
    """
    if not getattr(config, "lr_find", False):
        return config, None
    record = run.path / f"lr_find-{name}.json"
    if record.exists():
        summary = read_json(record)
    elif tf.distribute.get_strategy().num_replicas_in_sync > 1:
        summary = {"rate": None, "stopped": "skipped: the range test runs on one replica"}
    else:
        result = lr_range_test(
            model, dataset, loss, steps=config.lr_find_steps,
            weight_decay=config.weight_decay, pick=config.lr_find_pick,
        )  # fmt: skip
        summary = result.summary()
        if run.is_chief:
            plot_range_test(result, run.subdir("plots") / "lr_find.png", f"{name}: range test")
            write_json(record, summary)
    rate = summary.get("rate")
    if rate is None or not math.isfinite(rate):
        summary = {**summary, "used": config.learning_rate}
        print(
            f"train: [{name}] range test gave no rate ({summary['stopped']}); "
            f"keeping train.learning_rate {config.learning_rate:g}",
            flush=True,
        )
        return config, summary
    others = ", ".join(f"{k} {v:.2g}" for k, v in summary["suggestions"].items())
    print(
        f"train: [{name}] range test over {summary['steps']} steps in {summary['seconds']}s: "
        f"peak rate {rate:.3g} ({summary['pick']}; {others}; {summary['stopped']}); "
        "plot -> plots/lr_find.png",
        flush=True,
    )
    return dataclasses.replace(config, learning_rate=float(rate)), {**summary, "used": rate}
