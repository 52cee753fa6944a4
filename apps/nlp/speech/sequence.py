"""Word sequences (speech-to-text for a small vocabulary): utterances, a CTC model, decoding
and error rates.

- Utterances: sentence-level recordings from a `path,transcript` manifest or LibriSpeech-style
  `*.trans.txt` folders; without them, made from the single-word clips of each split
  (`concatenate`): several clips of one speaker in a row with random gaps, levels and
  background noise, so test utterances hold only test speakers.
- Model: per-utterance CMVN, strided convolution stages (halving frequency each, and time
  `sequence.subsample` times in all), two bidirectional GRU layers, per-step logits over
  blank + tokens, trained with `keras.ops.ctc_loss`; the time axis is open, so a recording of
  any length is transcribed.
- Decoding: greedy or beam search (`keras.ops.ctc_decode`); word error rate, character error
  rate (jiwer) and sequence accuracy.
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from apps.nlp.speech.audio import AudioError, check_audio, read_audio, trim_silence
from apps.nlp.speech.config import SequenceConfig
from apps.nlp.speech.features import extract
from apps.nlp.speech.model import UtteranceCMVN
from shared.io import DataError, read_table

BLANK = 0  # CTC blank; token i of the vocabulary is class i + 1
MIXED = "(mixed)"  # the speaker of an utterance whose words come from several


@dataclasses.dataclass
class Utterances:
    """One split's waveforms and their transcripts (and speakers, names)."""

    audio: list[np.ndarray]
    transcripts: list[str]
    speakers: list[str]
    names: list[str]


def tokens(transcript: str, unit: str) -> list[str]:
    """The CTC tokens of a transcript: its words, or its characters (spaces included)."""
    text = " ".join(transcript.lower().split())
    return text.split() if unit == "word" else list(text)


def join(pieces: list[str], unit: str) -> str:
    return " ".join(pieces) if unit == "word" else "".join(pieces).strip()


def vocabulary(transcripts: list[str], unit: str) -> list[str]:
    """The sorted tokens of the training transcripts."""
    return sorted({t for text in transcripts for t in tokens(text, unit)})


def encode(transcripts: list[str], vocab: list[str], unit: str) -> np.ndarray:
    """(utterances, longest) int32 labels, 0-padded (0 is the blank: never a label); a token
    outside the vocabulary is a DataError."""
    lookup = {t: i + 1 for i, t in enumerate(vocab)}
    rows = [tokens(text, unit) for text in transcripts]
    unknown = sorted({t for row in rows for t in row} - set(lookup))
    if unknown:
        raise DataError(f"transcripts hold tokens the training set has not: {unknown[:10]}")
    out = np.zeros((len(rows), max(1, max(map(len, rows), default=1))), np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = [lookup[t] for t in row]
    return out


# ---------------------------------------------------------------------------------------------
# utterances


def concatenate(
    clips: dict, cfg: SequenceConfig, count: int, rate: int, seed: int, perturb: bool = False
) -> Utterances:
    """`count` utterances from `clips` ({speaker: [(word, trimmed samples)]}): each one
    speaker's words in a row with random gaps and levels, in noise at a random SNR; with
    `perturb` (training), each word's speed changed by up to `cfg.speed`; with
    `cfg.mix_speakers`, each word from any speaker of `clips`."""
    rng = np.random.default_rng(seed)
    speed = cfg.speed if perturb else 0.0
    speakers = sorted(s for s, items in clips.items() if items)
    if not speakers:
        raise DataError("no single-word clips to make utterances from")
    if cfg.mix_speakers:  # the split's speakers pooled: each word from any of them
        clips, speakers = {MIXED: [item for s in speakers for item in clips[s]]}, [MIXED]
    out = Utterances([], [], [], [])
    longest = int(cfg.max_seconds * rate)
    for number in range(count):
        speaker = speakers[rng.integers(len(speakers))]
        items = clips[speaker]
        parts, words = [np.zeros(int(rng.uniform(*cfg.gap_seconds) * rate), np.float32)], []
        for _ in range(int(rng.integers(cfg.words[0], cfg.words[1] + 1))):
            word, samples = items[rng.integers(len(items))]
            if speed:
                samples = perturb_speed(samples, rng.uniform(1 - speed, 1 + speed))
            gap = np.zeros(int(rng.uniform(*cfg.gap_seconds) * rate), np.float32)
            if sum(map(len, parts)) + len(samples) + len(gap) > longest:
                break
            level = 10 ** (rng.uniform(-cfg.level_db, cfg.level_db) / 20)
            parts += [samples / (np.abs(samples).max() + 1e-9) * 0.5 * level, gap]
            words.append(word)
        if not words:
            continue  # a word longer than max_seconds: no utterance
        audio = np.concatenate(parts)
        power = np.mean(audio**2) + 1e-12
        noise = rng.standard_normal(len(audio)).astype(np.float32)
        audio = audio + noise * np.sqrt(power / 10 ** (rng.uniform(*cfg.snr_db) / 10))
        out.audio.append(audio.astype(np.float32))
        out.transcripts.append(" ".join(words))
        out.speakers.append(speaker)
        out.names.append(f"utterance-{number:05d}")
    return out


def perturb_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """The clip played `factor` times as fast (tempo and pitch together, as a tape would, the
    speed perturbation of Kaldi recipes): another speaker's rate and vocal tract, roughly."""
    if abs(factor - 1.0) < 1e-6 or len(samples) < 2:
        return samples
    positions = np.arange(0.0, len(samples) - 1, factor)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def word_clips(table: pd.DataFrame, rate: int, checks: dict, trim_db: float):
    """{split: {speaker: [(word, trimmed samples)]}} of a single-word table, and rejects."""
    out, rejects = {}, []
    for row in table.itertuples(index=False):
        samples = _checked_audio(row.path, rate, checks, rejects)
        if samples is None:
            continue
        speaker = row.speaker or Path(row.path).stem
        trimmed = trim_silence(samples, rate, trim_db or 40.0)
        out.setdefault(row.split, {}).setdefault(speaker, []).append((row.label, trimmed))
    return out, rejects


def _checked_audio(path: str, rate: int, checks: dict, rejects: list):
    """The file's samples, or None with (path, reason) added to `rejects`."""
    try:
        samples = read_audio(path, rate)
        check_audio(samples, rate, **checks)
    except AudioError as exc:
        rejects.append((path, str(exc)))
        return None
    return samples


def read_transcripts(path: str | Path) -> pd.DataFrame:
    """path, transcript, speaker, split of sentence-level recordings: a CSV manifest with
    `path,transcript[,speaker][,split]` columns (paths relative to it), or a folder tree of
    LibriSpeech-style `<speaker>-<chapter>.trans.txt` files (`<id> <TRANSCRIPT>` lines, audio
    `<id>.flac` beside them; the speaker is the id's first part)."""
    path = Path(path)
    if path.is_file():
        frame = read_table(path, dtype=str).fillna("")
        missing = [c for c in ("path", "transcript") if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: missing required column(s): {', '.join(missing)}")
        frame["path"] = [str(p if Path(p).is_absolute() else path.parent / p) for p in frame.path]
        for column in ("speaker", "split"):
            if column not in frame.columns:
                frame[column] = ""
        return frame[["path", "transcript", "speaker", "split"]]
    rows = []
    for listing in sorted(path.rglob("*.trans.txt")):
        for line in listing.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                ident, _, text = line.strip().partition(" ")
                found = [listing.parent / f"{ident}{s}" for s in (".flac", ".wav")]
                audio = next((p for p in found if p.exists()), found[0])
                rows.append((str(audio), text, ident.split("-")[0], ""))
    if not rows:
        raise DataError(f"{path}: no *.trans.txt files found")
    return pd.DataFrame(rows, columns=["path", "transcript", "speaker", "split"])


def load_utterances(frame: pd.DataFrame, rate: int, checks: dict) -> tuple[Utterances, list]:
    """The recordings of a transcript table (one split), and rejects."""
    out, rejects = Utterances([], [], [], []), []
    for row in frame.itertuples(index=False):
        samples = _checked_audio(row.path, rate, checks, rejects)
        if samples is None:
            continue
        out.audio.append(samples)
        out.transcripts.append(row.transcript)
        out.speakers.append(row.speaker)
        out.names.append(row.path)
    return out, rejects


def features(utterances: Utterances, params: dict, seconds: float) -> np.ndarray:
    """(utterances, frames, bins) features of each recording padded with zeros to `seconds`,
    or to the split's longest recording (never cut: its transcript would lose words)."""
    longest = max([len(a) for a in utterances.audio], default=0)
    length = max(int(round(seconds * params["sample_rate"])), longest)
    fitted = [pad_waveform(a, length) for a in utterances.audio]
    return np.stack([extract(a, params) for a in fitted])


def pad_waveform(samples: np.ndarray, length: int) -> np.ndarray:
    """float32 samples padded at the end with zeros to at least `length`: the model was trained
    on padded utterances and its per-utterance CMVN counts the padding, so scoring pads too."""
    return np.pad(samples, (0, max(0, length - len(samples)))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# model, loss, decoding


@keras.saving.register_keras_serializable(package="deepfield.speech")
class CTCLoss(keras.losses.Loss):
    """CTC loss of per-frame logits against 0-padded labels (0 is the blank); every frame of
    the (padded) input counts, so padding is learnt as blank."""

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(y_true, "int32")
        label_length = keras.ops.sum(keras.ops.cast(labels > 0, "int32"), axis=1)
        batch, steps = keras.ops.shape(y_pred)[0], keras.ops.shape(y_pred)[1]
        logit_length = keras.ops.full((batch,), steps, dtype="int32")
        return keras.ops.ctc_loss(labels, y_pred, label_length, logit_length, mask_index=BLANK)


def build_ctc_model(cfg: SequenceConfig, bins: int, n_tokens: int) -> keras.Model:
    """Features (batch, frames, bins), any number of frames, to logits over blank + tokens
    (batch, ceil(frames / subsample), n_tokens + 1).

    Strided convolutions subsample: every stage halves frequency, the first log2(subsample)
    halve time too. Computing at the output's resolution is what keeps thousands of steps
    affordable on two cores, and a 10-word vocabulary needs only a few steps a word (80 ms ones
    at a 20 ms hop and subsample 4)."""
    inputs = keras.Input(shape=(None, bins), dtype="float32", name="features")
    x = UtteranceCMVN(dtype="float32", name="cmvn")(inputs)
    x = keras.layers.Reshape((-1, bins, 1))(x)
    halvings = int(np.log2(cfg.subsample))
    for stage, filters in enumerate(cfg.filters):
        stride = (2 if stage < halvings else 1, 2)
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
    width = x.shape[2] * x.shape[3]
    x = keras.layers.Reshape((-1, width), name="to_sequence")(x)
    x = keras.layers.Dense(cfg.rnn_units * 2, activation="relu")(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    for layer in range(2):
        gru = keras.layers.GRU(cfg.rnn_units, return_sequences=True)
        x = keras.layers.Bidirectional(gru, name=f"bigru{layer}")(x)
    outputs = keras.layers.Dense(n_tokens + 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="speech_ctc")


def decode(logits: np.ndarray, vocab: list[str], unit: str, beam_width: int) -> list[str]:
    """Transcripts of (batch, steps, classes) logits: greedy for beam_width 1, else beam search."""
    if not len(logits):
        return []
    lengths = np.full(len(logits), logits.shape[1], np.int32)
    strategy = "greedy" if beam_width <= 1 else "beam_search"
    extra = {} if beam_width <= 1 else {"beam_width": beam_width, "top_paths": 1}
    decoded, _ = keras.ops.ctc_decode(logits, lengths, strategy=strategy, mask_index=BLANK, **extra)
    best = keras.ops.convert_to_numpy(decoded)[0]
    # Keras returns class indices; -1 (and the blank) pad a decoded row
    return [join([vocab[i - 1] for i in row if i > 0], unit) for row in best]


def error_rates(truth: list[str], said: list[str]) -> dict:
    """Word error rate, character error rate (jiwer) and the share of exact transcripts."""
    import jiwer

    if not truth:
        return {"wer": None, "cer": None, "sequence_accuracy": None, "utterances": 0}
    said = [s if s.strip() else "" for s in said]
    return {
        "wer": round(float(jiwer.wer(truth, said)), 4),
        "cer": round(float(jiwer.cer(truth, said)), 4),
        "sequence_accuracy": round(float(np.mean(np.array(truth) == np.array(said))), 4),
        "utterances": len(truth),
    }
