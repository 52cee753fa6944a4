"""Medical scoring under bad input and signals (issue 14): an empty NPZ, a huge image hidden in a
small NPZ, a DICOM with a window that is not a number, broken links, non-UTF-8 names, outputs
that cannot be written and SIGTERM mid-scoring; each is a reject with its reason or one line."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from apps.medical.dicom import read_dicom
from shared.images import ImageError
from tests.apps.medical.conftest import cli, dicom_of, picture, tiny_sets, write_npz
from tests.shared.test_scoring import terminate_mid_scoring

REPO = Path(__file__).parents[3]
WINDOW_CENTER = Tag(0x00281050)


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(seed % 2, 16, np.random.default_rng(seed))).save(path, format="PNG")
    return path


def with_window_centre(path: Path, raw: bytes) -> Path:
    """A DICOM file whose WindowCenter holds `raw` bytes as stored (pydicom refuses to set a
    value that is not a number, but files in the wild carry them)."""
    dicom_of(picture(1, 16, np.random.default_rng(0)), path, window=(2000, 4000))
    dataset = pydicom.dcmread(path)
    dataset[WINDOW_CENTER] = RawDataElement(WINDOW_CENTER, "DS", len(raw), raw, 0, False, True)
    dataset.save_as(path)
    return path


def score(sets, *inputs, output: Path, extra=()) -> int:
    return cli("score", *sets, *extra, "--input", *map(str, inputs), "--output", str(output))


def written(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rejects = output.with_name(f"{output.stem}.rejects.csv")
    return pd.read_csv(output, encoding="utf-8"), pd.read_csv(rejects, encoding="utf-8")


def test_npz_with_no_images_is_a_reject_with_the_reason(trained, tmp_path):
    _, sets, _ = trained
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 16, 16), np.uint8))
    good = png(tmp_path / "a.png")
    assert score(sets, tmp_path / "empty.npz", good, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [2]
    assert rejects.row.tolist() == [1]
    assert rejects.reason.tolist() == ["NPZ holds no images (images (0, 16, 16))"]


def test_npz_over_the_pixel_limit_is_refused_before_decoding(trained, tmp_path):
    _, sets, _ = trained
    np.savez_compressed(tmp_path / "big.npz", images=np.zeros((2, 40, 40), np.uint8))
    npz = write_npz(tmp_path / "ok.npz", n=4)  # 16 x 16 images: under the limit
    limit = ["--set", "score.max_image_pixels=1000"]
    assert score(sets, tmp_path / "big.npz", npz, output=tmp_path / "s.csv", extra=limit) == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert len(scores) == 6 and scores.row.tolist() == list(range(2, 8))
    assert rejects.row.tolist() == [1]
    assert rejects.reason.item() == (
        "array 'images' holds images of 40 x 40 = 1,600 pixels, over the limit of 1,000; "
        "refused without decoding"
    )


def test_npz_training_source_over_the_pixel_limit_is_one_line(tmp_path, capsys):
    npz = write_npz(tmp_path / "mine.npz", n=8)
    assert cli("prepare", *tiny_sets(tmp_path, "data.max_image_pixels=100", data=npz)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {npz}: array 'train_images' holds")
    assert "16 x 16 = 256 pixels, over the limit of 100; refused without decoding" in err[0]


def test_dicom_window_that_is_not_a_number_is_a_reject_not_a_traceback(trained, tmp_path):
    _, sets, _ = trained
    bad = with_window_centre(tmp_path / "bad.dcm", b"abc ")
    nan = with_window_centre(tmp_path / "nan.dcm", b"nan ")  # a number, but no window
    good = dicom_of(picture(0, 16, np.random.default_rng(1)), tmp_path / "good.dcm")
    assert score(sets, bad, nan, good, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [3]
    reasons = dict(zip(rejects.row, rejects.reason, strict=True))
    assert reasons[1].startswith("DICOM WindowCenter 'abc' is not a finite number")
    assert reasons[2].startswith("DICOM WindowCenter 'nan' is not a finite number")
    assert "data.window set to a preset" in reasons[1]


def test_dicom_window_preset_does_not_read_the_files_window(tmp_path):
    bad = with_window_centre(tmp_path / "bad.dcm", b"abc ")
    with pytest.raises(ImageError, match="WindowCenter 'abc'"):
        read_dicom(bad)
    assert read_dicom(bad, "bone").shape == (16, 16, 1)


def test_broken_link_in_a_folder_and_a_file_named_twice(trained, tmp_path):
    _, sets, _ = trained
    folder = tmp_path / "in"
    good = png(folder / "a.png")
    (folder / "b.dcm").symlink_to(tmp_path / "gone.dcm")
    assert score(sets, folder, good, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.row.tolist() == [1, 3] and scores.id.tolist() == [str(good)] * 2
    assert rejects.row.tolist() == [2]
    assert rejects.reason.item().startswith("broken symbolic link (to ")


def test_non_utf8_dicom_and_image_names_are_scored(trained, tmp_path):
    _, sets, _ = trained
    folder = tmp_path / "in"
    folder.mkdir()
    dicom_of(picture(1, 16, np.random.default_rng(2)), folder / os.fsdecode(b"x\xff.dcm"))
    png(folder / os.fsdecode(b"caf\xe9.png"))
    assert score(sets, folder, output=tmp_path / "s.csv") == 0
    scores, rejects = written(tmp_path / "s.csv")
    assert scores.id.map(lambda p: Path(p).name).tolist() == ["caf\\udce9.png", "x\\udcff.dcm"]
    assert rejects.empty


def test_output_folder_is_one_line_and_nothing_is_written(trained, tmp_path, capsys):
    _, sets, _ = trained
    good = png(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    assert score(sets, good, output=tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'out'}: is a folder; name a file to write"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_sigterm_mid_scoring_leaves_no_temporaries_and_exits_non_zero(trained, tmp_path):
    _, sets, _ = trained
    listing = tmp_path / "many.txt"  # one image 20,000 times: minutes of scoring, 2 a chunk
    listing.write_text(f"{png(tmp_path / 'a.png')}\n" * 20_000)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "shared.cli", "medical", "score", *map(str, sets)]
    command += ["--set", "score.chunk_files=2", "--input", f"@{listing}"]
    code, stderr, left = terminate_mid_scoring(
        [*command, "--output", str(out / "s.csv")], out, cwd=REPO
    )
    assert code == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]
    assert left == []
