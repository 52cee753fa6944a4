"""task=sequence: utterances made from word clips, transcript readers, CTC decoding, error
rates, and the whole prepare -> train -> evaluate -> score run on a tiny generated set."""

import json

import numpy as np
import pandas as pd
import pytest

from apps.nlp.speech import sequence as seq
from apps.nlp.speech.config import SequenceConfig
from shared.cli import main
from shared.io import DataError
from tests.apps.nlp.speech.conftest import tiny_sets, tone, word_clip, write


def _logits_for(labels: list[int], classes: int, repeat: int = 3) -> np.ndarray:
    """Logits whose best path says `labels`, each held `repeat` steps, blanks between."""
    steps = []
    for label in labels:
        steps += [label] * repeat + [seq.BLANK]
    out = np.full((len(steps), classes), -5.0, np.float32)
    out[np.arange(len(steps)), steps] = 5.0
    return out[None]


@pytest.mark.parametrize("width", [1, 4])
def test_decoding_reads_the_best_path_and_merges_repeats(width):
    vocab = ["one", "three", "two"]
    logits = _logits_for([1, 3, 3, 2], classes=4)  # one two two three
    assert seq.decode(logits, vocab, "word", width) == ["one two two three"]
    chars = seq.decode(_logits_for([2, 1, 3], classes=4), ["a", "b", "c"], "char", width)
    assert chars == ["bac"]


def test_encode_pads_with_blank_and_refuses_unknown_tokens():
    vocab = seq.vocabulary(["one two", "two three"], "word")
    assert vocab == ["one", "three", "two"]
    labels = seq.encode(["two one", "three"], vocab, "word")
    assert labels.tolist() == [[3, 1], [2, 0]]
    with pytest.raises(DataError, match="tokens the training set has not: \\['four'\\]"):
        seq.encode(["four"], vocab, "word")
    assert seq.tokens("Hi  There", "char") == list("hi there")


def test_error_rates():
    rates = seq.error_rates(["one two three", "four five"], ["one two three", "four"])
    assert rates["wer"] == pytest.approx(1 / 5) and rates["sequence_accuracy"] == 0.5
    assert rates["cer"] == pytest.approx(5 / 22, abs=1e-4)  # " five" lost of 22 characters


def test_concatenate_keeps_one_speaker_and_the_length():
    rate = 8000
    clips = {
        "anna": [("up", tone(0.3, rate, 300.0)), ("down", tone(0.4, rate, 900.0))],
        "bob": [("up", tone(0.3, rate, 500.0))],
    }
    cfg = SequenceConfig(words=[2, 4], max_seconds=2.0)
    made = seq.concatenate(clips, cfg, 20, rate, seed=0)
    assert len(made.audio) == 20 and all(len(a) <= 2.0 * rate for a in made.audio)
    for speaker, text in zip(made.speakers, made.transcripts, strict=True):
        words = text.split()
        assert 1 <= len(words) <= 4 and (speaker == "anna" or set(words) == {"up"})
    again = seq.concatenate(clips, cfg, 20, rate, seed=0)
    assert again.transcripts == made.transcripts  # seeded


def test_transcript_readers_manifest_and_librispeech(tmp_path):
    write(tmp_path / "a.wav", word_clip("a"), subtype="PCM_16")
    manifest = tmp_path / "list.csv"
    pd.DataFrame({"path": ["a.wav"], "transcript": ["one two"]}).to_csv(manifest, index=False)
    frame = seq.read_transcripts(manifest)
    assert frame.path.tolist() == [str(tmp_path / "a.wav")] and frame.transcript[0] == "one two"
    chapter = tmp_path / "libri" / "103" / "1240"
    write(chapter / "103-1240-0000.flac", word_clip("b"))
    (chapter / "103-1240.trans.txt").write_text("103-1240-0000 CHAPTER ONE\n")
    frame = seq.read_transcripts(tmp_path / "libri")
    assert frame[["transcript", "speaker"]].values.tolist() == [["CHAPTER ONE", "103"]]
    assert frame.path[0].endswith("103-1240-0000.flac")
    (tmp_path / "bad.csv").write_text("path,words\na.wav,x\n")
    with pytest.raises(DataError, match="missing required column"):
        seq.read_transcripts(tmp_path / "bad.csv")


@pytest.mark.slow  # about 40 s on 2 idle cores; the unit tests above cover its parts
def test_sequence_run_end_to_end(tmp_path):
    """Prepare, train and evaluate a tiny CTC run, then score a folder to transcripts."""
    sets = tiny_sets(
        tmp_path,
        "task=sequence",
        "sequence.utterances=[40,8,8]",
        "sequence.filters=[8]",
        "sequence.rnn_units=8",
        "sequence.max_seconds=2.5",
        "sequence.words=[2,2]",
        "train.epochs=1",
    )
    for step in ("train", "evaluate"):
        assert main(["speech", step, *sets]) == 0
    run = tmp_path / "runs" / "speech" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test", "validation"):
        for decoder in ("greedy", "beam"):
            rates = metrics[key][decoder]
            assert rates["utterances"] == 8 and rates["wer"] >= 0 and rates["cer"] >= 0
    assert metrics["leaderboard"]["sequence"]["metric"] == "wer"
    written = pd.read_csv(run / "test_transcripts.csv", keep_default_na=False)
    assert len(written) == 8 and set(written.columns) >= {"transcript", "greedy", "beam"}
    folder = tmp_path / "in"
    write(folder / "a.wav", np.concatenate([word_clip("a"), word_clip("b")]), subtype="PCM_16")
    (folder / "empty.wav").write_bytes(b"")
    out = tmp_path / "t.csv"
    assert main(["speech", "score", *sets, "--input", str(folder), "--output", str(out)]) == 0
    scored = pd.read_csv(out, keep_default_na=False)
    assert scored.path.str.endswith("a.wav").tolist() == [True]
    assert set(scored.columns) >= {"transcript", "greedy_transcript"}
    rejects = pd.read_csv(tmp_path / "t.rejects.csv")
    assert rejects.reason.tolist() == ["empty file (0 bytes)"]
