"""Test-time augmentation (TTA): a model's probabilities averaged over deterministic views of
each image (mirror images, shifts of a few pixels), as fastai's `learn.tta` and MONAI's
`TestTimeAugmentation` do.

A view is named in the config, so which ones suit the modality is the app's (and the user's)
choice: mirroring suits fundus photographs and natural images, but not chest radiographs,
where the heart has a side; small shifts suit almost any image. Names:

- `identity`: the image as it is (always worth keeping: TTA then refines the plain prediction);
- `hflip`, `vflip`, `rot180`: mirror left-right, top-bottom, or both;
- `shift:DY:DX`: move the content down by DY and right by DX, fractions of the height and width
  (negative: up / left; at least one pixel when non-zero), edges replicated as the training
  augmentation's `fill_mode="nearest"` does.

The views act on raw (batch, height, width, channels) arrays before the model, which resizes
them itself. `choose` keeps TTA only when it wins on validation, so the shipped score is never
chosen on test.
"""

import dataclasses
import math

import numpy as np

FLIPS = {"identity": (False, False), "hflip": (False, True), "vflip": (True, False)}
FLIPS["rot180"] = (True, True)


@dataclasses.dataclass(frozen=True)
class View:
    """One deterministic transform: flips, then a shift in fractions of the size."""

    name: str
    flip_rows: bool = False
    flip_cols: bool = False
    shift_rows: float = 0.0
    shift_cols: float = 0.0


def parse_view(name: str) -> View:
    """The view a config name stands for; ValueError with the accepted names otherwise."""
    if name in FLIPS:
        return View(name, *FLIPS[name])
    parts = name.split(":")
    if len(parts) == 3 and parts[0] == "shift":
        try:
            rows, cols = float(parts[1]), float(parts[2])
        except ValueError:
            rows = cols = float("nan")
        if all(math.isfinite(v) and abs(v) < 0.5 for v in (rows, cols)):
            return View(name, shift_rows=rows, shift_cols=cols)
    raise ValueError(
        f"unknown test-time view {name!r}: expected one of {', '.join(FLIPS)} or "
        "shift:DY:DX with fractions of the size in (-0.5, 0.5), e.g. shift:0.05:0"
    )


def parse_views(names) -> list[View]:
    """Views from config names (at least one, no repeats)."""
    names = list(names)
    if not names:
        raise ValueError("test-time augmentation needs at least one view, e.g. [identity, hflip]")
    if len(set(names)) != len(names):
        raise ValueError(f"test-time views repeat: {names}")
    return [parse_view(name) for name in names]


def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """`view` of a (batch, height, width, ...) array, same shape and dtype."""
    out = np.asarray(images)
    if view.flip_rows:
        out = out[:, ::-1]
    if view.flip_cols:
        out = out[:, :, ::-1]
    for axis, fraction in ((1, view.shift_rows), (2, view.shift_cols)):
        if fraction:
            out = _shift(out, axis, _pixels(fraction, out.shape[axis]))
    return np.ascontiguousarray(out)


def _pixels(fraction: float, size: int) -> int:
    """A shift in pixels: at least one for a non-zero fraction, less than the size."""
    pixels = max(1, round(abs(fraction) * size))
    return int(math.copysign(min(pixels, size - 1), fraction))


def _shift(images: np.ndarray, axis: int, pixels: int) -> np.ndarray:
    """Move content by `pixels` along `axis` (positive: towards higher indices), replicating
    the edge row or column into the space it leaves."""
    size = images.shape[axis]
    source = np.clip(np.arange(size) - pixels, 0, size - 1)
    return np.take(images, source, axis=axis)


def predict_views(predict, images: np.ndarray, views: list[View]) -> list:
    """`predict(view_of_images)` for each view, in order (whatever `predict` returns)."""
    return [predict(apply_view(images, view)) for view in views]


def average(outputs: list[np.ndarray]) -> np.ndarray:
    """The mean of per-view probabilities (n, k): averaging probabilities, not logits, keeps
    each view's calibration and the output a distribution."""
    if not outputs:
        raise ValueError("average needs the outputs of at least one view")
    return np.mean(np.stack([np.asarray(o, dtype=np.float64) for o in outputs]), axis=0)


def choose(plain: float, augmented: float, higher_is_better: bool = True) -> bool:
    """True when TTA's validation score strictly beats the plain one (a tie or a non-finite
    score keeps the plain prediction: TTA costs one pass per view)."""
    if not (math.isfinite(plain) and math.isfinite(augmented)):
        return False
    return augmented > plain if higher_is_better else augmented < plain
