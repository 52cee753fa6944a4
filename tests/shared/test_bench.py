"""The pieces every app's benchmark is built from."""

import numpy as np

from shared import bench
from shared.apps import APPS


def test_sample_folder_cycles_the_sources_and_is_written_once(tmp_path):
    sources = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.wav").write_bytes(name.encode())
        sources.append(tmp_path / f"{name}.wav")
    folder = bench.sample_folder(sources, tmp_path / "score_5", 5, ".wav")
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{i:06d}.wav" for i in range(5)]
    assert [f.read_bytes() for f in files] == [b"a", b"b", b"a", b"b", b"a"]
    assert not (tmp_path / "score_5.tmp").exists()
    (files[0]).write_bytes(b"kept")
    bench.sample_folder(sources, folder, 5, ".wav")  # an existing folder is not rewritten
    assert files[0].read_bytes() == b"kept"


def test_time_scoring_counts_the_files_the_score_step_reports(tmp_path):
    class Pipeline:
        def score(self, config, options):
            self.seen = (config, options.inputs, options.output)
            return {"files": 40}

    pipeline = Pipeline()
    result = bench.time_scoring(pipeline, "cfg", ["in"], tmp_path / "out.csv", "clips")
    assert pipeline.seen == ("cfg", ["in"], str(tmp_path / "out.csv"))
    assert result["clips"] == 40 and result["clips_per_s"] > 0


def test_compare_fits_reports_examples_per_second_of_the_steady_epochs(tmp_path):
    class Timer:
        pass

    def fake_fit(seconds):
        def fit(*args):
            timer = args[-1]
            timer.steady_epoch_s = lambda: seconds

        return fit

    rates = bench.compare_fits(fake_fit(2.0), fake_fit(1.0), 100, 3, tmp_path)
    assert rates == {"ours": 50.0, "bare": 100.0}


def test_report_sections_put_the_pipeline_beside_the_bare_baseline():
    train = {"images": 10, "ours": 45.0, "bare": 50.0, "input": 60, "peak_rss_mb": 100.0}
    section = bench.training_section(train, "images")
    assert section["ratio"] == 0.9 and section["input_bound"] is True
    assert section["pipeline_images_per_s"] == 45.0 and section["bare_fit_images_per_s"] == 50.0
    ours = {"rows": 5, "rows_per_s": 10.0, "peak_rss_mb": 1.0}
    scoring = bench.scoring_section(ours, {"rows_per_s": 40.0}, "rows", "csv", "bare")
    assert scoring["ratio"] == 0.25 and scoring["csv_rows_per_s"] == 10.0


def test_every_registered_app_has_a_bench_module_with_run_and_measure():
    import importlib

    for app in APPS.values():
        module = importlib.import_module(app.bench)
        assert callable(module.run) and callable(module.measure), app.name
    assert np.isfinite(bench.peak_rss_mb())


def test_train_and_score_feeds_setups_answer_to_score_and_predict_in_order():
    calls = []

    def measure(module, name, args):
        calls.append((name, args))
        answer = {"folder": "/f"} if name == "setup" else {"name": name}
        return {**answer, "peak_rss_mb": 1.0}  # as run_measurement answers

    found = bench.train_and_score(measure, "apps.x.bench", {"images": 4})
    assert [c[0] for c in calls] == ["setup", "train", "score", "predict", "workers", "workers"]
    assert calls[2][1] == calls[3][1] == {"folder": "/f"}
    assert found["ours"] == {"name": "score", "peak_rss_mb": 1.0}
    assert set(found["workers"]) == {1, 2}


def test_cli_startup_times_each_command_and_compares_errors_with_the_tensorflow_import(
    monkeypatch,
):
    commands = {name: ["-c", "pass"] for name in bench.STARTUP_COMMANDS}
    commands["import_tensorflow"] = ["-c", "import time; time.sleep(0.5)"]
    monkeypatch.setattr(bench, "STARTUP_COMMANDS", commands)
    report = bench.cli_startup(trials=1)
    assert set(report["seconds"]) == set(commands) and report["under_target"] is True
    assert report["seconds"]["import_tensorflow"] >= 0.5
    assert 0 < report["config_error_vs_tensorflow_import"] < 1
