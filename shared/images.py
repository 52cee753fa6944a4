"""Image files: check the header, refuse huge images before decoding, decode to uint8 arrays.

A file that is empty, not an image, truncated, corrupt or too large raises ImageError with one
line saying why, so a scorer can put it in the rejects and a reader can name it.
"""

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from shared.io import DataError, read_table
from shared.scoring import file_problem
from shared.splits import split_folders, split_names

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Leading bytes of each format we read: the header decides, not the file name.
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP"}
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;gray")
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: larger images are refused, not decoded


class ImageError(DataError):
    """One image file that cannot be used, with the reason."""


def sniff_format(path: str | os.PathLike) -> str:
    """The image format named by the file's first bytes; ImageError if it is none we read."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(8)
    for signature, name in SIGNATURES.items():
        if head.startswith(signature):
            return name
    raise ImageError(f"{path}: not a PNG, JPEG or BMP image (unrecognised header)")


def image_info(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int, bool]:
    """(width, height, is_grayscale) from the header alone, refusing images over `max_pixels`."""
    sniff_format(path)
    try:
        with Image.open(path) as image:
            width, height, mode = image.width, image.height, image.mode
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to decode ({_first_line(exc)})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable image header ({_first_line(exc)})") from exc
    if width * height > max_pixels:
        raise ImageError(
            f"{path}: image is {width} x {height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,}; refused without decoding"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{path}: image has no pixels ({width} x {height})")
    return width, height, mode in GRAY_MODES


def read_image(
    path: str | os.PathLike, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an image file to a uint8 array of shape (height, width, channels).

    `channels` is 1 (grayscale) or 3 (RGB); alpha is dropped and palettes are expanded.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    image_info(path, max_pixels)
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything now: a truncated or corrupt file fails here
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # 16-bit and float grayscale: scale to 8 bits rather than clipping.
                values = np.asarray(image, dtype=np.float64)
                top = values.max() if values.max() > 0 else 1.0
                array = np.round(values / top * 255.0).astype(np.uint8)
                image = Image.fromarray(array, mode="L")
            converted = image.convert("L" if channels == 1 else "RGB")
            array = np.asarray(converted, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to decode ({_first_line(exc)})") from exc
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, zlib errors, ...
        raise ImageError(f"{path}: corrupt or truncated image ({_first_line(exc)})") from exc
    return array[..., None] if channels == 1 else array


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (by suffix, recursively, sorted; hidden files skipped)."""
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def npz_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """The shape of every array in an NPZ, from each member's `.npy` header: nothing is
    decompressed beyond the header, so a small file holding a huge array costs nothing."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shapes[info.filename.removesuffix(".npy")] = read_header(member)[0]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ImageError(f"{path}: unreadable NPZ ({_first_line(exc)})") from exc
    return shapes


def check_npz_pixels(path: str | os.PathLike, keys, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """ImageError, before anything is decoded, when the images (n, h, w[, c]) of any of `keys`
    in the NPZ are over `max_pixels` each: the limit `image_info` puts on image files."""
    shapes = npz_shapes(path)
    for key in keys:
        shape = shapes.get(key, ())
        if len(shape) >= 3 and shape[1] * shape[2] > max_pixels:
            height, width = shape[1], shape[2]
            raise ImageError(
                f"{path}: array {key!r} holds images of {width} x {height} = "
                f"{width * height:,} pixels, over the limit of {max_pixels:,}; refused without "
                "decoding"
            )


def class_folder_files(root: Path, dev_split: str, reason) -> tuple[list[tuple], list, bool]:
    """Every file of an image tree `root/<class>/*` or `root/{train,val,test}/<class>/*`.

    Returns (path, class, split or None) for each file `reason(file)` accepts (it returns '' or
    why the file is not used), the (path, reason) of every other file (loose files, files beside
    the split folders, broken links and other entries that are not readable files, files
    `reason` refuses), and whether the tree was split by folders. Nothing under `root` is
    skipped silently; hidden files and folders are not looked at.
    """
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    groups = split_folders(root, dev_split)
    files, rejects = [], []
    if groups is not None:  # files beside train/ val/ test/ are not used: each is a reject
        named = {folder for _, folder in groups}
        for other in _visible(root, dirs=True):
            if other not in named:
                rejects += [
                    (str(f), "not under train/, val/ or test/")
                    for f in sorted(other.rglob("*"))
                    if not _walked(f)
                ]
    for split, folder in groups or [(None, root)]:
        rejects += [
            (str(f), file_problem(f) or "not inside a class sub-folder") for f in _visible(folder)
        ]
        for class_dir in _visible(folder, dirs=True):
            for file in sorted(class_dir.rglob("*")):
                if _walked(file) or file.name.startswith("."):
                    continue
                why = file_problem(file) or reason(file)
                if why:
                    rejects.append((str(file), why))
                else:
                    files.append((str(file), class_dir.name, split))
    return files, rejects, groups is not None


def _visible(folder: Path, dirs: bool = False) -> list[Path]:
    """The folders (links to folders included) or else every other entry of `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_dir() == dirs and not p.name.startswith("."))


def _walked(path: Path) -> bool:
    """A real folder, which rglob walks into; a link to a folder it does not, so it counts."""
    return path.is_dir() and not path.is_symlink()


def to_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """(n, h, w) or (n, h, w, c) arrays of any numeric type as uint8 (n, h, w, 1 or 3).

    uint8 stays as it is; floats in [0, 1] scale by 255; values in [0, 255] round; any wider
    range (16-bit, Hounsfield units, negatives) stretches its minimum to 0 and maximum to 255.
    One rule for every app, so the same array gives the same image in vision and medical.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{source}: expected images (n, h, w) or (n, h, w, c), got {images.shape}")
    images = images[..., :3]
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{source}: images contain NaN or infinite values")
    low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
    if low >= 0 and high <= 1.0:  # floats in [0, 1]
        values = values * 255.0
    elif low < 0 or high > 255:
        values = (values - low) / max(high - low, 1e-9) * 255.0
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def set_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (n, h, w, 1 or 3) as `channels` channels: gray repeated, or ITU-R 601 luma."""
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    weights = np.array([0.299, 0.587, 0.114])
    return np.round(images.astype(np.float64) @ weights)[..., None].astype(np.uint8)


def resize_all(images: np.ndarray, size) -> np.ndarray:
    """uint8 images at [height, width] `size` (bilinear); unchanged when already that size."""
    height, width = size
    if images.shape[1:3] == (height, width):
        return images
    return np.stack([resize(image, size) for image in images])


def resize(image: np.ndarray, size) -> np.ndarray:
    """One uint8 (h, w, c) image at [height, width] `size` (PIL bilinear)."""
    height, width = size
    channels = image.shape[-1]
    mode = "L" if channels == 1 else "RGB"
    pil = Image.fromarray(image[..., 0] if channels == 1 else image, mode=mode)
    out = np.asarray(pil.resize((width, height), Image.BILINEAR), dtype=np.uint8)
    return out[..., None] if channels == 1 else out


def read_manifest_frame(
    path: Path, split_column: str | None = None, dev_split: str = "validation"
) -> tuple[pd.DataFrame, list]:
    """An image manifest CSV (`path`, `label`, optionally a split column and others), with
    lower-case column names and empty cells as "", and each row's split (train/val/test, or
    None without a split column). The split column is `split_column`, default a column named
    `split` if there is one; a missing required column or an unknown split value is one line."""
    frame = read_table(path, dtype=str)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    column = (split_column or "split").strip().lower()
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if split_column and column not in frame.columns:
        missing.append(f"{column} (data.split_column)")
    if missing:
        raise DataError(f"{path}: missing required column(s): {', '.join(missing)}")
    frame = frame.fillna("")
    given = (
        split_names(frame[column], f"{path}: column {column!r}", dev_split)
        if column in frame.columns
        else [None] * len(frame)
    )
    return frame, given
