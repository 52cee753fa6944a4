import json

import pytest
import yaml

from shared import quality


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
        assert spec["app"] in __import__("shared.cli").cli.APPS, spec["file"]
        assert all(not f.startswith("/") and ".." not in f for f in spec["files"]), spec["file"]
