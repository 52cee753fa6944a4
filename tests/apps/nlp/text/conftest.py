"""Tiny labelled texts for the text-app tests (two classes a 2-layer net learns in one epoch),
and one tiny trained and evaluated run that test_pipeline and test_contract share."""

import numpy as np
import pandas as pd
import pytest

from shared.cli import main

GOOD = ["great", "superb", "lovely", "brilliant"]
BAD = ["awful", "terrible", "boring", "broken"]
SMOKE = "apps/nlp/text/configs/smoke.yaml"


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


def cli(*args):
    return main(["nlp", *args])


def tiny_sets(root, data, *extra) -> list[str]:
    """CLI arguments: the smoke config on the texts at `data`, 2 epochs, runs under `root`."""
    sets = [
        f"run.root={root / 'runs'}",
        "data.source=files",
        f"data.path={data}",
        "train.epochs=2",
        "train.batch_size=16",
        *extra,
    ]
    args = ["--config", SMOKE]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(root, CLI arguments) of a trained and evaluated run of both networks and their blend
    on 64 texts."""
    root = tmp_path_factory.mktemp("nlp")
    data = root / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    sets = tiny_sets(root, data, "model.blend=true")  # the blend and its TF-IDF half too
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    return root, sets
