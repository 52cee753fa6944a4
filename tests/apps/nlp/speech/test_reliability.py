"""Speech scoring and readers under bad input (issue 14): a file named twice is two rows, broken
links and FIFOs are rejects with the reason, non-UTF-8 file names are read and written, and an
output that cannot be written is one line with nothing written."""

import os
from pathlib import Path

import pandas as pd

from apps.nlp.speech.audio import read_audio
from apps.nlp.speech.data import read
from shared.cli import main
from tests.apps.nlp.speech.conftest import word_clip, write


def score(sets, *inputs, output: Path) -> int:
    return main(["speech", "score", *sets, "--input", *map(str, inputs), "--output", str(output)])


def written(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rejects = output.with_name(f"{output.stem}.rejects.csv")
    return pd.read_csv(output, encoding="utf-8"), pd.read_csv(rejects, encoding="utf-8")


def test_a_file_named_twice_is_two_rows(trained, tmp_path):
    _, sets = trained
    clip = write(tmp_path / "a.wav", word_clip("yes"))
    assert score(sets, clip, clip, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [1, 2] and rejects.empty
    assert scores.path.tolist() == [str(clip)] * 2


def test_broken_link_and_fifo_in_a_folder_are_rejects_with_the_reason(trained, tmp_path):
    _, sets = trained
    folder = tmp_path / "in"
    write(folder / "a.wav", word_clip("yes"))
    (folder / "b.wav").symlink_to(tmp_path / "gone.wav")
    os.mkfifo(folder / "c.wav")  # libsndfile would wait on it forever
    assert score(sets, folder, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [1]
    reasons = dict(zip(rejects.row, rejects.reason, strict=True))
    assert reasons[2].startswith("broken symbolic link (to ")
    assert reasons[3].startswith("not a regular file")


def test_non_utf8_file_name_is_read_scored_and_written_as_utf8(trained, tmp_path):
    _, sets = trained
    folder = tmp_path / "in"
    clip = folder / os.fsdecode(b"s\xe9.wav")
    write(folder / "plain.wav", word_clip("no")).rename(clip)  # soundfile writes UTF-8 names
    assert read_audio(clip, 16000).shape == (9600,)
    assert score(sets, folder, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.path.map(lambda p: Path(p).name).tolist() == ["s\\udce9.wav"] and rejects.empty


def test_output_folder_is_one_line_and_nothing_is_written(trained, tmp_path, capsys):
    _, sets = trained
    clip = write(tmp_path / "in" / "a.wav", word_clip("yes"))
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    assert score(sets, clip, output=tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'out'}: is a folder; name a file to write"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_training_readers_reject_broken_links_by_name(tmp_path):
    folder = tmp_path / "words"
    for word in ("yes", "no"):
        write(folder / word / "s1_0.wav", word_clip(word))
        (folder / word / "s2_0.wav").symlink_to(tmp_path / "gone.wav")
    table, rejects = read(folder, "folder", "", "")
    assert len(table) == 2
    assert sorted(Path(path).parent.name for path, _ in rejects) == ["no", "yes"]
    assert all(reason.startswith("broken symbolic link") for _, reason in rejects)
    flat = tmp_path / "flat"
    for word in ("yes", "no"):
        write(flat / f"{word}_s1_0.wav", word_clip(word))
    (flat / "yes_s2_0.wav").symlink_to(tmp_path / "gone.wav")
    table, rejects = read(flat, "pattern", "{label}_{speaker}_{index}.wav", "")
    assert len(table) == 2 and rejects[0][1].startswith("broken symbolic link")


def test_a_cut_off_wav_is_a_reject_not_a_shorter_recording(trained, tmp_path):
    _, sets = trained
    whole = write(tmp_path / "in" / "a.wav", word_clip("yes"), subtype="PCM_16")
    (tmp_path / "in" / "b.wav").write_bytes(whole.read_bytes()[:6414])  # a third of it
    assert score(sets, tmp_path / "in", output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [1] and rejects.row.tolist() == [2]
    assert rejects.reason.item() == (
        "truncated audio (the header declares 19,200 bytes of samples, the file holds 6,370)"
    )
