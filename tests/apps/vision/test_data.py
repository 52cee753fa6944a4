"""Every vision reader on small files in exactly its format, and its bad input."""

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from apps.vision import data as vdata
from shared.images import to_uint8
from shared.io import DataError
from tests.apps.vision.conftest import CLASSES, arrays, write_folder, write_hymenoptera

PLAN = vdata.SplitPlan(val_fraction=0.2, test_fraction=0.2, seed=0)


def read(path, fmt="auto", channels=None, max_pixels=10_000_000, plan=PLAN):
    return vdata.read(path, fmt, channels, max_pixels, plan)


def test_folder_reader_splits_stratified_and_rejects_bad_files(image_folder):
    (image_folder / "dots" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (image_folder / "dots" / "empty.jpg").write_bytes(b"")
    (image_folder / "dots" / "notes.txt").write_text("not an image")
    (image_folder / "stray.png").write_bytes(b"x")
    data = read(image_folder)
    assert data.format == "folder" and data.class_names == sorted(CLASSES)
    assert data.channels == 3  # some files are RGB
    assert {s: len(p) for s, p in data.splits.items()} == {"train": 18, "val": 6, "test": 6}
    for part in data.splits.values():
        assert np.bincount(part.labels, minlength=3).min() >= 2  # stratified
    reasons = {path.split("/")[-1]: reason for path, reason in data.rejects}
    assert set(reasons) == {"broken.png", "empty.jpg", "notes.txt", "stray.png"}
    assert "empty file" in reasons["empty.jpg"] and "not an image file" in reasons["notes.txt"]
    assert "class sub-folder" in reasons["stray.png"]
    everything = sum((p.paths for p in data.splits.values()), [])
    assert len(everything) == len(set(everything)) == 30
    assert read(image_folder).splits["test"].paths == data.splits["test"].paths  # seeded


def test_folder_with_own_train_and_test(tmp_path):
    write_folder(tmp_path / "d" / "train", per_class=6)
    write_folder(tmp_path / "d" / "test", per_class=2, seed=1)
    (tmp_path / "d" / "extra").mkdir()
    (tmp_path / "d" / "extra" / "x.png").write_bytes(b"x")
    data = read(tmp_path / "d", channels=1)
    assert data.rejects == [
        (str(tmp_path / "d" / "extra" / "x.png"), "not under train/, val/ or test/")
    ]
    assert data.own_splits == ["test", "train"] and data.channels == 1
    assert len(data.splits["test"]) == 6
    assert all("/test/" in p for p in data.splits["test"].paths)
    assert len(data.splits["train"]) + len(data.splits["val"]) == 18


def test_hymenoptera_layout_val_is_the_test_set_and_the_gif_is_rejected_with_the_reason(
    tmp_path,
):
    root = write_hymenoptera(tmp_path / "hymenoptera_data")
    plan = vdata.SplitPlan(val_fraction=0.25, test_fraction=0.2, seed=0, dev_split="test")
    data = read(root, plan=plan)
    assert data.class_names == ["ants", "bees"] and data.own_splits == ["test", "train"]
    test = data.splits["test"]
    assert len(test) == 10 and all("/val/" in p for p in test.paths)
    assert len(data.splits["train"]) == 12 and len(data.splits["val"]) == 4  # from train/
    assert all("/train/" in p for s in ("train", "val") for p in data.splits[s].paths)
    [(path, reason)] = data.rejects
    assert path.endswith("train/ants/imageNotFound.gif") and reason.startswith("GIF image")
    # By default val/ is the validation set and the test set is drawn from train/.
    default = read(root, plan=vdata.SplitPlan(val_fraction=0.25, test_fraction=0.2, seed=0))
    assert all("/val/" in p for p in default.splits["val"].paths)
    assert all("/train/" in p for p in default.splits["test"].paths)


def test_folders_naming_one_split_twice_are_refused(tmp_path):
    for split in ("train", "val", "test"):
        write_folder(tmp_path / "d" / split, per_class=2)
    plan = vdata.SplitPlan(dev_split="test")
    with pytest.raises(DataError, match="two folders name the same split"):
        read(tmp_path / "d", plan=plan)


def test_folder_bad_input(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        read(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        read(tmp_path / "missing")
    bad = tmp_path / "bad" / "cls"
    bad.mkdir(parents=True)
    (bad / "a.png").write_text("text")
    with pytest.raises(DataError, match="none of the 1 image files could be read"):
        read(tmp_path / "bad")


def write_idx(path, array: np.ndarray, compress: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def test_idx_gzipped_pair_and_plain_pair(tmp_path):
    x, y = arrays(6)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y, True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x[:6], False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y[:6], False)
    data = read(tmp_path)
    assert data.format == "idx" and data.own_splits == ["test", "train"] and data.channels == 1
    assert data.class_names == ["0", "1", "2"]
    test = data.splits["test"]
    np.testing.assert_array_equal(test.images[..., 0], x[:6])
    np.testing.assert_array_equal(test.labels, y[:6])
    assert len(data.splits["train"]) + len(data.splits["val"]) == 18
    assert data.splits["train"].images.dtype == np.uint8


def test_idx_bad_input(tmp_path):
    x, y = arrays(2)
    write_idx(tmp_path / "train-images-idx3-ubyte", x, False)
    with pytest.raises(DataError, match="no matching train-labels"):
        read(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x56\x78junk")
    with pytest.raises(DataError, match="bad magic number"):
        read(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y, False)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="size mismatch"):
        read(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read(tmp_path)


def test_npz_keras_and_medmnist_keys(tmp_path):
    x, y = arrays(6)
    keras_style = tmp_path / "k.npz"
    np.savez(keras_style, x_train=x, y_train=y, x_test=x[:3], y_test=y[:3])
    data = read(keras_style)
    assert data.format == "npz" and data.own_splits == ["test", "train"]
    assert len(data.splits["test"]) == 3
    med = tmp_path / "m.npz"
    rgb = np.repeat(x[..., None], 3, axis=-1).astype(np.float32) / 255.0
    labels = y[:, None].astype(np.int64) + 5  # (n, 1) labels, not starting at 0
    np.savez(
        med,
        train_images=rgb,
        train_labels=labels,
        val_images=rgb[:3],
        val_labels=labels[:3],
        test_images=rgb[:3],
        test_labels=labels[:3],
    )
    data = read(med)
    assert data.channels == 3 and data.class_names == ["5", "6", "7"]
    assert data.splits["val"].images.dtype == np.uint8 and data.splits["val"].images.shape == (
        3,
        16,
        16,
        3,
    )
    np.testing.assert_array_equal(data.splits["val"].images[..., 0], x[:3])
    np.testing.assert_array_equal(data.splits["val"].labels, y[:3])


def test_npz_wide_range_images_follow_the_one_rule_of_shared_images(tmp_path):
    # 16-bit values (and negatives) stretch min..max to 0..255, as medical reads them too.
    x, y = arrays(6)
    wide = x.astype(np.int32) * 40 - 3000
    np.savez(tmp_path / "w.npz", x_train=wide, y_train=y, x_test=wide[:3], y_test=y[:3])
    data = read(tmp_path / "w.npz")
    np.testing.assert_array_equal(data.splits["test"].images, to_uint8(wide[:3], "test"))
    test = data.splits["test"].images.astype(int)
    assert test.min() == 0 and test.max() == 255
    scaled = (x[:3].astype(float) - x[:3].min()) / (x[:3].max() - x[:3].min()) * 255
    np.testing.assert_allclose(test[..., 0], scaled, atol=1)


def test_npz_bad_input(tmp_path):
    x, y = arrays(2)
    missing = tmp_path / "missing.npz"
    np.savez(missing, images=x, labels=y)
    with pytest.raises(DataError, match="expected arrays x_train/y_train"):
        read(missing)
    objects = tmp_path / "obj.npz"
    np.savez(objects, x_train=np.array([x[0], "a"], dtype=object), y_train=np.array([0, 1]))
    with pytest.raises(DataError, match="x_train"):
        read(objects)
    mismatched = tmp_path / "mm.npz"
    np.savez(mismatched, x_train=x, y_train=y[:3])
    with pytest.raises(DataError, match="one integer label per image"):
        read(mismatched)
    fake = tmp_path / "fake.npz"
    fake.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        read(fake)


def test_csv_manifest(tmp_path, image_folder):
    rows = [
        (f"images/{c}/{i}.png" if i % 3 != 1 else str(image_folder / c / f"{i}.png"), c)
        for c in CLASSES
        for i in (0, 1, 2, 3, 6, 7)
    ]
    rows.append(("images/dots/absent.png", "dots"))
    rows.append(("", "dots"))
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "m.csv", index=False)
    data = read(tmp_path / "m.csv")
    assert data.format == "csv" and data.class_names == sorted(CLASSES)
    assert sum(len(p) for p in data.splits.values()) == 18
    reasons = " | ".join(r for _, r in data.rejects)
    assert "no such file" in reasons and "empty path or label" in reasons


def test_csv_manifest_split_column_named_by_the_config(tmp_path, image_folder):
    rows = [
        (f"images/{c}/{i}.png", c, ("train", "train", "dev", "Test ")[i % 4])
        for c in CLASSES
        for i in range(8)
    ]
    pd.DataFrame(rows, columns=["path", "label", "fold"]).to_csv(tmp_path / "m.csv", index=False)
    plan = vdata.SplitPlan(split_column="fold")
    data = read(tmp_path / "m.csv", plan=plan)
    assert {s: len(p) for s, p in data.splits.items()} == {"train": 12, "val": 6, "test": 6}
    assert data.own_splits == ["test", "train", "val"]
    as_test = read(tmp_path / "m.csv", plan=vdata.SplitPlan(split_column="fold", dev_split="test"))
    assert len(as_test.splits["test"]) == 12 and as_test.own_splits == ["test", "train"]
    # Without data.split_column the `fold` column means nothing: the splits are drawn.
    assert read(tmp_path / "m.csv").own_splits == []


def test_csv_manifest_unknown_split_value_or_missing_split_column_is_one_line(tmp_path):
    rows = [("a.png", "x", "train"), ("b.png", "y", "holdout")]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="unknown split value\\(s\\) 'holdout'"):
        read(tmp_path / "m.csv")
    with pytest.raises(DataError, match="fold \\(data.split_column\\)"):
        read(tmp_path / "m.csv", plan=vdata.SplitPlan(split_column="fold"))


def test_csv_manifest_bad_input(tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="missing required column"):
        read(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read(tmp_path / "empty.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="expected an image folder"):
        read(tmp_path / "x.json")


def test_file_pipeline_decodes_resizes_and_converts(image_folder, tmp_path):
    data = read(image_folder, channels=1)
    part = data.splits["train"]
    epochs = {}
    for cache in ("memory", "disk", "none"):
        dataset = vdata.make_dataset(part, [12, 12], 1, 8, True, 1, cache, str(tmp_path / "c"))
        batches = list(dataset)
        images = np.concatenate([b[0].numpy() for b in batches])
        labels = np.concatenate([b[1].numpy() for b in batches])
        assert images.shape == (18, 12, 12, 1) and images.dtype == np.uint8, cache
        assert sorted(labels.tolist()) == sorted(part.labels.tolist()), cache
        # The same multiset of images whatever the cache: compare sorted per-image sums.
        epochs[cache] = sorted(images.reshape(18, -1).sum(axis=1).tolist())
    assert epochs["memory"] == epochs["disk"] == epochs["none"]
    assert any(tmp_path.glob("c*"))  # the disk cache was written
    # The decoded file matches Pillow's pixels at the native size (gray files only).
    gray = next(
        p for p in part.paths if Image.open(p).mode == "L" and Image.open(p).size == (16, 16)
    )
    decoded = vdata.split_images(part, [part.paths.index(gray)], [16, 16], 1)[0, ..., 0]
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(gray)))
    rgb = vdata.split_images(part, [0, 1], [16, 16], 3)
    assert rgb.shape == (2, 16, 16, 3)


def test_idx_folder_of_only_t10k_files_is_split_into_all_three(tmp_path):
    x, y = arrays(20)  # 60 images, 3 classes
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x, False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y, False)
    data = read(tmp_path)
    assert data.format == "idx" and data.own_splits == []
    sizes = {s: len(p) for s, p in data.splits.items()}
    assert set(sizes) == {"train", "val", "test"} and sum(sizes.values()) == 60
    assert min(sizes.values()) >= 6  # 15% each at least, stratified over 3 classes
    for part in data.splits.values():  # every class in every split
        assert set(part.labels.tolist()) == {0, 1, 2}


def test_default_image_size_is_the_datas_own_within_16_to_64_px():
    from apps.vision.data import auto_image_size

    assert auto_image_size((28, 28), 16, 64) == [28, 28]  # MNIST keeps its 28 px
    assert auto_image_size((8, 8), 16, 64) == [16, 16]  # sklearn digits grow to 16
    assert auto_image_size((375, 500), 16, 64) == [48, 64]  # photos shrink, aspect kept


def test_prepare_says_the_image_size_it_took_from_the_data(tmp_path, capsys):
    from tests.apps.vision.conftest import cli, tiny_sets, write_folder

    images = write_folder(tmp_path / "images", per_class=4, sizes=(20, 20))
    assert cli("prepare", *tiny_sets(tmp_path, images, "data.image_size=[]")) == 0
    assert "prepare: image size 20x20, from the data's own 20x20" in capsys.readouterr().out
