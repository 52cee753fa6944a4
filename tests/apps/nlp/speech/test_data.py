"""Readers of the three layouts, and the splits (speaker-disjoint first)."""

import numpy as np
import pandas as pd
import pytest

from apps.nlp.speech.data import (
    SplitRules,
    assign_splits,
    list_coverage,
    pattern_regex,
    read,
    read_lists,
)
from shared.io import DataError
from tests.apps.nlp.speech.conftest import word_clip, write


def speech_commands(root):
    """Speech Commands layout: root/<word>/<speaker>_nohash_<n>.wav and the two list files."""
    for word in ("yes", "no"):
        for speaker in ("aa11", "bb22", "cc33"):
            write(root / word / f"{speaker}_nohash_0.wav", word_clip(word), subtype="PCM_16")
    write(root / "_background_noise_" / "white.wav", word_clip("n"), subtype="PCM_16")
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc33_nohash_0.wav\nno/cc33_nohash_0.wav\n")
    (root / "yes" / "notes.txt").write_text("not audio")
    return root


def test_folder_layout_with_speech_commands_lists(tmp_path):
    root = speech_commands(tmp_path / "sc")
    table, rejects = read(
        root, "auto", "{label}_{speaker}_{index}.wav", "{speaker}_nohash_{index}.wav"
    )
    assert sorted(table.label.unique()) == ["no", "yes"]  # _background_noise_ is not a word
    assert len(table) == 6 and set(table.speaker) == {"aa11", "bb22", "cc33"}
    split = dict(
        zip(table.path.map(lambda p: p.split("/")[-1] + p.split("/")[-2]), table.split, strict=True)
    )
    assert split["bb22_nohash_0.wavyes"] == "val" and split["cc33_nohash_0.wavno"] == "test"
    assert split["aa11_nohash_0.wavyes"] == "train"
    assert rejects == [(str(root / "yes" / "notes.txt"), "unsupported file type '.txt'")]
    table, mode = assign_splits(table, SplitRules("auto", 0.2, 0.2, 0))
    assert mode == "own"


def test_pattern_layout_free_spoken_digit(tmp_path):
    root = tmp_path / "fsdd"
    for digit in "012":
        for speaker in ("jackson", "theo"):
            for index in range(2):
                write(root / f"{digit}_{speaker}_{index}.wav", word_clip(digit), 8000, "PCM_16")
    (root / "README.wav").write_bytes(b"")  # an audio name that does not fit the pattern
    table, rejects = read(root, "auto", "{label}_{speaker}_{index}.wav", "")
    assert len(table) == 12 and sorted(table.label.unique()) == ["0", "1", "2"]
    assert set(table.speaker) == {"jackson", "theo"}
    assert sorted(set(table["index"])) == [0, 1]
    assert rejects == [
        (
            str(root / "README.wav"),
            "file name does not match the pattern '{label}_{speaker}_{index}.wav'",
        )
    ]


def test_pattern_regex_escapes_literal_text():
    regex = pattern_regex("{label}.{speaker}+{index}.flac")
    assert regex.match("up.anna+3.FLAC")["speaker"] == "anna"
    assert regex.match("up_anna+3.flac") is None
    with pytest.raises(DataError, match="names neither"):
        pattern_regex("{index}.wav")


def test_csv_manifest(tmp_path):
    write(tmp_path / "a" / "one.flac", word_clip("a"))
    write(tmp_path / "b" / "two.wav", word_clip("b"), subtype="PCM_16")
    manifest = tmp_path / "list.csv"
    pd.DataFrame(
        {
            "path": ["a/one.flac", "b/two.wav", "c/missing.wav"],
            "label": ["up", "down", "up"],
            "speaker": ["s1", "s2", "s3"],
        }
    ).to_csv(manifest, index=False)
    table, rejects = read(manifest, "auto", "", "")
    assert table[["label", "speaker"]].values.tolist() == [["up", "s1"], ["down", "s2"]]
    assert rejects == [(str(tmp_path / "c" / "missing.wav"), "no such file")]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,word\nx.wav,up\n")
    with pytest.raises(DataError, match="missing required column"):
        read(bad, "csv", "", "")


def _table(speakers: int, per: int, known=True):
    rows = [
        (f"{s}_{w}_{i}.wav", w, f"spk{s}" if known else "", "", i)
        for s in range(speakers)
        for w in ("a", "b", "c")
        for i in range(per)
    ]
    return pd.DataFrame(rows, columns=["path", "label", "speaker", "split", "index"])


def test_named_test_and_validation_speakers():
    rules = SplitRules(test_speakers=("spk1", "spk2"), val_speakers=("spk3",))
    table, mode = assign_splits(_table(6, 2), rules)
    assert mode == "stated"
    groups = table.groupby("split").speaker.unique().map(set).to_dict()
    assert groups == {"test": {"spk1", "spk2"}, "val": {"spk3"}, "train": {"spk0", "spk4", "spk5"}}
    with pytest.raises(DataError, match="unknown speakers \\['nobody'\\]"):
        assign_splits(_table(6, 2), SplitRules(test_speakers=("nobody",)))


def test_named_test_speakers_draw_validation_speakers_from_the_rest():
    table, _ = assign_splits(_table(10, 2), SplitRules(val=0.25, test_speakers=("spk0",)))
    groups = table.groupby("split").speaker.unique().map(set).to_dict()
    assert groups["test"] == {"spk0"} and len(groups["val"]) == 2  # 25% of the 9 left
    assert not groups["val"] & groups["train"]


def test_index_rule_puts_low_indices_in_test():
    """Free Spoken Digit's published split: recordings 0-4 of every speaker are the test."""
    table, mode = assign_splits(_table(4, 10), SplitRules(val=0.2, test_index_max=4))
    assert mode == "stated"
    assert (table.split[table["index"] <= 4] == "test").all()
    rest = table[table["index"] > 4]
    assert set(rest.split) == {"train", "val"} and (rest.split == "val").mean() == 0.2
    unknown = _table(4, 10).assign(index=-1)
    with pytest.raises(DataError, match="needs every file's \\{index\\}"):
        assign_splits(unknown, SplitRules(test_index_max=4))


def test_manifest_with_only_train_and_test_draws_validation_from_train():
    table = _table(10, 2)
    table["split"] = np.where(table.speaker.isin(["spk0", "spk1"]), "test", "train")
    split, mode = assign_splits(table, SplitRules(val=0.25))
    assert mode == "own, validation drawn from train"
    assert (split.split[table.split == "test"] == "test").all()  # the given test is kept
    groups = split.groupby("split").speaker.unique().map(set).to_dict()
    assert len(groups["val"]) == 2 and not groups["val"] & groups["train"]


def test_speaker_disjoint_split():
    table, mode = assign_splits(_table(20, 2), SplitRules("auto", 0.15, 0.15, 3))
    assert mode == "speaker"
    groups = {s: set(table.speaker[table.split == s]) for s in ("train", "val", "test")}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    assert not groups["val"] & groups["test"]
    assert len(groups["test"]) == 3 and len(groups["val"]) == 3 and len(groups["train"]) == 14
    again, _ = assign_splits(_table(20, 2), SplitRules("auto", 0.15, 0.15, 3))
    assert (again.split == table.split).all()  # seeded


def test_split_without_speakers():
    table, mode = assign_splits(_table(10, 4, known=False), SplitRules("auto", 0.2, 0.2, 0))
    assert mode == "random"
    counts = table.groupby(["split", "label"]).size().unstack()
    assert np.ptp(counts.loc["test"].to_numpy()) <= 1  # stratified
    with pytest.raises(DataError, match="needs the speaker of every file"):
        assign_splits(_table(10, 4, known=False), SplitRules("speaker", 0.2, 0.2, 0))


def test_empty_and_missing_sources(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read(tmp_path / "nothing", "auto", "{label}_{speaker}_{index}.wav", "")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no usable audio files"):
        read(tmp_path / "flat", "auto", "{label}_{speaker}_{index}.wav", "")


def test_official_lists_naming_clips_not_in_the_folder(tmp_path):
    """A subset of Speech Commands: its lists (CRLF here) name clips of the whole release."""
    root = speech_commands(tmp_path / "sc")
    write(root / "yes" / "cc33_nohash_1.wav", word_clip("yes", seconds=0.77), subtype="PCM_16")
    absent = ["bed/0c40e715_nohash_0.wav", "yes/zz99_nohash_0.wav"]
    listed = ["yes/cc33_nohash_0.wav", "no/cc33_nohash_0.wav", "yes/cc33_nohash_1.wav", *absent]
    (root / "testing_list.txt").write_bytes("".join(f"{line}\r\n" for line in listed).encode())
    table, _ = read(root, "auto", "", "{speaker}_nohash_{index}.wav")
    assert len(table) == 7
    assert table.groupby("split").size().to_dict() == {"test": 3, "train": 2, "val": 2}
    assert not any(table.path.str.contains("zz99|bed"))  # absent entries add nothing
    by_split = table.groupby("split").speaker.unique().map(set).to_dict()
    assert by_split == {"train": {"aa11"}, "val": {"bb22"}, "test": {"cc33"}}
    coverage = list_coverage(root, table.path.tolist())
    assert coverage == {"val": {"listed": 2, "used": 2}, "test": {"listed": 5, "used": 3}}


def test_list_lines_end_only_at_newlines(tmp_path):
    root = tmp_path / "sc"
    root.mkdir()
    (root / "testing_list.txt").write_text("yes/a\u0085b_nohash_0.wav\n", encoding="utf-8")
    assert read_lists(root) == {"yes/a\u0085b_nohash_0.wav": "test"}
