"""The speech app end to end on a tiny config, through the command line a user types."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from apps.nlp.speech.model import Meta
from apps.nlp.speech.plots import example_picks
from shared.cli import main
from shared.run import RunDir
from tests.apps.nlp.speech.conftest import tiny_sets, tone, write

SAMPLES = Path("datasets/speech/samples")


def cli(*args):
    return main(["speech", *args])


def test_run_folder_holds_the_speech_artifacts_and_meta(trained):
    root, _ = trained
    run = root / "runs" / "speech" / "latest"
    assert (run / "model.keras").is_file() and (run / "test_split.txt").is_file()
    plots = {p.stem for p in (run / "plots").glob("*.png")}
    assert plots == {"confusion_matrix", "examples", "history", "per_speaker_accuracy"}
    meta = Meta.read(RunDir(run))
    assert meta.class_names == ["ah", "eye", "see", "shoe"]
    assert meta.feature_shape == [51, 40] and meta.features["n_mels"] == 40
    assert meta.checks == {"min_seconds": 0.0, "silence_db": -80.0}
    assert meta.features["sample_rate"] == 16000 and meta.features["hop_length"] == 320
    assert meta.architecture == "cnn" and meta.split_mode == "speaker"
    history = pd.read_csv(run / "history.csv")
    assert {"network", "epoch", "examples_per_s"} <= set(history.columns)
    assert "Per speaker (test)" in (run / "model_card.md").read_text()


def test_metrics_are_speaker_disjoint_and_consistent(trained):
    root, _ = trained
    metrics = json.loads((root / "runs" / "speech" / "latest" / "metrics.json").read_text())
    test = metrics["test"]
    assert metrics["speaker_disjoint"] and metrics["data"]["speaker_overlap_train_test"] == 0
    assert test["examples"] == sum(np.sum(test["confusion_matrix"], axis=1))
    assert test["accuracy"] == pytest.approx(np.trace(test["confusion_matrix"]) / test["examples"])
    per_speaker = test["per_speaker"]
    assert set(per_speaker) == set(metrics["data"]["test_speakers"])
    clips = sum(s["clips"] for s in per_speaker.values())
    weighted = sum(s["accuracy"] * s["clips"] for s in per_speaker.values()) / clips
    assert clips == test["examples"] and weighted == pytest.approx(test["accuracy"])


def test_second_prepare_uses_the_feature_cache(trained, capsys):
    root, sets = trained
    assert cli("prepare", *sets) == 0
    assert "72 cached + 0 extracted" in capsys.readouterr().out


def test_score_sample_folder(trained, tmp_path):
    root, sets = trained
    folder = tmp_path / "in"
    shutil.copytree(SAMPLES, folder)
    write(folder / "short.wav", tone(0.05), subtype="PCM_16")
    (folder / "talk.mp3").write_bytes(b"ID3" + b"\x00" * 64)
    out = tmp_path / "scores.csv"
    assert cli("score", *sets, "--input", str(folder), "--output", str(out)) == 0
    scores = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    assert len(scores) + len(rejects) == len(list(folder.iterdir()))  # every file, once
    reasons = dict(zip(rejects.path.map(lambda p: Path(p).name), rejects.reason, strict=True))
    assert reasons["empty.wav"] == "empty file (0 bytes)"
    assert reasons["corrupt.wav"].startswith("corrupt or unreadable audio")
    assert reasons["silence.wav"].startswith("silent")
    assert "short.wav" not in reasons  # a short clip is padded and scored, not dropped
    assert reasons["talk.mp3"].startswith("unsupported file type '.mp3'")
    assert set(scores.predicted_word) <= {"ah", "eye", "see", "shoe"}
    assert (scores.predicted_word == scores.top1_word).all()
    assert (scores.top1_probability >= scores.top2_probability).all()
    long = scores[scores.path.str.contains("long_toy")].iloc[0]
    assert long.windows > 1 and 1.0 <= long.window_offset_s <= 2.5  # the word is at 2.2 s
    assert (scores[~scores.path.str.contains("long_toy")].windows == 1).all()
    assert scores.path.str.endswith("short.wav").sum() == 1


def test_scoring_refuses_other_feature_parameters(trained, tmp_path, capsys):
    root, sets = trained
    out = tmp_path / "x.csv"
    code = cli(
        "score", *sets, "--set", "features.n_mels=32", "--input", str(SAMPLES), "--output", str(out)
    )
    assert code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: feature parameters differ") and "n_mels: run 40 vs config 32" in err
    )
    assert not out.exists()


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    _, sets = trained
    assert cli("score", *sets, "--input", str(tmp_path / "nope")) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert (
        cli("train", *sets, "--set", "features.n_fft=512", "--set", "features.win_length=1024") == 2
    )
    assert "features.win_length must be <= features.n_fft" in capsys.readouterr().err


def test_mixed_precision_and_xla_train_on_cpu(trained, tmp_path, swap_in_float32_twin):
    root, _ = trained  # the same clips and feature cache, a run folder of its own
    cache = f"features.cache_dir={root / 'runs' / 'speech' / 'feature-cache'}"
    precision = ["train.epochs=1", "train.mixed_precision=true", "train.xla=true"]
    sets = tiny_sets(tmp_path, f"data.path={root / 'clips'}", cache, *precision)
    try:
        assert cli("train", *sets) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = tmp_path / "runs" / "speech" / "latest"
    meta = Meta.read(RunDir(run))
    assert meta.precision_policy == "mixed_bfloat16" and meta.xla_compiled
    assert np.isfinite(pd.read_csv(run / "history.csv")["loss"]).all()
    # Mixed-precision probabilities agree with float32 math on the same weights within 0.05
    # (bfloat16 keeps about 3 significant digits; a few layers compound it).
    out = {}
    for name in ("mixed", "float32"):
        out[name] = tmp_path / f"{name}.csv"
        assert cli("score", *sets, "--input", str(SAMPLES), "--output", str(out[name])) == 0
        if name == "mixed":
            swap_in_float32_twin(run / "model.keras")
    mixed, exact = (pd.read_csv(out[n]).sort_values("path") for n in ("mixed", "float32"))
    assert len(mixed) == 7 and (mixed.path.to_numpy() == exact.path.to_numpy()).all()
    columns = [c for c in mixed.columns if c.startswith("top") and c.endswith("probability")]
    np.testing.assert_allclose(mixed[columns], exact[columns], atol=0.05)


def test_a_diverging_network_fails_the_run(trained, tmp_path, capsys):
    """train.learning_rate=1000 really diverges: exit 1, one line, no latest, a failed card."""
    root, _ = trained  # the same clips and feature cache, a run root of its own
    cache = f"features.cache_dir={root / 'runs' / 'speech' / 'feature-cache'}"
    sets = tiny_sets(tmp_path, f"data.path={root / 'clips'}", cache, "train.learning_rate=1000")
    assert cli("train", *sets) == 1
    captured = capsys.readouterr()
    assert "train: cnn diverged: loss" in captured.out and "at epoch 1" in captured.out
    error = captured.err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: every network failed (cnn)")
    runs = tmp_path / "runs" / "speech"
    assert not (runs / "latest").exists()
    (run,) = [p for p in runs.iterdir() if p.name not in ("prepared", "feature-cache")]
    assert not (run / "FINISHED").exists() and not (run / "model.keras").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "cnn diverged" in metrics["failed_networks"]["cnn"]
    card = (run / "model_card.md").read_text()
    assert "## Status: failed" in card and "`cnn`: cnn diverged" in card
    checkpoint = json.loads((run / "checkpoints" / "cnn.json").read_text())
    assert checkpoint["status"] == "failed" and checkpoint["epoch"] == 1
    assert cli("evaluate", *sets, "--run", str(run)) == 2  # nothing to evaluate: one line
    assert "no model_meta.json" in capsys.readouterr().err


def test_synthetic_source_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    """data.source=synthetic rewrites its folder: real recordings there must not be replaced."""
    real = tmp_path / "speech_commands" / "yes" / "0a1b2c3d_nohash_0.wav"
    write(real, tone(1.0), subtype="PCM_16")
    sets = tiny_sets(tmp_path, f"data.path={tmp_path / 'speech_commands'}")
    assert cli("prepare", *sets) == 2
    assert "set data.source=files to read them" in capsys.readouterr().err
    assert real.is_file() and len(list((tmp_path / "speech_commands").rglob("*"))) == 2


def test_example_picks_are_distinct_and_half_wrong_at_most():
    y = np.arange(51) % 30
    predicted = np.where(np.arange(51) < 2, y, (y + 1) % 30)  # two right, 49 wrong
    picks = example_picks(predicted, y, 8)
    assert len(set(picks.tolist())) == 8 and {0, 1} <= set(picks.tolist())  # both right ones
    assert sorted(example_picks(y, y, 8)) == sorted(set(example_picks(y, y, 8)))
    assert len(example_picks(y[:3], y[:3], 3)) == 3
