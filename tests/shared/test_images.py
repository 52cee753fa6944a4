"""shared.images: header checks, size limit, decoding and every kind of bad file."""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.images import (
    ImageError,
    check_npz_pixels,
    class_folder_files,
    image_info,
    list_image_files,
    npz_shapes,
    read_image,
    sniff_format,
)


@pytest.fixture
def gray_png(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8), mode="L").save(path)
    return path


def test_reads_gray_png_as_one_or_three_channels(gray_png):
    gray = read_image(gray_png, channels=1)
    rgb = read_image(gray_png, channels=3)
    assert gray.shape == (6, 8, 1) and gray.dtype == np.uint8
    assert rgb.shape == (6, 8, 3)
    assert gray[0, 5, 0] == 5 and (rgb[..., 0] == gray[..., 0]).all()
    assert image_info(gray_png) == (8, 6, True)


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("BMP", ".bmp"), ("PNG", ".png")])
def test_reads_rgb_formats(tmp_path, fmt, suffix):
    path = tmp_path / f"rgb{suffix}"
    data = np.zeros((5, 7, 3), np.uint8)
    data[..., 0] = 255
    Image.fromarray(data, mode="RGB").save(path, format=fmt)
    image = read_image(path, channels=3)
    assert image.shape == (5, 7, 3)
    assert image[..., 0].min() > 240 and image[..., 1].max() < 15
    assert sniff_format(path) == fmt
    assert image_info(path)[2] is False


def test_rgba_drops_alpha_and_sixteen_bit_is_scaled(tmp_path):
    rgba = tmp_path / "a.png"
    Image.fromarray(np.full((4, 4, 4), 100, np.uint8), mode="RGBA").save(rgba)
    assert read_image(rgba, 3).shape == (4, 4, 3)
    wide = tmp_path / "w.png"
    Image.fromarray(np.array([[0, 1000], [30000, 60000]], np.uint16)).save(wide)
    values = read_image(wide, 1)[..., 0]
    assert values[1, 1] == 255 and values[0, 0] == 0 and 0 < values[1, 0] < 255


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, not pixels")
    with pytest.raises(ImageError, match="not a PNG, JPEG or BMP"):
        read_image(path)


def test_truncated_png(tmp_path, gray_png):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(big)
    raw = big.read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(broken)


def test_huge_image_is_refused_from_the_header(tmp_path):
    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(path)
    with pytest.raises(ImageError, match="12,000 pixels, over the limit of 1,000; refused"):
        read_image(path, max_pixels=1000)
    # A header claiming 30000 x 30000 pixels with no pixel data: refused, never decoded.
    header = tmp_path / "claims.png"
    raw = path.read_bytes()
    ihdr = bytearray(raw[:33])
    ihdr[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    header.write_bytes(bytes(ihdr) + raw[33:])
    with pytest.raises(ImageError, match="refused|too large"):
        read_image(header)


def test_missing_file_and_bad_channels(tmp_path, gray_png):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="Received: channels=2"):
        read_image(gray_png, channels=2)


def test_list_image_files_skips_hidden_and_other_suffixes(tmp_path, gray_png):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.JPG").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "readme.txt").write_text("x")
    assert [p.name for p in list_image_files(tmp_path)] == ["gray.png", "b.JPG"]


def write_compressed_zeros(path, shape, key="images"):
    """An NPZ whose `key` is uint8 zeros of `shape`, deflated row by row (as np.savez_compressed
    stores it, without holding the array in memory here)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    row = bytes(int(np.prod(shape[2:])))
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(f"{key}.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        for _ in range(shape[0] * shape[1]):
            member.write(row)
    return path


def test_npz_pixel_limit_reads_only_the_headers(tmp_path):
    # 8000 x 8000 zeros deflate to about 62 KB; decoding them would take 64 MB.
    path = write_compressed_zeros(tmp_path / "bomb.npz", (1, 8000, 8000))
    assert path.stat().st_size < 100_000
    assert npz_shapes(path) == {"images": (1, 8000, 8000)}
    with pytest.raises(ImageError, match="'images' holds images of 8000 x 8000 = 64,000,000"):
        check_npz_pixels(path, ["images"])  # the image reader's default limit, 40 megapixels
    check_npz_pixels(path, ["images"], max_pixels=64_000_000)  # at the limit: allowed
    check_npz_pixels(path, ["absent"], max_pixels=1)  # no such array: nothing to check


def test_npz_shapes_of_a_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ImageError, match="unreadable NPZ"):
        npz_shapes(path)


def test_class_folder_files_rejects_broken_links_and_fifos_by_name(tmp_path, gray_png):
    root = tmp_path / "tree"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "ok.png").write_bytes(gray_png.read_bytes())
    (root / "cats" / "dead.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(root / "cats" / "pipe.png")
    (root / "loose.png").symlink_to(tmp_path / "gone.png")
    files, rejects, split = class_folder_files(root, "validation", lambda file: "")
    assert files == [(str(root / "cats" / "ok.png"), "cats", None)] and split is False
    reasons = {Path(path).name: reason for path, reason in rejects}
    assert reasons["dead.png"].startswith("broken symbolic link")
    assert reasons["loose.png"].startswith("broken symbolic link")
    assert reasons["pipe.png"].startswith("not a regular file")
