"""`vision serve` on the session's trained run: uploaded images answered as `score` answers
the same files, batched across uploads, and counted."""

from pathlib import Path

from shared.run import RunDir
from tests.shared.serve_checks import check_file_app, config_from


def test_uploaded_images_equal_score_and_are_counted(trained, tmp_path):
    root, sets = trained
    images = sorted((Path(root) / "images").rglob("*.png"))[:3]  # training images
    meta = check_file_app("vision", sets, images, tmp_path / "upload", "path")
    run = RunDir.locate("vision", None, config_from("vision", sets).run.root)
    assert meta["run"] == run.path.name and len(meta["classes"]) >= 2
