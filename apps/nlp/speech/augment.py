"""Random augmentation of spectrogram features as Keras layers, active only in training.

Inputs are (batch, frames, bins). The layers run inside the model in front of the
normalisation, so inference (and the saved model) pass features through unchanged.
"""

import keras
from keras import ops


class _RandomLayer(keras.layers.Layer):
    """Common part: a seed generator, and identity outside training."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def uniform(self, shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def call(self, inputs, training=None):
        return self.augment(inputs) if training else inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="deepfield.speech")
class TimeShift(_RandomLayer):
    """Shift each clip in time by up to `max_fraction` of its frames, filling with its lowest value.

    Args:
        max_fraction: largest shift as a fraction of the frames, in [0, 1).
    """

    def __init__(self, max_fraction=0.1, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= max_fraction < 1.0:
            raise ValueError(
                f"`max_fraction` must be in [0, 1). Received: max_fraction={max_fraction}"
            )
        self.max_fraction = max_fraction

    def augment(self, x):
        batch, frames = ops.shape(x)[0], ops.shape(x)[1]
        limit = ops.cast(frames, "float32") * self.max_fraction
        shift = ops.cast(ops.round(self.uniform((batch, 1), -1.0, 1.0) * limit), "int32")
        source = ops.arange(frames, dtype="int32")[None, :] - shift  # (batch, frames)
        valid = ops.logical_and(source >= 0, source < frames)
        index = ops.broadcast_to(ops.clip(source, 0, frames - 1)[:, :, None], ops.shape(x))
        shifted = ops.take_along_axis(x, index, axis=1)
        floor = ops.min(x, axis=(1, 2), keepdims=True)
        return ops.where(valid[:, :, None], shifted, floor)

    def get_config(self):
        return {**super().get_config(), "max_fraction": self.max_fraction}


@keras.saving.register_keras_serializable(package="deepfield.speech")
class BackgroundNoise(_RandomLayer):
    """Add coloured noise at a random SNR to log-mel power (dB), with probability `probability`.

    The clip's dB values are turned back into power, noise with a random spectral tilt and
    the chosen signal-to-noise ratio is added, and the sum is turned into dB again: what adding
    independent noise to the waveform does to the mel spectrum, on average.

    Args:
        probability: chance that a clip gets noise, in [0, 1].
        snr_db: (low, high) range of the signal-to-noise ratio in dB.
    """

    def __init__(self, probability=0.5, snr_db=(5.0, 25.0), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(
                f"`probability` must be in [0, 1]. Received: probability={probability}"
            )
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ValueError(
                f"`snr_db` must be (low, high) with low <= high. Received: snr_db={snr_db}"
            )
        self.probability = probability
        self.snr_db = tuple(float(v) for v in snr_db)

    def augment(self, x):
        batch, bins = ops.shape(x)[0], ops.shape(x)[2]
        power = ops.power(10.0, x / 10.0)
        signal = ops.mean(power, axis=(1, 2), keepdims=True)
        snr = self.uniform((batch, 1, 1), *self.snr_db)
        tilt = self.uniform((batch, 1, 1), -2.0, 2.0) * ops.linspace(-1.0, 1.0, bins)[None, None, :]
        colour = ops.exp(tilt)
        colour = colour / ops.mean(colour, axis=2, keepdims=True)
        texture = self.uniform(ops.shape(x), 0.5, 1.5)
        noise = signal / ops.power(10.0, snr / 10.0) * colour * texture
        noisy = 10.0 * ops.log10(power + noise)
        chosen = self.uniform((batch, 1, 1)) < self.probability
        return ops.where(chosen, noisy, x)

    def get_config(self):
        return {
            **super().get_config(),
            "probability": self.probability,
            "snr_db": list(self.snr_db),
        }


@keras.saving.register_keras_serializable(package="deepfield.speech")
class SpecAugment(_RandomLayer):
    """SpecAugment masks (Park et al., 2019): bands of frames and of bins set to the clip's mean.

    Args:
        time_masks: masks along time per clip.
        time_width: widest time mask (frames).
        freq_masks: masks along frequency per clip.
        freq_width: widest frequency mask (bins).
    """

    def __init__(self, time_masks=2, time_width=6, freq_masks=2, freq_width=5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        smallest = (
            ("time_masks", time_masks, 0),
            ("time_width", time_width, 1),
            ("freq_masks", freq_masks, 0),
            ("freq_width", freq_width, 1),
        )
        for name, value, low in smallest:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value}")
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width

    def _masks(self, batch, size, count, width):
        """(batch, size) booleans: True inside any of `count` random bands up to `width` wide."""
        position = ops.arange(size, dtype="float32")[None, :]
        masked = ops.zeros((batch, size), dtype="bool")
        for _ in range(count):
            wide = ops.floor(self.uniform((batch, 1), 0.0, width + 1.0))
            start = ops.floor(self.uniform((batch, 1)) * (ops.cast(size, "float32") - wide + 1.0))
            band = ops.logical_and(position >= start, position < start + wide)
            masked = ops.logical_or(masked, band)
        return masked

    def augment(self, x):
        batch, frames, bins = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        in_time = self._masks(batch, frames, self.time_masks, self.time_width)
        in_freq = self._masks(batch, bins, self.freq_masks, self.freq_width)
        masked = ops.logical_or(in_time[:, :, None], in_freq[:, None, :])
        return ops.where(masked, ops.mean(x, axis=(1, 2), keepdims=True), x)

    def get_config(self):
        return {
            **super().get_config(),
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "freq_masks": self.freq_masks,
            "freq_width": self.freq_width,
        }


def _interpolate(x, position, axis: int):
    """`x` read at fractional `position` (batch, size) along `axis` (1 or 2), linearly."""
    size = x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]
    low = ops.floor(position)
    weight = position - low
    low = ops.cast(low, "int32")
    high = ops.minimum(low + 1, size - 1)
    expand = (slice(None), slice(None), None) if axis == 1 else (slice(None), None, slice(None))

    def gather(index):
        return ops.take_along_axis(x, ops.broadcast_to(index[expand], ops.shape(x)), axis=axis)

    return gather(low) * (1.0 - weight[expand]) + gather(high) * weight[expand]


@keras.saving.register_keras_serializable(package="deepfield.speech")
class SpeedWarp(_RandomLayer):
    """A new voice from a clip: its mel axis stretched by a random factor in 1 +- `vtlp`
    (vocal-tract-length perturbation: a shorter or longer vocal tract moves every formant by
    the same factor) and its time axis by 1 +- `tempo` about the centre; both together are
    what speed perturbation (resampling the waveform) does, at a fraction of its cost.

    Args:
        vtlp: largest relative warp of the frequency axis, in [0, 0.5].
        tempo: largest relative warp of the time axis, in [0, 0.5].
    """

    def __init__(self, vtlp=0.15, tempo=0.15, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        for name, value in (("vtlp", vtlp), ("tempo", tempo)):
            if not 0.0 <= value <= 0.5:
                raise ValueError(f"`{name}` must be in [0, 0.5]. Received: {name}={value}")
        self.vtlp, self.tempo = float(vtlp), float(tempo)

    def augment(self, x):
        batch, frames, bins = ops.shape(x)[0], x.shape[1], x.shape[2]
        if self.vtlp:
            factor = self.uniform((batch, 1), 1.0 - self.vtlp, 1.0 + self.vtlp)
            position = ops.arange(bins, dtype="float32")[None, :] * factor
            x = _interpolate(x, ops.clip(position, 0.0, bins - 1.0), axis=2)
        if self.tempo:
            factor = self.uniform((batch, 1), 1.0 - self.tempo, 1.0 + self.tempo)
            centre = (frames - 1) / 2.0
            position = (ops.arange(frames, dtype="float32")[None, :] - centre) * factor + centre
            x = _interpolate(x, ops.clip(position, 0.0, frames - 1.0), axis=1)
        return x

    def get_config(self):
        return {**super().get_config(), "vtlp": self.vtlp, "tempo": self.tempo}


def augmentation(config, kind: str) -> keras.Sequential | None:
    """The configured augmentation layers (float32: they work on dB values), or None."""
    if not config.enabled:
        return None
    layers = []
    if config.time_shift:
        layers.append(TimeShift(config.time_shift, dtype="float32"))
    if config.noise_probability and kind == "logmel":
        noise = BackgroundNoise(config.noise_probability, config.noise_snr_db, dtype="float32")
        layers.append(noise)
    if config.vtlp or config.tempo:
        layers.append(SpeedWarp(config.vtlp, config.tempo, dtype="float32"))
    if config.time_masks or config.freq_masks:
        masks = SpecAugment(
            config.time_masks,
            config.time_mask_frames,
            config.freq_masks,
            config.freq_mask_bins,
            dtype="float32",
        )
        layers.append(masks)
    return keras.Sequential(layers, name="augment") if layers else None
