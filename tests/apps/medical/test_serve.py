"""`medical serve` on the session's trained run: uploaded PNG and DICOM files answered as
`score` answers them (calibrated probabilities, decision), batched across uploads, counted."""

from pathlib import Path

from tests.shared.serve_checks import check_file_app

SAMPLES = Path("datasets/medical/samples")


def test_uploaded_images_and_dicom_equal_score_and_are_counted(trained, tmp_path):
    _, sets, _ = trained
    files = sorted(SAMPLES.glob("*.png"))[:3] + sorted((SAMPLES / "dicom").rglob("*.dcm"))[:2]
    meta = check_file_app("medical", sets, files, tmp_path / "upload", "id")
    assert meta["task"] in ("binary", "multiclass", "multilabel")
    assert set(meta["threshold"]) <= set(meta["classes"])
