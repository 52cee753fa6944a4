"""Vision data: readers for image folders, IDX, NPZ and CSV manifests; splits; tf.data
pipelines; the prepared file list; the test split as `score` reads it.

Every reader returns an `ImageData`: class names and, per split, either the image files (decoded
in parallel by tf.data, so folders larger than memory stream) or arrays already in memory.
"""

import dataclasses
import gzip
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split

from shared.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageError,
    check_npz_pixels,
    class_folder_files,
    image_info,
    read_image,
    read_manifest_frame,
    set_channels,
    to_uint8,
)
from shared.input_pipeline import in_memory_dataset
from shared.io import DataError, atomic_path, write_text
from shared.run import RunDir

SPLITS = ("train", "val", "test")
IDX_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "t10k": "test",
    "testing": "test",
}
# Image formats Pillow knows that the app does not train on: named in the reject, not skipped.
OTHER_IMAGE_SUFFIXES = {".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WebP"}
IDX_IMAGES = re.compile(r"^(?P<prefix>.+?)[-_.]images[-.]idx3-ubyte(?P<gz>\.gz)?$")
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
NPZ_KEYS = (("x_{}", "y_{}"), ("{}_images", "{}_labels"))
TEST_LIST = "test_split.txt"  # the test images, one path a line, as `score` reads them


@dataclasses.dataclass
class Split:
    """One split: integer labels plus either image files or a uint8 (n, h, w, c) array."""

    labels: np.ndarray
    paths: list[str] | None = None
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """How splits are read (the manifest's split column, what dev/val means) and how the ones a
    dataset does not bring are drawn (shares of all images, and the seed)."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    split_column: str | None = None  # None: a manifest column named `split`, if any
    dev_split: str = "validation"  # dev/val/valid mean validation, or "test"


@dataclasses.dataclass
class ImageData:
    class_names: list[str]
    channels: int  # 1 or 3
    splits: dict[str, Split]
    format: str  # folder, idx, npz or csv
    own_splits: list[str]  # splits that came with the data (the rest were drawn, stratified)
    rejects: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    folder: Path | None = None  # the prepared folder (file lists, rejects, caches)


def detect_format(path: Path) -> str:
    """folder, idx, npz or csv, from what `path` is."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "npz"
        if suffix in (".csv", ".tsv"):
            return "csv"
        raise DataError(f"{path}: expected an image folder, an IDX folder, a .npz or a .csv file")
    if any(IDX_IMAGES.match(p.name) for p in path.iterdir()):
        return "idx"
    return "folder"


def read(
    path: str | Path, fmt: str, channels: int | None, max_pixels: int, plan: SplitPlan
) -> ImageData:
    """Read any supported source; images that cannot be used are listed in `rejects`."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data.path)")
    if fmt in ("folder", "csv"):
        paths, names, own, rejects = (
            read_folder(path, plan.dev_split)
            if fmt == "folder"
            else read_manifest(path, plan.split_column, plan.dev_split)
        )
        return _from_files(paths, names, own, rejects, fmt, channels, max_pixels, plan)
    arrays = read_idx(path) if fmt == "idx" else read_npz(path, max_pixels)
    if fmt == "idx" and set(arrays) == {"test"}:
        # MNIST's t10k files alone (a common download): one labelled pool, which the plan's
        # fractions split into train, validation and test like any source without splits.
        return _from_arrays({"train": arrays["test"]}, fmt, channels, plan, pooled=True)
    return _from_arrays(arrays, fmt, channels, plan)


# ---------------------------------------------------------------------------------------------
# file sources


def read_folder(
    root: Path, dev_split: str = "validation"
) -> tuple[list[str], list[str], list[str] | None, list]:
    """`root/<class>/*` or `root/{train,val,test}/<class>/*`: paths, class names, splits, rejects.

    Split folders are named as `shared.splits` reads them: `val`, `valid` and `dev` are the
    validation set, or the test set with `dev_split="test"` (a dataset that ships train/ and
    val/ only, such as hymenoptera, uses its val/ as the test set).
    """

    def reason(file: Path) -> str:
        return "" if file.suffix.lower() in IMAGE_SUFFIXES else unread_reason(file)

    found, rejects, layout = class_folder_files(root, dev_split, reason)
    paths, names, splits = ([f[i] for f in found] for i in range(3))
    if not paths:
        raise DataError(
            f"{root}: no images found; expected {root}/<class>/*.png|jpg|jpeg|bmp "
            f"(optionally under train/, val/, test/)"
        )
    return paths, names, (splits if layout else None), rejects


def unread_reason(file: Path) -> str:
    """Why a file in a class folder is not used: another image format, or no image at all."""
    kind = OTHER_IMAGE_SUFFIXES.get(file.suffix.lower())
    if kind:
        return (
            f"{kind} image: not a format the app trains on (PNG, JPEG, BMP); convert it to use "
            "it (a lone GIF in a photo set is often a placeholder)"
        )
    return f"not an image file ({file.suffix or 'no suffix'})"


def read_manifest(
    path: Path, split_column: str | None = None, dev_split: str = "validation"
) -> tuple[list[str], list[str], list[str] | None, list]:
    """A CSV with `path,label` and optionally a split column (`split_column`, default `split`);
    relative paths are from the CSV's folder. An unknown split value stops with one line."""
    frame, given = read_manifest_frame(path, split_column, dev_split)
    has_split = len(given) > 0 and given[0] is not None
    paths, names, splits, rejects = [], [], [], []
    for row, (record, split) in enumerate(
        zip(frame.itertuples(index=False), given, strict=True), start=2
    ):
        file, label = str(record.path).strip(), str(record.label).strip()
        if not file or not label:
            rejects.append((file or f"{path}:{row}", f"row {row}: empty path or label"))
            continue
        full = Path(file) if Path(file).is_absolute() else path.parent / file
        paths.append(str(full))
        names.append(label)
        splits.append(split)
    if not paths:
        raise DataError(f"{path}: no usable rows (path,label)")
    return paths, names, (splits if has_split else None), rejects


def check_files(paths: list[str], max_pixels: int) -> tuple[list[str | None], list[bool]]:
    """Decode every file once (in threads): a reason per file ('' when good) and its grayness."""

    def check(path):
        try:
            gray = image_info(path, max_pixels)[2]
            read_image(path, 1, max_pixels)
            return "", gray
        except ImageError as exc:
            return str(exc).removeprefix(f"{path}: "), False

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(check, paths))
    return [r[0] for r in results], [r[1] for r in results]


def _from_files(paths, names, own, rejects, fmt, channels, max_pixels, plan) -> ImageData:
    reasons, gray = check_files(paths, max_pixels)
    keep = [i for i, reason in enumerate(reasons) if not reason]
    rejects = rejects + [(paths[i], reasons[i]) for i in range(len(paths)) if reasons[i]]
    if not keep:
        raise DataError(
            f"none of the {len(paths)} image files could be read; first: {rejects[0][1]}"
        )
    paths = [paths[i] for i in keep]
    names = [names[i] for i in keep]
    own = [own[i] for i in keep] if own is not None else None
    class_names = sorted(set(names))
    lookup = {name: index for index, name in enumerate(class_names)}
    labels = np.array([lookup[n] for n in names], dtype=np.int32)
    channels = channels or (1 if all(gray[i] for i in keep) else 3)
    parts = {}
    groups = np.array([s or "" for s in own]) if own is not None else None
    for split, index in _split_indices(labels, groups, plan).items():
        parts[split] = Split(labels[index], paths=[paths[i] for i in index])
    own_splits = sorted(set(own) - {None}) if own is not None else []
    return ImageData(class_names, channels, parts, fmt, own_splits, rejects)


# ---------------------------------------------------------------------------------------------
# array sources


def read_idx_file(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as an array of its stored type and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX size mismatch: header says {shape} ({expected:,} bytes), "
            f"file has {len(raw):,}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-style pairs `<prefix>-images-idx3-ubyte[.gz]` + `<prefix>-labels-idx1-ubyte[.gz]`."""
    arrays = {}
    for image_file in sorted(folder.iterdir()):
        match = IDX_IMAGES.match(image_file.name)
        if not match:
            continue
        prefix = match["prefix"]
        split = IDX_SPLITS.get(prefix.lower().split("-")[-1].split("_")[-1])
        if split is None:
            raise DataError(f"{image_file}: cannot tell the split from the prefix {prefix!r}")
        candidates = [
            folder / f"{prefix}{sep}labels{dot}idx1-ubyte{gz}"
            for sep in "-_."
            for dot in "-."
            for gz in ("", ".gz")
        ]
        label_file = next((c for c in candidates if c.exists()), None)
        if label_file is None:
            raise DataError(f"{image_file}: no matching {prefix}-labels-idx1-ubyte[.gz] file")
        images, labels = read_idx_file(image_file), read_idx_file(label_file)
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{image_file}: expected images (n, h, w) and labels (n,)")
        arrays[split] = (images, labels)
    if not arrays:
        raise DataError(f"{folder}: no train-images-idx3-ubyte[.gz] or t10k-images file")
    return arrays


def read_npz(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`x_train`/`y_train`/... (Keras) or `train_images`/`train_labels`/... (MedMNIST) arrays.

    Images over `max_pixels` each are refused from the arrays' headers, before decoding."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from exc
    with archive:
        keys = set(archive.files)
        image_keys = [image.format(split) for image, _ in NPZ_KEYS for split in SPLITS]
        check_npz_pixels(path, image_keys, max_pixels)
        arrays = {}
        for image_key, label_key in NPZ_KEYS:
            for split, name in (("train", "train"), ("val", "val"), ("test", "test")):
                if image_key.format(name) in keys and label_key.format(name) in keys:
                    try:
                        arrays[split] = (
                            archive[image_key.format(name)],
                            archive[label_key.format(name)],
                        )
                    except ValueError as exc:  # object arrays need pickle: refused
                        raise DataError(f"{path}: {image_key.format(name)}: {exc}") from exc
            if arrays:
                break
    if "train" not in arrays:
        raise DataError(
            f"{path}: expected arrays x_train/y_train (and x_test/y_test) or train_images/"
            f"train_labels; found {', '.join(sorted(keys)) or 'none'}"
        )
    return arrays


def _from_arrays(
    arrays: dict, fmt: str, channels: int | None, plan: SplitPlan, pooled: bool = False
) -> ImageData:
    checked = {}
    for split, (images, labels) in arrays.items():
        images, labels = np.asarray(images), np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{split}: expected one integer label per image, got labels {labels.shape} for "
                f"images {images.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
            raise DataError(f"{split}: labels must be non-negative integers, got {labels.dtype}")
        checked[split] = (to_uint8(images, split), labels.astype(np.int64))
    sizes = {v[0].shape[1:3] for v in checked.values()}
    if len(sizes) > 1:
        raise DataError(f"image sizes differ between splits: {sorted(sizes)}")
    stored = {v[0].shape[-1] for v in checked.values()}
    channels = channels or (1 if stored == {1} else 3)
    values = np.unique(np.concatenate([v[1] for v in checked.values()]))
    lookup = {int(v): i for i, v in enumerate(values)}
    class_names = [str(int(v)) for v in values]
    own = [] if pooled else sorted(checked)
    merged = {
        s: (set_channels(x, channels), np.array([lookup[int(v)] for v in y], np.int32))
        for s, (x, y) in checked.items()
    }
    # Splits the data lacks are drawn from its train split.
    x_train, y_train = merged["train"]
    groups = np.array(["train"] * len(y_train))
    parts = {}
    for split, index in _split_indices(y_train, groups, plan, present=set(merged)).items():
        parts[split] = Split(y_train[index], images=x_train[index])
    for split in merged:
        if split != "train":
            parts[split] = Split(merged[split][1], images=merged[split][0])
    return ImageData(class_names, channels, parts, fmt, own)


# ---------------------------------------------------------------------------------------------
# splits


def _split_indices(labels, groups, plan: SplitPlan, present=None) -> dict:
    """Indices per split: the data's own where given, the missing ones drawn stratified."""
    n = len(labels)
    if groups is None:
        groups = np.array(["train"] * n)
    groups = np.where(groups == "", "train", groups)
    present = set(present or groups)
    out = {s: np.flatnonzero(groups == s) for s in SPLITS if s in present and s in set(groups)}
    pool = out.get("train", np.arange(0))
    missing = [s for s in ("val", "test") if s not in present]
    for split in reversed(missing):  # test first, then val, from what remains
        share = plan.test_fraction if split == "test" else plan.val_fraction
        if split == "val" and "test" in missing:
            share = share / (1 - plan.test_fraction)
        pool, drawn = _stratified(pool, labels[pool], share, plan.seed)
        out[split] = drawn
    out["train"] = pool
    return {s: np.sort(out[s]) for s in SPLITS if s in out}


def _stratified(index: np.ndarray, labels: np.ndarray, share: float, seed: int):
    if len(index) < 3:
        raise DataError(f"too few images to split ({len(index)}); need at least 3 per split")
    counts = np.bincount(labels) if len(labels) else np.array([0])
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(index, test_size=share, random_state=seed, stratify=stratify)
    except ValueError:  # a share smaller than the number of classes: draw without strata
        return train_test_split(index, test_size=share, random_state=seed)


# ---------------------------------------------------------------------------------------------
# tf.data


def decode_file(path, image_size, channels: int):
    """tf.data map function: file -> uint8 (height, width, channels) at `image_size`."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
    image = image[..., : tf.minimum(tf.shape(image)[-1], 3)]  # drop alpha
    have = tf.shape(image)[-1]
    if channels == 1:
        image = tf.cond(have == 3, lambda: tf.image.rgb_to_grayscale(image), lambda: image[..., :1])
    else:
        image = tf.cond(
            have == 1, lambda: tf.image.grayscale_to_rgb(image[..., :1]), lambda: image[..., :3]
        )
    image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return tf.ensure_shape(image, [*image_size, channels])


def make_dataset(
    split: Split,
    image_size,
    channels: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    cache: str = "memory",
    cache_path: str | None = None,
    labels: bool = True,
) -> tf.data.Dataset:
    """Batches of (uint8 images, labels): parallel decode, cache, shuffle each epoch, prefetch.

    With the memory cache, files are decoded once (in parallel) into one array, and batches are
    gathered from it as from any in-memory array: shuffling decoded images one by one through
    `Dataset.shuffle` made an epoch about a quarter slower than a bare `fit` on the same array.
    """
    if split.images is None and cache == "memory":
        split = Split(split.labels, images=decode_all(split.paths, image_size, channels))
    if split.images is not None:
        if labels:
            return in_memory_dataset(split.images, split.labels, batch_size, shuffle, seed)
        return tf.data.Dataset.from_tensor_slices(split.images).batch(batch_size).prefetch(-1)
    autotune = tf.data.AUTOTUNE
    paths = tf.data.Dataset.from_tensor_slices((split.paths, split.labels))
    if shuffle and cache == "none":  # streaming: shuffle the file names, then decode
        paths = paths.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    size = list(image_size)
    dataset = paths.map(
        lambda p, y: (decode_file(p, size, channels), y), num_parallel_calls=autotune
    )
    if cache == "disk":
        dataset = dataset.cache(cache_path or "")
    if shuffle and cache == "disk":
        dataset = dataset.shuffle(min(len(split), 20_000), seed=seed, reshuffle_each_iteration=True)
    if not labels:
        dataset = dataset.map(lambda x, y: x)
    return dataset.batch(batch_size).prefetch(autotune)


def decode_all(paths: list[str], image_size, channels: int) -> np.ndarray:
    """Every file decoded at `image_size`, in parallel, as one uint8 (n, h, w, c) array."""
    size = list(image_size)
    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(lambda p: decode_file(p, size, channels), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(1024)
        .prefetch(tf.data.AUTOTUNE)
    )
    parts = [batch.numpy() for batch in dataset]
    return np.concatenate(parts) if parts else np.zeros((0, *size, channels), np.uint8)


def split_images(split: Split, indices, image_size, channels: int) -> np.ndarray:
    """uint8 images of some rows of a split at the model's size (for plots and Grad-CAM)."""
    indices = np.asarray(indices, dtype=int)
    if split.images is not None:
        return split.images[indices]
    files = [split.paths[i] for i in indices]
    return np.stack([decode_file(f, list(image_size), channels).numpy() for f in files])


def summary(data: ImageData) -> dict:
    return {
        "format": data.format,
        "classes": data.class_names,
        "channels": data.channels,
        "own_splits": data.own_splits,
        "splits": {
            s: {
                "images": len(p),
                "per_class": np.bincount(p.labels, minlength=len(data.class_names)).tolist(),
            }
            for s, p in data.splits.items()
        },
        "rejected_files": len(data.rejects),
    }


def rejects_frame(rejects: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rejects, columns=["path", "reason"])


# ---------------------------------------------------------------------------------------------
# the prepared file list and the test list


def manifest_frame(data: ImageData) -> pd.DataFrame:
    """Every checked file with its class and split (path, label, split), for the prepare cache."""
    rows = [
        (path, data.class_names[label], split)
        for split, part in data.splits.items()
        for path, label in zip(part.paths, part.labels, strict=True)
    ]
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def from_manifest(path: Path, info: dict) -> ImageData:
    """The `ImageData` of a cached file list (`manifest_frame`), its `prepare.json` `info` and
    the rejects.csv beside it: the files are not checked again."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    lookup = {name: i for i, name in enumerate(info["classes"])}
    splits = {}
    for split in SPLITS:
        part = frame[frame.split == split]
        labels = np.array([lookup[v] for v in part.label], dtype=np.int32)
        splits[split] = Split(labels, paths=part.path.tolist())
    rejects_file = path.parent / "rejects.csv"
    rejects = (
        pd.read_csv(rejects_file, dtype=str, keep_default_na=False)
        if rejects_file.exists()
        else None
    )
    pairs = list(rejects.itertuples(index=False, name=None)) if rejects is not None else []
    return ImageData(
        info["classes"], info["channels"], splits, info["format"], info["own_splits"], pairs
    )


def write_test_list(run: RunDir, test: Split, channels: int) -> Path:
    """The test images as `score` takes them: one path a line. Images that came as arrays
    (NPZ, IDX) are written as PNG files first, under test_split/."""
    paths = test.paths
    if paths is None:
        from PIL import Image

        folder = run.subdir("test_split")
        paths = []
        for index, image in enumerate(test.images):
            target = folder / f"{index:06d}.png"
            with atomic_path(target, suffix=".png") as tmp:
                Image.fromarray(image[..., 0] if channels == 1 else image).save(tmp, format="PNG")
            paths.append(str(target))
    target = run.path / TEST_LIST
    write_text(target, "".join(f"{Path(path).absolute()}\n" for path in paths))
    return target


def typical_size(data: ImageData, sample: int = 200) -> tuple[int, int]:
    """(height, width) of the train images: the arrays' own, or the median over up to
    `sample` train files (headers only, evenly spaced so the pick is deterministic)."""
    train = data.splits["train"]
    if train.images is not None:
        return int(train.images.shape[1]), int(train.images.shape[2])
    from PIL import Image

    paths = train.paths[:: max(1, len(train.paths) // sample)][:sample]
    sizes = []
    for path in paths:
        with Image.open(path) as image:  # reads the header, not the pixels
            sizes.append(image.size[::-1])
    height, width = np.median(np.array(sizes), axis=0)
    return int(round(height)), int(round(width))


def auto_image_size(own: tuple[int, int], low: int, high: int) -> list[int]:
    """`own` (height, width) scaled, aspect kept, so the long side is at most `high` and the
    short side at least `low` (the long side winning when both cannot hold)."""
    height, width = own
    scale = min(1.0, high / max(height, width))
    scale = max(scale, min(low / min(height, width), high / max(height, width)))
    return [max(1, int(round(height * scale))), max(1, int(round(width * scale)))]
