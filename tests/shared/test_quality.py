import json

import pytest
import yaml

from shared import quality
from shared.apps import APPS


def write_spec(folder, name, **fields):
    spec = {"dataset": name, "app": "nlp", "files": ["texts/a.csv"], "split": "seeded"} | fields
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def test_a_dataset_missing_from_the_pack_is_listed_as_missing_not_failed(tmp_path):
    specs, pack, out = tmp_path / "specs", tmp_path / "pack", tmp_path / "out"
    specs.mkdir()
    pack.mkdir()
    write_spec(specs, "absent")
    code = quality.main(["--benchmarks", str(specs), "--data", str(pack), "--output", str(out)])
    report = json.loads((out / "quality.json").read_text())
    entry = report["datasets"]["absent"]
    assert code == 0 and entry["status"] == "missing" and entry["missing"] == ["texts/a.csv"]
    assert "**missing** from the pack: texts/a.csv" in (out / "quality.md").read_text()


def test_overrides_fill_the_pack_path_and_keep_types_through_set(tmp_path):
    spec = {
        "dataset": "d",
        "set": {"data.path": ["{data}/x.pos", "{data}/x.neg"], "data.label": "2", "a.b": 0.5},
        "quick": {"train.epochs": 3},
    }
    sets = quality.overrides(spec, tmp_path, tmp_path / "root", quick=True)
    assert f"data.path=[{tmp_path}/x.pos, {tmp_path}/x.neg]" in sets
    assert "data.label='2'" in sets  # stays the text 2 when --set parses it back
    assert "a.b=0.5" in sets and "train.epochs=3" in sets
    assert f"train.max_minutes={quality.QUICK_MINUTES}" in sets
    assert f"run.root={tmp_path / 'root'}" in sets and "run.run_id=d" in sets


def test_apps_filter_accepts_text_for_nlp_and_a_spec_with_an_unknown_key_is_refused(tmp_path):
    write_spec(tmp_path, "a")
    write_spec(tmp_path, "b", app="fraud")
    specs = quality.load_specs(tmp_path)
    assert [s["dataset"] for s in quality.select(specs, ["text"], None)] == ["a"]
    write_spec(tmp_path, "c", splitt="typo")
    with pytest.raises(quality.SpecError, match="unknown key"):
        quality.load_specs(tmp_path)


def test_every_committed_benchmark_file_is_valid_and_names_files_under_the_pack():
    specs = quality.load_specs()
    assert specs, "no benchmark files in benchmarks/quality"
    for spec in specs:
        assert spec["app"] in APPS, spec["file"]
        assert all(not f.startswith("/") and ".." not in f for f in spec["files"]), spec["file"]


def test_a_small_pack_runs_every_step_and_reports_models_beside_the_baseline(tmp_path):
    """The whole loop on a tiny SMS-Spam-layout file (label<TAB>text, no header)."""
    pack, specs, out = tmp_path / "pack", tmp_path / "specs", tmp_path / "out"
    (pack / "sms").mkdir(parents=True)
    (specs).mkdir()
    lines = [f"spam\tWIN a free prize {i} call now" for i in range(30)]
    lines += [f"ham\tsee you at lunch {i} ok" for i in range(60)]
    (pack / "sms" / "collection").write_text("\n".join(lines) + "\n")
    write_spec(
        specs,
        "tiny-sms",
        files=["sms/collection"],
        config="apps/nlp/text/configs/smoke.yaml",
        set={
            "data.source": "files",
            "data.path": "{data}/sms/collection",
            "data.format": "tsv",
            "data.columns": ["label", "text"],
            "model.networks": ["cnn"],
        },
    )
    args = ["--benchmarks", str(specs), "--data", str(pack), "--output", str(out), "--quick"]
    assert quality.main(args) == 0
    entry = json.loads((out / "quality.json").read_text())["datasets"]["tiny-sms"]
    assert entry["status"] == "ok" and set(entry["steps"]) == set(quality.STEPS)
    assert all(step["peak_rss_mib"] > 0 for step in entry["steps"].values())
    board = entry["leaderboard"]["classification"]
    assert set(board["models"]) == {"cnn", "tfidf_logreg"}
    assert board["models"]["cnn"]["kind"] == "network" and board["selected"] == "cnn"
    assert "time_to_baseline_s" in board["models"]["cnn"]
    test_rows = round(90 * 0.15)
    assert entry["score"]["rows"] == entry["score"]["scored"] + entry["score"]["rejected"]
    assert abs(entry["score"]["rows"] - test_rows) <= 1
    text = (out / "quality.md").read_text()
    assert "## tiny-sms (nlp)" in text and "tfidf_logreg (baseline)" in text
    assert "| tiny-sms | classification (accuracy) | cnn |" in text  # the summary line


def test_a_seeded_spec_runs_once_per_seed_and_the_report_gives_mean_and_spread(tmp_path):
    write_spec(tmp_path, "d", seeds=[1, 2])
    specs = quality.load_specs(tmp_path)
    assert [(s["dataset"], s["set"]["train.seed"]) for s in specs] == [
        ("d-seed1", 1),
        ("d-seed2", 2),
    ]
    assert [s["dataset"] for s in quality.select(specs, None, ["d"])] == ["d-seed1", "d-seed2"]
    board = {"metric": "accuracy", "models": {}}
    report = {"datasets": {}}
    for seed, value in ((1, 0.7), (2, float("nan"))):
        block = board | {"models": {"net": {"test": {"accuracy": value}}}}
        report["datasets"][f"d-seed{seed}"] = {"seed_group": "d", "leaderboard": {"t": block}}
    assert "| d | t (accuracy) | net | 2 | 0.7000 | 0.0000 | 0.7000 | 1 |" in quality.seeds_table(
        report
    )
    write_spec(tmp_path, "e", seeds="three")
    with pytest.raises(quality.SpecError, match="seeds must be a list of integers"):
        quality.load_specs(tmp_path)
