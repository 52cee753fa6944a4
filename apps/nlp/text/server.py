"""`deepfield nlp serve`: texts as JSON rows ({"id": ..., "text": ...}), answered as `score`
answers a JSONL file of the same objects: the same outputs (label, probabilities, tokens,
truncated), the same rejects and reasons (missing, empty or non-string text, non-finite
output). The model call, tokenisation included, is batched across requests."""

import copy

import numpy as np
import tensorflow as tf

from apps.nlp.text import scorer as text_scorer
from apps.nlp.text.model import is_hub_task
from apps.nlp.text.scorer import TextCounts, TextScorer
from shared.run import RunDir
from shared.server import Adapter, joined, records


class _Rejects:
    """Collects the rows `scorer._score_chunk` writes to its rejects file."""

    def __init__(self):
        self.rows: list[dict] = []

    def writerow(self, row: list) -> None:
        number, key, reason = row
        self.rows.append({"row": int(number), "id": key, "reason": reason})


class OnBatch:
    """The run's network as `predict_texts` calls it (`predict(dataset)`), answering each of
    the dataset's batches with one `predict_on_batch`: the same probabilities, without
    `model.predict`'s set-up per call (callbacks, data adapter, iterator: about 10 to 25 ms on
    2 cores, several times the network's own time on a server's batch of a few texts)."""

    def __init__(self, model):
        self.model = model
        self.output_shape = model.output_shape

    def warm_up(self) -> None:
        """Trace `predict_on_batch` for any batch size (Keras keeps a function for any
        shape from the second shape on: `reduce_retracing`)."""
        for n in (1, 2, 3):
            self.model.predict_on_batch(tf.constant(["warm up"] * n)[:, None])

    def predict(self, data, batch_size=None, verbose=0):
        parts = [np.asarray(self.model.predict_on_batch(batch)) for batch in data]
        return np.concatenate(parts) if parts else np.zeros((0, *self.output_shape[1:]))


class TextAdapter(Adapter):
    kind = "rows"

    def __init__(self, scorer: TextScorer, text_column: str, id_column: str):
        self.scorer, self.text_column, self.id_column = scorer, text_column, id_column
        self.batched = scorer
        if not is_hub_task(scorer.model):  # a KerasHub task preprocesses inside its predict
            self.batched = copy.copy(scorer)
            self.batched.model = OnBatch(scorer.model)

    def model_calls(self) -> dict:
        return {"score": joined(self.batched.predict)}

    def warm_up(self) -> None:
        if isinstance(self.batched.model, OnBatch):
            self.batched.model.warm_up()

    def score(self, rows: list[dict], submit) -> tuple[list[dict], list[dict]]:
        ids = [row.get(self.id_column) for row in rows]
        values = [row.get(self.text_column) for row in rows]
        request = copy.copy(self.scorer)
        request.predict = lambda ids, texts: submit("score", (ids, texts), len(texts)).reset_index(
            drop=True
        )
        rejects = _Rejects()
        frame = text_scorer._score_chunk(request, ids, values, TextCounts(), rejects)
        rejects.rows.sort(key=lambda r: r["row"])
        return records(frame), rejects.rows

    def metadata(self) -> dict:
        meta = self.scorer.meta
        return {
            "schema": {"text": self.text_column, "id": f"{self.id_column} (optional)"},
            "outputs": ["row", *self.scorer.columns],
            "classes": meta.class_names,
            "multi_label": meta.multi_label,
            "threshold": self.scorer.threshold if meta.multi_label else None,
            "sequence_length": meta.sequence_length,
            "model": meta.best,
            "request": {"rows": [{self.id_column: "1", self.text_column: "..."}]},
        }


def load(config, run: RunDir) -> TextAdapter:
    cfg = config.score
    scorer = TextScorer(run, cfg.batch_size, cfg.threshold)
    return TextAdapter(scorer, cfg.text_column, cfg.id_column)
