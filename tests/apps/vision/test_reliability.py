"""Vision scoring under bad input and signals (issue 14): every file in the outputs or the
rejects by its position, one line for an output that cannot be written, no lost batch, no
temporaries left behind, and the NPZ reader's pixel limit checked before decoding."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tests.apps.vision.conftest import cli, pattern, tiny_sets
from tests.shared.test_scoring import terminate_mid_scoring

REPO = Path(__file__).parents[3]


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern(seed % 3, 16, np.random.default_rng(seed))).save(path, format="PNG")
    return path


def score(sets, *inputs, output: Path, extra=()) -> int:
    return cli("score", *sets, *extra, "--input", *map(str, inputs), "--output", str(output))


def written(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rejects = output.with_name(f"{output.stem}.rejects.csv")
    return pd.read_csv(output, encoding="utf-8"), pd.read_csv(rejects, encoding="utf-8")


def test_a_file_named_twice_is_two_rows(trained, tmp_path):
    _, sets = trained
    image = png(tmp_path / "a.png")
    assert score(sets, image, image, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [1, 2] and rejects.empty
    assert scores.probability.nunique() == 1


def test_broken_link_and_fifo_in_a_folder_are_rejects_with_the_reason(trained, tmp_path):
    _, sets = trained
    folder = tmp_path / "in"
    png(folder / "a.png")
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(folder / "c.png")  # read as an image it would block the batch forever
    assert score(sets, folder, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [1]
    reasons = dict(zip(rejects.row, rejects.reason, strict=True))
    assert reasons[2].startswith("broken symbolic link (to ")
    assert reasons[3].startswith("not a regular file")


def test_non_utf8_file_name_is_scored_and_the_outputs_stay_utf8(trained, tmp_path):
    _, sets = trained
    folder = tmp_path / "in"
    png(folder / os.fsdecode(b"caf\xe9.png"))
    png(folder / "plain.png", seed=1)
    (folder / os.fsdecode(b"notes\xff.txt")).write_text("not an image")
    assert score(sets, folder, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.path.map(lambda p: Path(p).name).tolist() == ["caf\\udce9.png", "plain.png"]
    assert rejects.path.map(lambda p: Path(p).name).tolist() == ["notes\\udcff.txt"]


def test_output_that_cannot_be_written_is_one_line_and_nothing_is_written(
    trained, tmp_path, capsys
):
    _, sets = trained
    image = png(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "a_file").write_text("x")
    for output, rejects, message in [
        (tmp_path / "out", None, "is a folder"),
        (tmp_path / "s.csv", tmp_path / "out", "is a folder"),
        (tmp_path / "a_file" / "s.csv", None, "a_file is not a folder"),
    ]:
        extra = ["--rejects", str(rejects)] if rejects else []
        capsys.readouterr()
        assert cli("score", *sets, "--input", str(image), "--output", str(output), *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "in", "out"]
    assert list((tmp_path / "out").iterdir()) == []


def test_sigterm_mid_scoring_leaves_no_temporaries_and_exits_non_zero(trained, tmp_path):
    _, sets = trained
    listing = tmp_path / "many.txt"  # one image 20,000 times: minutes of scoring, 2 a batch
    listing.write_text(f"{png(tmp_path / 'a.png')}\n" * 20_000)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "shared.cli", "vision", "score", *map(str, sets)]
    command += ["--set", "score.chunk_files=2", "--input", f"@{listing}"]
    code, stderr, left = terminate_mid_scoring(
        [*command, "--output", str(out / "s.csv")], out, cwd=REPO
    )
    assert code == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert left == []  # no outputs, no hidden *.tmp


def test_npz_training_source_with_images_over_the_pixel_limit_is_one_line(tmp_path, capsys):
    images = np.zeros((12, 16, 16), np.uint8)
    np.savez(tmp_path / "x.npz", x_train=images, y_train=np.arange(12) % 3)
    sets = tiny_sets(tmp_path, tmp_path / "x.npz", "data.max_image_pixels=100")
    assert cli("prepare", *sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'x_train' holds images of 16 x 16 = 256 pixels, over the limit of 100" in err[0]
