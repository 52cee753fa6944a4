"""`deepfield nlp serve`: texts as JSON rows ({"id": ..., "text": ...}), answered as `score`
answers a JSONL file of the same objects: the same outputs (label, probabilities, tokens,
truncated), the same rejects and reasons (missing, empty or non-string text, non-finite
output). The model call, tokenisation included, is batched across requests, and so is
everything after it (the outputs' table, the non-finite check, the JSON rows): one pass per
batch on the worker thread, not one per request on the request threads."""

import numpy as np

from apps.nlp.text.scorer import TextScorer, checked_texts
from shared.run import RunDir
from shared.scoring import finite_outputs
from shared.server import Adapter, records


class TextAdapter(Adapter):
    kind = "rows"

    def __init__(self, scorer: TextScorer, text_column: str, id_column: str):
        self.scorer, self.text_column, self.id_column = scorer, text_column, id_column

    def model_calls(self) -> dict:
        # `TextScorer.predict` already calls the network through one traced graph per batch
        # (not model.predict's per-call set-up), so the server batches that same call.
        return {"score": self._score_batch}

    def warm_up(self) -> None:
        """Trace the scorer's graph call before the server listens."""
        self.scorer.probabilities(["warm up"])

    def score(self, rows: list[dict], submit) -> tuple[list[dict], list[dict]]:
        """`scorer._score_chunk` of the request's rows, as `score` scores a JSONL chunk: the
        checks of each text here (plain Python, microseconds), the model and what follows
        it in the batch (`_score_batch`)."""
        ids = [row.get(self.id_column) for row in rows]
        values = [row.get(self.text_column) for row in rows]
        good, bad = checked_texts(ids, values)
        rejects = [{"row": row, "id": key, "reason": reason} for row, key, reason in bad]
        if not good[0]:
            return [], rejects
        outputs, not_finite = submit("score", good, len(good[0]))
        return outputs, sorted(rejects + not_finite, key=lambda r: r["row"])

    def _score_batch(self, parts: list[tuple[list, list, list]]) -> list:
        """One `TextScorer.predict` over the batch's good texts (each part: a request's row
        numbers, ids and texts), then per request its output rows and its non-finite rejects,
        as `scorer._score_chunk` makes them, from one table of the whole batch."""
        ids = [key for _, part_ids, _ in parts for key in part_ids]
        texts = [text for _, _, part_texts in parts for text in part_texts]
        frame = self.scorer.predict(ids, texts)
        if len(frame) != len(texts):
            raise RuntimeError("predict returned a different number of rows than texts")
        frame.insert(0, "row", [number for numbers, _, _ in parts for number in numbers])
        request = np.repeat(np.arange(len(parts)), [len(numbers) for numbers, _, _ in parts])
        finite, why = finite_outputs(frame)
        outputs = [[] for _ in parts]
        not_finite = [[] for _ in parts]
        for k in np.flatnonzero(~finite).tolist():
            not_finite[request[k]].append(
                {"row": int(frame["row"].iat[k]), "id": frame["id"].iat[k], "reason": why[k]}
            )
        kept = request[finite]
        for k, record in zip(kept.tolist(), records(frame[finite]), strict=True):
            outputs[k].append(record)
        return list(zip(outputs, not_finite, strict=True))

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
