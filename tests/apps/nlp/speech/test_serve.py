"""`speech serve` on the session's trained run: uploaded audio answered as `score` answers
the same files (the word, top-k; the sample's corrupt and empty files rejected with the same
reasons), batched across uploads, and counted."""

from pathlib import Path

from tests.shared.serve_checks import check_file_app

SAMPLES = Path("datasets/speech/samples")


def test_uploaded_audio_equals_score_and_is_counted(trained, tmp_path):
    _, sets = trained
    files = sorted(SAMPLES.glob("*.wav"))[:6]
    meta = check_file_app("speech", sets, files, tmp_path / "upload", "path")
    assert meta["schema"]["sample_rate"] > 0 and meta["classes"]
