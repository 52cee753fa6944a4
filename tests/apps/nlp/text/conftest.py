"""Tiny labelled texts for the text-app tests: two classes a 2-layer net learns in one epoch."""

import numpy as np
import pandas as pd

GOOD = ["great", "superb", "lovely", "brilliant"]
BAD = ["awful", "terrible", "boring", "broken"]


def tiny_frame(rows: int = 64, seed: int = 0) -> pd.DataFrame:
    """`rows` short reviews, half positive, with an id column."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(rows):
        positive = i % 2 == 0
        word = rng.choice(GOOD if positive else BAD)
        texts.append(f"the film was {word} and the cast {rng.choice(GOOD if positive else BAD)}")
        labels.append("pos" if positive else "neg")
    return pd.DataFrame({"id": [f"t{i}" for i in range(rows)], "text": texts, "label": labels})
