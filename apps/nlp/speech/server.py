"""`deepfield speech serve`: audio files uploaded to `POST /score` (multipart, field `files`),
checked and scored as `score` scores them: the word, its probability and the top-k (long files
in windows), or for a sequence (CTC) run the transcript; unreadable, too short or silent
recordings rejected with the reason. The model call is batched across requests."""

from apps.nlp.speech.model import Meta
from apps.nlp.speech.scorer import SpeechScorer
from apps.nlp.speech.sequence_steps import TranscriptScorer
from shared.run import RunDir
from shared.server import FilesAdapter


def load(config, run: RunDir) -> FilesAdapter:
    meta = Meta.read(run)
    sequence = meta.task == "sequence"  # the run decides, as in `score`
    scorer = TranscriptScorer(run, config) if sequence else SpeechScorer(run, config)
    info = {
        "schema": {
            "files": "audio files (WAV, FLAC, ...) under the multipart field `files`",
            "sample_rate": meta.features["sample_rate"],
            "clip_seconds": meta.features["clip_seconds"],
            "checks": meta.checks,
        },
        "task": meta.task,
        "classes": meta.class_names,
        "architecture": meta.architecture,
    }
    return FilesAdapter(scorer, info)
