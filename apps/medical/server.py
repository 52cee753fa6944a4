"""`deepfield medical serve`: NPZ, image and DICOM files uploaded to `POST /score` (multipart,
field `files`), checked and scored as `score` scores them: calibrated probabilities and the
decision at the run's operating point, one output row per image (an NPZ gives a row per image
it holds), unreadable files and non-finite outputs rejected with the reason. Decoding runs in
the request's thread; the model call is batched across requests."""

import dataclasses

import numpy as np

from apps.medical.model import Meta, load_model
from apps.medical.scorer import MedicalScorer
from shared.run import RunDir
from shared.scoring import non_finite_reason
from shared.server import Adapter, joined, plain


class MedicalAdapter(Adapter):
    kind = "files"

    def __init__(self, scorer: MedicalScorer):
        self.scorer = scorer

    def model_calls(self) -> dict:
        return {"score": joined(self.scorer.predict)}

    def score(self, files: list[tuple[str, str]], submit) -> tuple[list[dict], list[dict]]:
        scorer, columns = self.scorer, self.scorer.columns
        outputs, rejects, numbers, ids, images, rows = [], [], [], [], [], 0
        for name, path in files:
            read = scorer.load(path)
            if isinstance(read, str):  # the file takes one row, as in `score`'s rejects
                rows += 1
                rejects.append({"row": rows, "file": name, "reason": read.replace(path, name)})
                continue
            numbers += range(rows + 1, rows + 1 + len(read))
            rows += len(read)
            ids += [image_id.replace(path, name, 1) for image_id, _ in read]
            images += [image for _, image in read]
        if images:
            prob = np.asarray(submit("score", images))
            for number, row in zip(numbers, scorer.rows(ids, prob), strict=True):
                reason = non_finite_reason(row, columns)
                if reason:
                    rejects.append({"row": number, "file": row[0], "reason": reason})
                else:
                    outputs.append(
                        {"row": number, **{c: plain(v) for c, v in zip(columns, row, strict=True)}}
                    )
        rejects.sort(key=lambda r: r["row"])
        return outputs, rejects

    def metadata(self) -> dict:
        meta = self.scorer.meta
        return {
            "schema": {
                "files": "NPZ, PNG/JPEG/BMP or DICOM files under the multipart field `files`",
                "max_image_pixels": self.scorer.max_pixels,
                "dicom_window": meta.window or "the file's own",
            },
            "outputs": ["row", *self.scorer.columns],
            "task": meta.task,
            "classes": meta.class_names,
            "image_size": meta.image_size,
            "channels": meta.channels,
            "operating_point": dataclasses.asdict(meta.operating_point),
            "threshold": meta.operating_point.thresholds,
            "temperature": meta.temperature,
        }


def load(config, run: RunDir) -> MedicalAdapter:
    cfg = config.score
    meta = Meta.read(run)
    return MedicalAdapter(
        MedicalScorer(meta, load_model(run), cfg.batch_size, cfg.max_image_pixels)
    )
