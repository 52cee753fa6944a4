"""Scoring: NPZ, image and DICOM files in -> calibrated probabilities and the decision at the
operating point, one CSV row per image, every unusable file or image in the rejects."""

import csv
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from apps.medical.data import load_file, npz_images
from apps.medical.model import FEATURES, Meta, logits_model
from shared.gradcam import gradcam_heatmaps, overlay
from shared.images import ImageError, set_channels
from shared.io import DataError, atomic_path
from shared.scoring import (
    Progress,
    ScoreCounts,
    atomic_outputs,
    file_problem,
    non_finite_reason,
    stop_point,
)


def decide(prob: np.ndarray, meta: Meta) -> np.ndarray:
    """0/1 decisions (n, k): thresholds for binary and multi-label, the argmax for multi-class."""
    names, task = meta.class_names, meta.task
    thresholds = meta.operating_point.thresholds
    if task == "multilabel":
        return np.stack([prob[:, k] >= thresholds[n] for k, n in enumerate(names)], 1).astype(int)
    if task == "binary":
        positive = meta.positive_index
        flagged = prob[:, positive] >= thresholds[names[positive]]
        chosen = np.where(flagged, positive, 1 - positive)
    else:
        chosen = prob.argmax(axis=1)
    return np.eye(len(names), dtype=int)[chosen]


class MedicalScorer:
    """Images in -> calibrated probability per class and the decision at the operating point."""

    def __init__(self, meta: Meta, model, batch_size: int, max_pixels: int):
        self.meta, self.model = meta, model
        self.class_names = self.meta.class_names
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.columns = ["id"] + [f"p_{n}" for n in self.class_names] + ["decision"]

    def read(self, path: str) -> np.ndarray:
        """A PNG/JPEG/BMP or DICOM file as the model's uint8 input; ImageError says why not."""
        return load_file(path, self.meta.channels, self.meta.window, self.max_pixels)

    def load(self, path: str) -> list[tuple[str, np.ndarray]] | str:
        """(id, image) pairs of one file (an NPZ gives many), or the reason it cannot be used."""
        problem = file_problem(path)
        if problem:
            return problem
        try:
            if path.lower().endswith(".npz"):
                pairs = npz_images(path, self.max_pixels)
            else:
                pairs = [(path, self.read(path))]
        except (ImageError, DataError) as exc:
            return str(exc).removeprefix(f"{path}: ")
        channels = self.meta.channels
        return [(name, set_channels(image[None], channels)[0]) for name, image in pairs]

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """Calibrated probabilities (n, k); images of one size go to the model together."""
        out = np.zeros((len(images), len(self.class_names)), np.float32)
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for rows in by_shape.values():
            for begin in range(0, len(rows), self.batch_size):
                part = rows[begin : begin + self.batch_size]
                out[part] = self.model.predict_on_batch(np.stack([images[i] for i in part]))
        return out

    def rows(self, ids: list[str], prob: np.ndarray) -> list[list]:
        decisions = decide(prob, self.meta)
        out = []
        for name, p, d in zip(ids, prob, decisions, strict=True):
            if self.meta.task == "multilabel":
                label = "|".join(n for n, flag in zip(self.class_names, d, strict=True) if flag)
            else:
                label = self.class_names[int(d.argmax())]
            out.append([name, *(round(float(v), 6) for v in p), label or "none"])
        return out

    def explain(self, images: list[np.ndarray], prob: np.ndarray) -> list[np.ndarray]:
        """Grad-CAM overlays (float RGB in [0, 1]) for the class each decision is about."""
        if self.meta.task == "binary":
            targets = np.full(len(images), self.meta.positive_index)
        else:
            targets = prob.argmax(axis=1)
        scores = logits_model(self.model)  # a saturated probability has no gradient
        return [
            overlay(image, gradcam_heatmaps(scores, image[None], [k], FEATURES)[0])
            for image, k in zip(images, targets, strict=True)
        ]


def score_files(
    scorer: MedicalScorer,
    files: list[str],
    output: Path,
    rejects: Path,
    chunk_files: int,
    overlays: Path | None,
) -> ScoreCounts:
    """Score `files` chunk by chunk into `output` and `rejects` (written atomically as a pair by
    `shared.scoring.atomic_outputs`), with a Grad-CAM overlay per scored image in `overlays`
    when given. Unlike `shared.scoring.score_files` (one row per file), an NPZ file gives a row
    per image."""
    counts = ScoreCounts()
    meter = Progress("scoring medical images")
    with (
        atomic_outputs(output, rejects) as (out, rej),
        ThreadPoolExecutor(max_workers=4) as pool,  # decoding overlaps reading the next files
    ):
        writers = csv.writer(out), csv.writer(rej)
        writers[0].writerow(["row", *scorer.columns])
        writers[1].writerow(["row", "path", "reason"])
        for begin in range(0, len(files), chunk_files):
            chunk = files[begin : begin + chunk_files]
            _score_chunk(scorer, chunk, pool.map(scorer.load, chunk), writers, counts, overlays)
            meter.update(counts.rows)
            stop_point()
    return counts


def _score_chunk(scorer, chunk, loaded, writers, counts: ScoreCounts, overlays) -> None:
    """One chunk of files: unreadable files to the rejects, every image of the rest scored (an
    NPZ holds many, each a row of its own), non-finite outputs to the rejects."""
    out_writer, rej_writer = writers
    numbers, ids, images = [], [], []
    for path, read in zip(chunk, loaded, strict=True):
        if isinstance(read, str):
            counts.rows += 1
            rej_writer.writerow([counts.rows, path, read])
            counts.rejected += 1
            continue
        numbers += range(counts.rows + 1, counts.rows + 1 + len(read))
        counts.rows += len(read)
        ids += [name for name, _ in read]
        images += [image for _, image in read]
    if not images:
        return
    prob = scorer.predict(images)
    kept = []
    for i, (number, row) in enumerate(zip(numbers, scorer.rows(ids, prob), strict=True)):
        reason = non_finite_reason(row, scorer.columns)
        if reason:
            rej_writer.writerow([number, row[0], reason])
            counts.rejected += 1
        else:
            out_writer.writerow([number, *row])
            counts.scored += 1
            kept.append(i)
    if overlays is not None:
        explained = scorer.explain([images[i] for i in kept], prob[kept])
        write_overlays(overlays, [ids[i] for i in kept], explained)


def write_overlays(folder: Path, ids: list[str], images: list[np.ndarray]) -> None:
    """Each overlay as `<folder>/<id made file-safe>.png`."""
    from PIL import Image

    for name, image in zip(ids, images, strict=True):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/"))[-120:]
        with atomic_path(folder / f"{safe}.png", suffix=".png") as tmp:
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="PNG")
