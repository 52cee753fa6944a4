"""Small audio files written in the public formats, and the tiny trained run, for the speech
tests."""

import numpy as np
import pytest
import soundfile as sf

from shared.cli import main


def tone(seconds=0.5, rate=16000, freq=440.0, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, samples, rate=16000, subtype=None):
    """Write `samples` (frames or frames x channels) at `rate`; the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return path


def word_clip(label: str, rate=16000, seconds=0.6, seed=0):
    """A distinct sound per label (its tone height), with a little noise."""
    rng = np.random.default_rng(seed)
    freq = 300.0 + 400.0 * (sum(map(ord, label)) % 7)
    return tone(seconds, rate, freq) + 0.01 * rng.standard_normal(int(seconds * rate)).astype(
        np.float32
    )


SMOKE = "apps/nlp/speech/configs/smoke.yaml"


def tiny_sets(root, *extra):
    """CLI arguments of the smoke config with its run root and clips under `root`."""
    sets = {"run.root": root / "runs", "data.path": root / "clips", "train.epochs": 2}
    args = ["--config", SMOKE]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    for item in extra:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny prepared, trained and evaluated run, shared by test_pipeline and test_contract:
    (root, CLI arguments)."""
    root = tmp_path_factory.mktemp("speech")
    sets = tiny_sets(root)
    for step in ("prepare", "train", "evaluate"):
        assert main(["speech", step, *sets]) == 0
    return root, sets
