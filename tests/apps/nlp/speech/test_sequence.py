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
        "sequence.filters=[8, 8]",
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
    per_speaker = metrics["test"]["per_speaker"]
    assert sum(v["beam"]["utterances"] for v in per_speaker.values()) == 8
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
    _check_export_parity(sets, tmp_path, folder / "a.wav", scored)


def _check_export_parity(sets, tmp_path, audio, scored):
    """The exported SavedModel's serve_waveform, decoded, says what `score` wrote."""
    import tensorflow as tf

    from apps.nlp.speech.audio import read_audio

    out = tmp_path / "exported"
    assert main(["speech", "export", *sets, "--output", str(out)]) == 0
    meta = json.loads((tmp_path / "runs" / "speech" / "latest" / "model_meta.json").read_text())
    samples = read_audio(str(audio), meta["features"]["sample_rate"])
    served = tf.saved_model.load(str(out))  # held: its functions need its variables alive
    logits = served.serve_waveform(tf.constant(samples[None])).numpy()
    vocab = meta["class_names"]
    assert seq.decode(logits, vocab, "word", 8) == scored.transcript.tolist()
    assert seq.decode(logits, vocab, "word", 1) == scored.greedy_transcript.tolist()


def test_speed_perturbation_changes_length_by_the_factor():
    clip = tone(0.5, 8000, 300.0)
    assert len(seq.perturb_speed(clip, 1.25)) == pytest.approx(len(clip) / 1.25, abs=2)
    assert len(seq.perturb_speed(clip, 0.8)) == pytest.approx(len(clip) / 0.8, abs=2)
    assert seq.perturb_speed(clip, 1.0) is clip
    clips = {"anna": [("up", clip)]}
    cfg = SequenceConfig(words=[1, 1], gap_seconds=[0.0, 0.0], snr_db=[60.0, 60.0], speed=0.3)
    plain = seq.concatenate(clips, cfg, 8, 8000, seed=0)
    varied = seq.concatenate(clips, cfg, 8, 8000, seed=0, perturb=True)
    assert {len(a) for a in plain.audio} == {len(clip)}  # val and test: as recorded
    assert len({len(a) for a in varied.audio}) > 1  # training: other speeds


def test_sequence_export_takes_waveforms_like_the_scorer(tmp_path):
    """serve_waveform of a CTC run: one recording of any length in, the logits the in-process
    scorer computes (features by librosa, padded to the training length; time subsampled 4x
    by the strided convolutions) out, so the decoded transcripts agree."""
    import keras
    import tensorflow as tf

    from apps.nlp.speech.config import FeatureConfig
    from apps.nlp.speech.model import write_saved_model
    from apps.nlp.speech.sequence_steps import utterance_logits

    params = FeatureConfig().params(8000, 1.5, 40.0) | {"task": "sequence"}
    keras.utils.set_random_seed(3)
    model = seq.build_ctc_model(SequenceConfig(filters=[4, 4], rnn_units=4), 32, 3)
    write_saved_model(model, str(tmp_path / "saved"), params)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    vocab = ["go", "stop", "up"]
    for words in (["up"], ["up", "go", "stop", "go"]):  # shorter and longer than 1.5 s
        samples = np.concatenate([word_clip(w, rate=8000, seconds=0.5) for w in words])
        ours = utterance_logits(model, samples, params)
        theirs = served.serve_waveform(tf.constant(samples[None])).numpy()
        frames = 1 + max(len(samples), 12000) // 160
        assert theirs.shape == ours.shape == (1, -(-frames // 4), 4)
        np.testing.assert_allclose(theirs, ours, atol=1e-4)
        for width in (1, 4):
            said = seq.decode(ours, vocab, "word", width)
            assert seq.decode(theirs, vocab, "word", width) == said and said[0]


def test_mixed_speakers_draw_words_from_every_speaker_of_the_split():
    clips = {"anna": [("up", tone(0.2, 8000, 300.0))], "bob": [("down", tone(0.2, 8000, 900.0))]}
    cfg = SequenceConfig(words=[4, 4], max_seconds=3.0, mix_speakers=True)
    made = seq.concatenate(clips, cfg, 10, 8000, seed=0)
    assert set(made.speakers) == {seq.MIXED}
    assert any(set(t.split()) == {"up", "down"} for t in made.transcripts)
