"""Scoring image files with a trained run: predicted label, probability and the top-k."""

import numpy as np

from apps.vision.model import Meta, load_model
from shared.images import ImageError, read_image
from shared.run import RunDir


class ImageScorer:
    """Image files in -> predicted label, probability and the top-k labels with probabilities."""

    def __init__(self, run: RunDir, top_k: int, batch_size: int, max_pixels: int):
        self.meta = Meta.read(run)
        self.model = load_model(run)
        self.class_names = self.meta.class_names
        self.top_k = min(top_k, len(self.class_names))
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.columns = ["path", "predicted_label", "probability"] + [
            f"top{i}_{kind}" for i in range(1, self.top_k + 1) for kind in ("label", "probability")
        ]

    def _read(self, path: str) -> np.ndarray | str:
        """The decoded image, or the reason it cannot be used."""
        try:
            return read_image(path, self.meta.channels, self.max_pixels)
        except ImageError as exc:
            return str(exc).removeprefix(f"{path}: ")

    def _probabilities(self, found: list[np.ndarray | str]) -> dict[int, np.ndarray]:
        """The model's probabilities of each decoded image, by its index in `found`."""
        # Raw images of one size go to the model together; it resizes them itself.
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(found):
            if not isinstance(image, str):
                by_shape.setdefault(image.shape, []).append(i)
        probabilities = {}
        for group in by_shape.values():
            batch = np.stack([found[i] for i in group])
            prob = np.concatenate(
                [
                    self.model.predict_on_batch(batch[i : i + self.batch_size])
                    for i in range(0, len(batch), self.batch_size)
                ]
            )
            probabilities.update(zip(group, prob, strict=True))
        return probabilities

    def _row(self, path: str, prob: np.ndarray) -> list:
        order = np.argsort(-prob)[: self.top_k]
        row = [path, self.class_names[order[0]], round(float(prob[order[0]]), 6)]
        for k in order:
            row += [self.class_names[k], round(float(prob[k]), 6)]
        return row

    def predict(self, paths: list[str]) -> list[list | str]:
        """Per path, in order: its output row, or the reason the file cannot be used."""
        found = [self._read(path) for path in paths]
        probabilities = self._probabilities(found)
        return [
            self._row(path, probabilities[i]) if i in probabilities else found[i]
            for i, path in enumerate(paths)
        ]
