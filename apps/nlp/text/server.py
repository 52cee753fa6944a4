"""`deepfield nlp serve`: texts as JSON rows ({"id": ..., "text": ...}), answered as `score`
answers a JSONL file of the same objects: the same outputs (label, probabilities, tokens,
truncated), the same rejects and reasons (missing, empty or non-string text, non-finite
output). The model call, tokenisation included, is batched across requests."""

import copy

from apps.nlp.text import scorer as text_scorer
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


class TextAdapter(Adapter):
    kind = "rows"

    def __init__(self, scorer: TextScorer, text_column: str, id_column: str):
        self.scorer, self.text_column, self.id_column = scorer, text_column, id_column

    def model_calls(self) -> dict:
        # `TextScorer.predict` already calls the network through one traced graph per batch
        # (not model.predict's per-call set-up), so the server batches that same call.
        return {"score": joined(self.scorer.predict)}

    def warm_up(self) -> None:
        """Trace the scorer's graph call before the server listens."""
        self.scorer.probabilities(["warm up"])

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
