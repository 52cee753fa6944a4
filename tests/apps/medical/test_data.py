"""Medical readers on small files written in the public formats; patient-level splits."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from apps.medical import data as mdata
from apps.medical.dicom import is_colour, is_dicom, read_dicom, write_dicom
from shared.images import ImageError
from shared.io import DataError
from tests.apps.medical.conftest import (
    dicom_of,
    picture,
    write_dicom_as,
    write_npz,
    write_png_folder,
    write_retinamnist,
)

OPTIONS = mdata.ReadOptions(image_size=(16, 16), seed=0)


def test_npz_with_class_labels_keeps_its_splits_and_patients(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    data = mdata.read(path, "auto", OPTIONS)
    assert data.format == "npz" and data.task == "binary" and data.class_names == ["0", "1"]
    assert data.own_splits == ["train", "val", "test"] and data.channels == 1
    assert [len(data.splits[s]) for s in mdata.SPLITS] == [64, 16, 16]
    train = data.splits["train"]
    assert train.images.shape == (64, 16, 16, 1) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32 and set(train.labels) == {0, 1}
    assert train.patients[0] == "train-0" and data.leakage["overlapping_patients"] == 0


def test_npz_labels_n_by_1_and_resizing(tmp_path):
    arrays = dict(np.load(write_npz(tmp_path / "d.npz", patients=False)))
    for split in mdata.SPLITS:
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:, None]
    np.savez(tmp_path / "col.npz", **arrays)
    data = mdata.read(tmp_path / "col.npz", "npz", mdata.ReadOptions(image_size=(8, 12)))
    assert data.task == "binary" and data.splits["val"].labels.ndim == 1
    assert data.splits["train"].images.shape == (64, 8, 12, 1)


def test_npz_multilabel(tmp_path):
    data = mdata.read(write_npz(tmp_path / "m.npz", multilabel=True), "auto", OPTIONS)
    assert data.task == "multilabel" and data.class_names == ["finding_0", "finding_1"]
    labels = data.splits["train"].labels
    assert labels.shape == (64, 2) and labels.dtype == np.float32 and set(labels.ravel()) <= {0, 1}


def test_npz_without_val_and_test_is_split_by_patient(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    np.savez(
        tmp_path / "t.npz",
        train_images=np.stack([picture(y, 16, rng) for y in labels]),
        train_labels=labels,
        train_patient_ids=np.array([f"p{i // 3}" for i in range(60)]),
    )
    data = mdata.read(tmp_path / "t.npz", "auto", OPTIONS)
    assert data.own_splits == ["train"] and sum(len(p) for p in data.splits.values()) == 60
    groups = [set(data.splits[s].patients) for s in mdata.SPLITS]
    assert all(groups) and not (
        groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]
    )
    assert data.leakage == {"patients_known": 20, "overlapping_patients": 0, "examples": []}


def test_given_splits_that_share_a_patient_are_refused_or_reported(tmp_path):
    arrays = dict(np.load(write_npz(tmp_path / "d.npz")))
    arrays["test_patient_ids"] = arrays["test_patient_ids"].astype("U16")
    arrays["test_patient_ids"][0] = "train-3"
    np.savez(tmp_path / "leak.npz", **arrays)
    with pytest.raises(DataError, match=r"patient leakage: 1 patient.*train-3 in test\+train"):
        mdata.read(tmp_path / "leak.npz", "auto", OPTIONS)
    allowed = mdata.ReadOptions(image_size=(16, 16), allow_patient_overlap=True)
    data = mdata.read(tmp_path / "leak.npz", "auto", allowed)
    assert data.leakage["overlapping_patients"] == 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros(3)}, "expected train_images"),
        ({"train_images": np.zeros((4, 8, 8))}, "has no train_labels"),
        ({"train_images": np.zeros((4, 8, 8)), "train_labels": np.zeros(3)}, "expected labels"),
        ({"train_images": np.zeros((4, 8)), "train_labels": np.zeros(4)}, "expected images"),
        ({"train_images": np.full((4, 8, 8), np.nan), "train_labels": np.arange(4) % 2}, "NaN"),
        ({"train_images": np.zeros((4, 8, 8)), "train_labels": -np.ones(4)}, "non-negative"),
    ],
)
def test_bad_npz(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        mdata.read(tmp_path / "bad.npz", "auto", OPTIONS)


def test_pickled_or_corrupt_npz_is_refused(tmp_path):
    np.savez(
        tmp_path / "obj.npz",
        train_images=np.array([{"a": 1}], dtype=object),
        train_labels=np.zeros(1),
    )
    with pytest.raises(DataError, match="not a readable NPZ"):
        mdata.read(tmp_path / "obj.npz", "auto", OPTIONS)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a readable NPZ"):
        mdata.read(tmp_path / "junk.npz", "auto", OPTIONS)


def test_dicom_with_window_tags_monochrome2(tmp_path):
    image = picture(1, 16, np.random.default_rng(0))
    path = dicom_of(image, tmp_path / "a.dcm", window=(2000.0, 4000.0))
    assert is_dicom(path)
    np.testing.assert_allclose(read_dicom(path)[..., 0], image, atol=1)
    # A narrow window from the file saturates: values above centre + width/2 become 255.
    narrow = dicom_of(image, tmp_path / "n.dcm", window=(1000.0, 200.0))
    out = read_dicom(narrow)[..., 0]
    assert out[image > 80].min() == 255 and out[image < 50].max() == 0


def test_dicom_without_window_tags_uses_the_image_range(tmp_path):
    image = picture(1, 16, np.random.default_rng(1))
    out = read_dicom(dicom_of(image, tmp_path / "b.dcm"))[..., 0]
    assert out.min() == 0 and out.max() == 255  # stretched to its own range
    assert np.corrcoef(out.ravel(), image.ravel())[0, 1] > 0.999


def test_dicom_monochrome1_is_inverted(tmp_path):
    image = picture(1, 16, np.random.default_rng(2))
    stored = np.round((255 - image.astype(np.float64)) / 255 * 4000)
    path = write_dicom(
        tmp_path / "m1.dcm", stored, "P", photometric="MONOCHROME1", window=(2000.0, 4000.0)
    )
    np.testing.assert_allclose(read_dicom(path)[..., 0], image, atol=1)


def test_dicom_rescale_slope_intercept_and_presets(tmp_path):
    hu = np.linspace(-1000, 1000, 256).reshape(16, 16)  # Hounsfield units
    stored = np.round((hu + 1024) / 0.5)  # value = stored * 0.5 - 1024
    path = write_dicom(
        tmp_path / "ct.dcm", stored, "P", slope=0.5, intercept=-1024.0, window=(0.0, 2000.0)
    )
    own = read_dicom(path)[..., 0].astype(float)
    np.testing.assert_allclose(own, np.round((hu + 1000) / 2000 * 255), atol=1)
    lung = read_dicom(path, window="lung")[..., 0]  # centre -600, width 1500: -1350..150 HU
    assert lung[hu <= -1350].size == 0 and lung[hu >= 150].min() == 255
    expected = np.clip((hu + 1350) / 1500, 0, 1) * 255
    np.testing.assert_allclose(lung, np.round(expected), atol=1)
    bone = read_dicom(path, window="bone")[..., 0]  # centre 400, width 1800: -500..1300 HU
    assert bone[hu < -500].max() == 0 and bone.max() < 255


def test_dicom_without_pixel_data_and_broken_files_are_refused(tmp_path):
    empty = write_dicom(tmp_path / "np.dcm", np.zeros((4, 4)), "P", pixel_data=False)
    with pytest.raises(ImageError, match="DICOM without pixel data"):
        read_dicom(empty)
    (tmp_path / "text.dcm").write_text("hello")
    with pytest.raises(ImageError, match="not a DICOM file"):
        read_dicom(tmp_path / "text.dcm")
    raw = dicom_of(np.zeros((16, 16), np.uint8), tmp_path / "ok.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[:-100])  # pixel data cut short
    with pytest.raises(ImageError, match="cannot be decoded"):
        read_dicom(tmp_path / "cut.dcm")
    (tmp_path / "zero.dcm").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_dicom(tmp_path / "zero.dcm")


def test_folder_of_png_and_dicom_with_rejects(tmp_path):
    root = write_png_folder(tmp_path / "images", per_class=10)
    rng = np.random.default_rng(3)
    for i in range(4):
        dicom_of(
            picture(1, 20, rng),
            root / "abnormal" / f"d{i}.dcm",
            patient=f"D{i}",
            window=(2000.0, 4000.0),
        )
    write_dicom(root / "normal" / "empty.dcm", np.zeros((4, 4)), "E", pixel_data=False)
    (root / "normal" / "notes.txt").write_text("x")
    (root / "stray.png").write_bytes(b"")
    data = mdata.read(root, "auto", OPTIONS)
    assert data.format == "folder" and data.class_names == ["abnormal", "normal"]
    assert sum(len(p) for p in data.splits.values()) == 24
    reasons = {path.split("/")[-1]: reason for path, reason in data.rejects}
    assert reasons == {
        "stray.png": "not inside a class sub-folder",
        "notes.txt": "not an image or DICOM file (.txt)",
        "empty.dcm": "DICOM without pixel data",
    }
    assert mdata.positive_index(data.class_names, "") == 0  # 'normal' is the negative class


def test_csv_manifest_with_patient_ids_is_split_without_leakage(tmp_path):
    root = write_png_folder(tmp_path / "images", per_class=15)
    rows = ["path,label,patient_id"]
    for i, file in enumerate(sorted(root.rglob("*.png"))):
        rows.append(f"{file.relative_to(tmp_path)},{file.parent.name},pt{i % 10}")
    rows.append("images/missing.png,normal,pt1")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    data = mdata.read(tmp_path / "manifest.csv", "auto", OPTIONS)
    assert data.format == "csv" and sum(len(p) for p in data.splits.values()) == 30
    patients = [set(data.splits[s].patients) for s in mdata.SPLITS]
    assert sum(len(p) for p in patients) == 10  # every patient in exactly one split
    assert data.leakage["patients_known"] == 10 and data.leakage["overlapping_patients"] == 0
    assert data.rejects[0][0].endswith("missing.png") and "no such file" in data.rejects[0][1]


def test_csv_manifest_multilabel_findings(tmp_path):
    rng = np.random.default_rng(4)
    rows = ["path,label"]
    for i in range(12):
        Image.fromarray(picture(i % 2, 16, rng)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{['none', 'nodule|effusion', 'effusion'][i % 3]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = mdata.read(tmp_path / "m.csv", "auto", OPTIONS)
    assert data.task == "multilabel" and data.class_names == ["effusion", "nodule"]
    labels = np.concatenate([data.splits[s].labels for s in mdata.SPLITS])
    assert labels.shape == (12, 2) and labels.sum(axis=0).tolist() == [8, 4]


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        mdata.read(tmp_path / "nowhere", "auto", OPTIONS)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="expected a .npz"):
        mdata.read(tmp_path / "x.json", "auto", OPTIONS)
    (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="missing required column"):
        mdata.read(tmp_path / "m.csv", "auto", OPTIONS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        mdata.read(tmp_path / "empty", "auto", OPTIONS)


def test_colour_folder_is_read_in_colour_unless_channels_is_set(tmp_path):
    root = write_png_folder(tmp_path / "images", per_class=6)
    image = Image.open(root / "normal" / "0.png").convert("RGB")
    image.save(root / "normal" / "0.png")
    assert mdata.read(root, "auto", OPTIONS).channels == 3
    gray = mdata.read(root, "auto", mdata.ReadOptions(image_size=(16, 16), channels=1))
    assert gray.channels == 1 and gray.splits["train"].images.shape[-1] == 1


def test_retinamnist_layout_keeps_its_splits_rgb_and_five_grades(tmp_path):
    path = write_retinamnist(tmp_path / "retinamnist.npz")
    data = mdata.read(path, "auto", mdata.ReadOptions(image_size=(12, 12)))
    assert data.task == "multiclass" and data.class_names == ["0", "1", "2", "3", "4"]
    assert data.channels == 3 and data.own_splits == ["train", "val", "test"]
    assert {s: len(p) for s, p in data.splits.items()} == {"train": 60, "val": 20, "test": 20}
    assert data.splits["train"].labels.shape == (60,)  # the (n, 1) labels, flattened
    assert data.splits["test"].images.shape == (20, 12, 12, 3)


def test_dicom_encodings_of_one_image_read_alike(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 4000, (12, 10)).astype(np.uint16)
    read = {
        name: read_dicom(write_dicom_as(tmp_path / f"{name}.dcm", pixels, syntax))
        for name, syntax in (
            ("explicit", ExplicitVRLittleEndian),
            ("implicit", ImplicitVRLittleEndian),
            ("big_endian", ExplicitVRBigEndian),
            ("jpeg2000", JPEG2000Lossless),
        )
    }
    expected = np.round((pixels - pixels.min()) / np.ptp(pixels) * 255).astype(np.uint8)
    for name, image in read.items():
        np.testing.assert_array_equal(image[..., 0], expected, err_msg=name)


def test_rgb_dicom_stays_colour_without_a_window(tmp_path):
    # The ultrasound file in pydicom's tests (RGB, explicit VR big endian) was turned to gray
    # and stretched to its own range; colour DICOM is display values, as stored.
    rgb = np.random.default_rng(1).integers(20, 200, (12, 10, 3)).astype(np.uint8)
    path = write_dicom_as(tmp_path / "us.dcm", rgb, ExplicitVRBigEndian, "RGB", "US")
    gray = dicom_of(picture(0, 8, np.random.default_rng(0)), tmp_path / "g.dcm")
    assert is_colour(path) and not is_colour(gray)
    np.testing.assert_array_equal(read_dicom(path), rgb)
    root = tmp_path / "folder"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            write_dicom_as(
                root / label / f"{i}.dcm", rgb, ExplicitVRLittleEndian, "RGB", "US", f"{label}{i}"
            )
    data = mdata.read(root, "auto", mdata.ReadOptions(image_size=(12, 10)))
    assert data.channels == 3
    np.testing.assert_array_equal(data.splits["train"].images[0], rgb)


def test_a_folder_of_one_patient_cannot_be_split_by_patient_and_says_so(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            dicom_of(picture(0, 8, np.random.default_rng(i)), tmp_path / label / f"{i}.dcm")
    with pytest.raises(DataError, match="belongs to 1 patient \\(e.g. 'P1'\\)"):
        mdata.read(tmp_path, "auto", mdata.ReadOptions(image_size=(8, 8)))


def test_multi_frame_dicom_is_refused_from_its_header_naming_the_frames(tmp_path):
    frames = np.zeros((15, 10, 10), np.uint16)
    path = write_dicom_as(
        tmp_path / "rtdose.dcm", frames, ImplicitVRLittleEndian, modality="RTDOSE"
    )
    with pytest.raises(
        ImageError, match="multi-frame DICOM \\(15 frames of 10 x 10, modality RTDOSE\\)"
    ):
        read_dicom(path)


def test_csv_manifest_split_column_and_what_dev_means(tmp_path):
    root = write_png_folder(tmp_path / "images", per_class=8)
    rows = [
        (str(f.relative_to(tmp_path)), f.parent.name, ("train", "TRAIN", "dev", "test")[i % 4])
        for i, f in enumerate(sorted(root.rglob("*.png")))
    ]
    pd.DataFrame(rows, columns=["path", "label", "fold"]).to_csv(tmp_path / "m.csv", index=False)
    options = mdata.ReadOptions(image_size=(16, 16), split_column="fold")
    data = mdata.read(tmp_path / "m.csv", "auto", options)
    assert {s: len(p) for s, p in data.splits.items()} == {"train": 8, "val": 4, "test": 4}
    as_test = mdata.ReadOptions(image_size=(16, 16), split_column="fold", dev_split="test")
    data = mdata.read(tmp_path / "m.csv", "auto", as_test)
    assert len(data.splits["test"]) == 8 and data.own_splits == ["test", "train"]
    rows[3] = (rows[3][0], rows[3][1], "holdout")
    pd.DataFrame(rows, columns=["path", "label", "fold"]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="unknown split value\\(s\\) 'holdout'"):
        mdata.read(tmp_path / "m.csv", "auto", options)
    with pytest.raises(DataError, match="split \\(data.split_column\\)"):
        mdata.read(tmp_path / "m.csv", "auto", mdata.ReadOptions(split_column="split"))


def test_split_folders_val_as_test_and_a_stray_folder_is_rejected_not_skipped(tmp_path):
    write_png_folder(tmp_path / "d" / "train", per_class=8)
    write_png_folder(tmp_path / "d" / "val", per_class=3, seed=1)
    (tmp_path / "d" / "extra").mkdir()
    (tmp_path / "d" / "extra" / "x.png").write_bytes(b"x")
    options = mdata.ReadOptions(image_size=(16, 16), dev_split="test")
    data = mdata.read(tmp_path / "d", "auto", options)
    assert data.own_splits == ["test", "train"] and len(data.splits["test"]) == 6
    assert all("/val/" in i for i in data.splits["test"].ids)
    assert data.rejects == [
        (str(tmp_path / "d" / "extra" / "x.png"), "not under train/, val/ or test/")
    ]


STORED = np.arange(0, 4000, 16, dtype=np.float64).reshape(10, 25)  # 12-bit stored values


def test_dicom_sigmoid_and_linear_exact_windows_follow_the_standard(tmp_path):
    # PS3.3 C.11.2.1.3: SIGMOID y = 1 / (1 + exp(-4 (x - c) / w)); LINEAR_EXACT is a straight
    # line from c - w/2 to c + w/2, without LINEAR's half-pixel offsets.
    sigmoid = write_dicom(
        tmp_path / "s.dcm", STORED, "P", window=(2000, 1000), voi_function="SIGMOID"
    )
    expected = 255 / (1 + np.exp(-4 * (STORED - 2000) / 1000))
    np.testing.assert_allclose(read_dicom(sigmoid)[..., 0], np.round(expected), atol=1)
    exact = write_dicom(
        tmp_path / "e.dcm", STORED, "P", window=(2000, 1000), voi_function="LINEAR_EXACT"
    )
    expected = np.clip((STORED - 1500) / 1000, 0, 1) * 255
    np.testing.assert_allclose(read_dicom(exact)[..., 0], np.round(expected), atol=1)


def test_dicom_voi_lut_sequence_is_applied_in_place_of_the_window(tmp_path):
    # A square-root LUT whose entries reach 4095 in a 16-bit descriptor: shown over its own
    # entries' range, and preferred to the file's window (as pydicom's apply_voi_lut does).
    lut = np.round(np.sqrt(np.arange(4096) / 4095) * 4095)
    path = write_dicom(tmp_path / "l.dcm", STORED, "P", window=(100, 50), voi_lut=lut)
    expected = lut[STORED.astype(int)] / 4095 * 255
    np.testing.assert_allclose(read_dicom(path)[..., 0], np.round(expected), atol=1)
    # A named preset replaces the file's LUT with its LINEAR window.
    lung = read_dicom(path, window="lung")  # -1350..150: stored 0..150 only, the rest bright
    assert lung[..., 0][STORED > 160].min() == 255


@pytest.mark.parametrize(
    ("window", "function", "reason"),
    [
        ((2000, 0.5), "", "Window Width must be greater than or equal to 1"),
        ((2000, 0), "SIGMOID", "Window Width must be greater than 0"),
        ((2000, 1000), "CUBIC", "Unsupported \\(0028,1056\\) VOI LUT Function value 'CUBIC'"),
    ],
)
def test_dicom_window_pydicom_cannot_apply_is_refused_with_its_reason(
    tmp_path, window, function, reason
):
    path = write_dicom(tmp_path / "w.dcm", STORED, "P", window=window, voi_function=function)
    with pytest.raises(ImageError, match=f"VOI LUT / window cannot be applied .*{reason}"):
        read_dicom(path)
    assert read_dicom(path, window="soft_tissue").shape == (10, 25, 1)  # a preset still reads


PACK = Path("/work/shared/realdata/healthcare/pydicom_test_dicom")
_pack = pytest.mark.skipif(not (PACK / "MR_small.dcm").is_file(), reason="no DICOM pack")


@_pack
def test_real_dicom_pack_reads_as_the_standard_displays_it():
    import pydicom

    # MR: window 600/1600 in the file, LINEAR as PS3.3 C.11.2.1.2.1 defines it.
    stored = pydicom.dcmread(PACK / "MR_small.dcm").pixel_array.astype(np.float64)
    expected = np.clip((stored - 599.5) / 1599 + 0.5, 0, 1) * 255
    for name in ("MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        np.testing.assert_allclose(read_dicom(PACK / name)[..., 0], expected, atol=1, err_msg=name)
    # CT: no window, so Hounsfield units (stored - 1024) over their own range.
    hu = pydicom.dcmread(PACK / "CT_small.dcm").pixel_array.astype(np.float64) - 1024
    expected = (hu - hu.min()) / np.ptp(hu) * 255
    np.testing.assert_allclose(read_dicom(PACK / "CT_small.dcm")[..., 0], expected, atol=1)
    assert read_dicom(PACK / "ExplVR_BigEnd.dcm").shape == (60, 80, 3)  # US stays RGB
    assert read_dicom(PACK / "JPEG2000.dcm").shape == (1024, 256, 1)  # NM, JPEG 2000 decoded
    with pytest.raises(ImageError, match="multi-frame DICOM \\(15 frames of 10 x 10"):
        read_dicom(PACK / "rtdose.dcm")
