"""`deepfield vision serve`: image files uploaded to `POST /score` (multipart, field `files`),
checked and scored as `score` scores them (label, probability, top-k; unreadable, corrupt or
too-large images rejected with the reason). The model call is batched across requests."""

from apps.vision.scorer import ImageScorer
from shared.run import RunDir
from shared.server import FilesAdapter


def load(config, run: RunDir) -> FilesAdapter:
    cfg = config.score
    scorer = ImageScorer(run, cfg.top_k, cfg.batch_size, cfg.max_image_pixels)
    meta = scorer.meta
    info = {
        "schema": {
            "files": "image files (PNG, JPEG, BMP, GIF, ...) under the multipart field `files`",
            "max_image_pixels": cfg.max_image_pixels,
        },
        "classes": meta.class_names,
        "image_size": meta.image_size,
        "channels": meta.channels,
        "architecture": meta.architecture,
        "top_k": scorer.top_k,
    }
    return FilesAdapter(scorer, info)
