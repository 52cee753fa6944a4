"""Scoring texts with a trained run: raw strings in, the predicted label, per-class
probabilities and a truncation flag out; every input row lands in the outputs or the rejects."""

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from apps.nlp.text import data as tdata
from apps.nlp.text.config import ScoreConfig
from apps.nlp.text.model import Meta, is_hub_task, load_model, predict_texts
from shared.io import count_table_rows
from shared.run import RunDir
from shared.scoring import Progress, ScoreCounts, atomic_outputs, finite_outputs, stop_point

# TextVectorization's default standardisation: lower case, these characters removed.
PUNCTUATION = re.compile(r"[!\"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~']")


class TextScorer:
    """Raw strings in -> predicted label, per-class probabilities and a truncation flag."""

    def __init__(self, run: RunDir, batch_size: int, threshold: float):
        self.meta = Meta.read(run)
        self.model = load_model(run)
        self.names = self.meta.class_names
        self.length = self.meta.sequence_length
        self.batch_size, self.threshold = batch_size, threshold
        probs = [f"prob_{n}" for n in self.names]
        self.columns = ["id", "predicted_label", *probs, "tokens", "truncated"]
        self._call = None if is_hub_task(self.model) else _compiled_call(self.model)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """The model's probabilities for raw strings, batch by batch through one traced graph
        (model.predict rebuilds its data iterator and callbacks on every call, and traces
        again for a short last batch: it cost as much as the model on 20,000 texts)."""
        if self._call is None or not texts:
            return predict_texts(self.model, texts, self.batch_size)
        column = tf.constant(texts)[:, None]
        parts = [
            self._call(column[start : start + self.batch_size]).numpy()
            for start in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def tokens(self, texts: list[str]) -> np.ndarray:
        """Tokens each text has before truncation, as the model's own tokenizer counts them."""
        if is_hub_task(self.model):
            ids = self.model.preprocessor.tokenizer(tf.constant(texts))
            # A ragged tensor, or lists of ids where KerasHub converts eager outputs to Python.
            lengths = (
                ids.row_lengths().numpy() if hasattr(ids, "row_lengths") else list(map(len, ids))
            )
            return np.asarray(lengths) + 2  # [CLS] and [SEP]
        return np.array([len(PUNCTUATION.sub("", t.lower()).split()) for t in texts])

    def predict(self, ids: list[str], texts: list[str]) -> pd.DataFrame:
        prob = self.probabilities(texts)
        if self.meta.multi_label:
            label = [
                ";".join(n for n, p in zip(self.names, row, strict=True) if p >= self.threshold)
                for row in prob
            ]
        else:
            label = [self.names[k] for k in prob.argmax(axis=1)]
        tokens = self.tokens(texts)
        frame = pd.DataFrame({"id": ids, "predicted_label": label})
        for k, name in enumerate(self.names):
            frame[f"prob_{name}"] = np.round(prob[:, k], 6)
        frame["tokens"] = tokens
        frame["truncated"] = tokens > self.length
        return frame


def _compiled_call(model):
    """The model's inference call as one graph over any batch of (batch, 1) strings."""
    spec = tf.TensorSpec([None, 1], tf.string)
    return tf.function(lambda texts: model(texts, training=False), input_signature=[spec])


@dataclasses.dataclass
class TextCounts(ScoreCounts):
    truncated: int = 0  # scored texts longer than the model reads
    replaced: int = 0  # U+FFFD characters (undecodable bytes) in the scored texts


def score_file(
    scorer: TextScorer, path: Path, output: Path, rejects: Path, cfg: ScoreConfig
) -> TextCounts:
    """Score `path` chunk by chunk into `output` (row, id, predictions) and `rejects` (row, id,
    reason), written together atomically (neither on any failure, interrupt or SIGTERM)."""
    # The total is an estimate from the line count (a quoted text may span lines).
    total = count_table_rows(path)
    counts = TextCounts()
    meter = Progress(f"scoring {path.name}", total=total, estimated=True)
    with atomic_outputs(output, rejects) as (out, rej):
        rejected = csv.writer(rej)
        rejected.writerow(["row", "id", "reason"])
        header = True
        for ids, values in tdata.iter_inputs(path, cfg.text_column, cfg.id_column, cfg.chunk_rows):
            frame = _score_chunk(scorer, ids, values, counts, rejected)
            if frame is not None:
                frame.to_csv(out, index=False, header=header)
                header = False
            counts.rows += len(values)
            meter.update(counts.rows)
            stop_point()
        if header:
            pd.DataFrame(columns=["row", *scorer.columns]).to_csv(out, index=False)
    return counts


def checked_texts(ids, values: list, first_row: int = 1) -> tuple[tuple[list, list, list], list]:
    """The texts' checks, rows numbered from `first_row`: ((rows, ids, texts) of the good
    ones, [row, id, reason] of the rejects); a row without an id is named by its number."""
    rows = range(first_row, first_row + len(values))
    ids = ids or [None] * len(values)
    ids = [str(i) if i not in (None, "") else str(r) for i, r in zip(ids, rows, strict=True)]
    good, rejects = ([], [], []), []
    for row, key, value in zip(rows, ids, values, strict=True):
        reason = tdata.reject_reason(value)
        if reason:
            rejects.append([row, key, reason])
        else:
            for kept, item in zip(good, (row, key, value), strict=True):
                kept.append(item)
    return good, rejects


def _score_chunk(scorer: TextScorer, ids, values: list, counts: TextCounts, rejected):
    """The scored rows of one chunk (None when none is scorable); rejects are written as met,
    then those whose model output is not finite."""
    (good_rows, good_ids, good_texts), bad = checked_texts(ids, values, counts.rows + 1)
    for reject in bad:
        rejected.writerow(reject)
    counts.rejected += len(bad)
    counts.replaced += sum(text.count("\ufffd") for text in good_texts)
    if not good_texts:
        return None
    frame = scorer.predict(good_ids, good_texts)
    frame.insert(0, "row", good_rows)
    finite, why = finite_outputs(frame)
    for row, key, reason in zip(
        frame["row"][~finite], frame["id"][~finite], why[~finite], strict=True
    ):
        rejected.writerow([row, key, reason])
    counts.rejected += int((~finite).sum())
    frame = frame[finite]
    counts.scored += len(frame)
    counts.truncated += int(frame["truncated"].sum())
    return frame
