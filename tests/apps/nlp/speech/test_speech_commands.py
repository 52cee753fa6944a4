"""The app end to end on a tiny folder in the Speech Commands layout: the official lists (naming
clips of the whole release), clips shorter than a second, the MFCC baselines beside the network,
the leaderboard and the test split `score` reads."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from shared.cli import main
from tests.apps.nlp.speech.conftest import word_clip, write

SMOKE = "apps/nlp/speech/configs/smoke.yaml"
WORDS = ("yes", "no", "up")  # distinct tone heights in `word_clip`
SPEAKERS = ("0a1b2c3d", "1b2c3d4e", "2c3d4e5f", "3d4e5f60", "4e5f6071", "5f607182")
SHORT = {"up/5f607182_nohash_1.wav": 0.77, "no/0a1b2c3d_nohash_0.wav": 0.8}  # as in v0.01


def speech_commands(root):
    """root/<word>/<speaker>_nohash_<n>.wav, _background_noise_, README, LICENSE and the lists;
    the last two speakers are validation and test, and the lists also name absent clips."""
    for w, word in enumerate(WORDS):
        for s, speaker in enumerate(SPEAKERS):
            for n in range(2):
                name = f"{word}/{speaker}_nohash_{n}.wav"
                clip = word_clip(word, seconds=SHORT.get(name, 1.0), seed=100 * w + 10 * s + n)
                write(root / name, clip * np.hanning(len(clip)), subtype="PCM_16")  # fades
    write(root / "_background_noise_" / "white_noise.wav", word_clip("n", seconds=2.0))
    (root / "README.md").write_text("Speech Commands\n")
    (root / "LICENSE").write_text("CC BY 4.0\n")
    for list_name, speaker in (
        ("validation_list.txt", SPEAKERS[4]),
        ("testing_list.txt", SPEAKERS[5]),
    ):
        lines = [f"{w}/{speaker}_nohash_{n}.wav" for w in WORDS for n in range(2)]
        lines += [f"bed/{speaker}_nohash_0.wav", f"marvin/{speaker[::-1]}_nohash_3.wav"]  # absent
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def sets(tmp, *extra):
    values = [
        f"run.root={tmp / 'runs'}",
        f"data.path={tmp / 'sc'}",
        "data.source=files",
        "train.epochs=2",
        *extra,
    ]
    return ["--config", SMOKE, *(arg for v in values for arg in ("--set", v))]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speech-commands")
    speech_commands(tmp / "sc")
    for step in ("prepare", "train", "evaluate"):
        assert main(["speech", step, *sets(tmp)]) == 0
    run = tmp / "runs" / "speech" / "latest"
    return tmp, run, json.loads((run / "metrics.json").read_text())


def test_official_lists_split_by_speaker_and_ignore_absent_clips(evaluated):
    _, _, metrics = evaluated
    data = metrics["data"]
    assert data["split_mode"] == "own" and data["rejected_files"] == 0
    assert data["splits"] == {
        "train": {"clips": 24, "speakers": 4},
        "val": {"clips": 6, "speakers": 1},
        "test": {"clips": 6, "speakers": 1},
    }
    assert data["lists"] == {"val": {"listed": 8, "used": 6}, "test": {"listed": 8, "used": 6}}
    assert data["speakers_known"] and data["speaker_overlap_train_test"] == 0
    assert data["speaker_overlap_train_val"] == 0 and metrics["speaker_disjoint"]
    assert data["test_speakers"] == [SPEAKERS[5]]
    assert data["classes"] == sorted(WORDS)  # _background_noise_ is not a word


def test_baselines_fit_mfcc_statistics_of_the_same_clips(evaluated):
    _, _, metrics = evaluated
    for name in ("mfcc_svm", "mfcc_logistic"):
        base = metrics["baselines"][name]
        assert base["features"].startswith("mean and std over time of 13 MFCCs")
        assert "(78 values per clip;" in base["features"] and base["fit_seconds"] > 0
        assert base["test"]["examples"] == metrics["test"]["examples"] == 6
        assert base["validation"]["examples"] == metrics["validation"]["examples"] == 6
        # One tone height per word: far above chance (1/3) on unseen voices; the one clip of
        # 0.77 s in the test split may go to the one short clip in training.
        assert base["test"]["accuracy"] >= 5 / 6 and base["validation"]["accuracy"] >= 5 / 6


def test_leaderboard_has_the_network_beside_the_baselines(evaluated):
    _, run, metrics = evaluated
    board = metrics["leaderboard"]["classification"]
    assert board["metric"] == "accuracy" and board["higher_is_better"]
    assert board["selected"] == "cnn" and board["history_column"] == "val_accuracy"
    assert set(board["models"]) == {"cnn", "mfcc_svm", "mfcc_logistic"}
    assert board["best_baseline"] in ("mfcc_svm", "mfcc_logistic")
    network = board["models"]["cnn"]
    assert network["kind"] == "network" and network["status"] == "ok"
    assert network["train_seconds"] > 0 and "time_to_baseline_s" in network
    history = pd.read_csv(run / "history-cnn.csv")
    assert {"val_accuracy", "train_seconds"} <= set(history.columns)
    for name, entry in board["models"].items():
        assert set(entry["test"]) == set(entry["validation"]) == {"accuracy", "macro_f1"}, name
        assert entry["test"]["accuracy"] == pytest.approx(
            (metrics["test"] if name == "cnn" else metrics["baselines"][name]["test"])["accuracy"]
        )
    card = (run / "model_card.md").read_text()
    assert "## Leaderboard (the network beside its baselines)" in card
    assert "| mfcc_svm (baseline) |" in card and "| cnn (network, selected) |" in card


def test_test_input_lists_the_test_clips_and_scores_every_one(evaluated, tmp_path):
    tmp, run, metrics = evaluated
    assert metrics["test_input"] == "@test_split.txt"
    listed = (run / "test_split.txt").read_text().splitlines()
    expected = [
        str(tmp / "sc" / w / f"{SPEAKERS[5]}_nohash_{n}.wav")
        for w in sorted(WORDS)
        for n in range(2)
    ]
    assert sorted(listed) == sorted(expected) and all(os.path.isabs(p) for p in listed)
    out = tmp_path / "scores.csv"
    source = f"@{run / 'test_split.txt'}"
    args = [*sets(tmp), "--run", str(run), "--input", source, "--output", str(out)]
    assert main(["speech", "score", *args]) == 0
    scores = pd.read_csv(out)
    assert scores.path.tolist() == listed and scores.row.tolist() == list(range(1, 7))
    assert len(pd.read_csv(tmp_path / "scores.rejects.csv")) == 0
    short = scores[scores.path.str.endswith("up/5f607182_nohash_1.wav")]  # 0.77 s, padded
    assert len(short) == 1 and short.windows.iloc[0] == 1
