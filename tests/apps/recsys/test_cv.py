"""The cv step on small files in the ml-100k u1..u5 layout and on one ratings file."""

import json
import sys

import numpy as np
import pytest

from apps.recsys import cv
from apps.recsys.config import DataConfig
from shared.io import DataError
from tests.apps.recsys.conftest import cli, smoke_args


def _ml100k_folds(folder, n_folds: int):
    """u.data-style lines for 12 users x 10 items, and u1..uN base/test files: fold n's test
    set is every n-th line of each user (each rating in one test set)."""
    rng = np.random.default_rng(0)
    lines = [
        f"{u}\t{i}\t{rng.integers(1, 6)}\t{880000000 + 1000 * u + i}"
        for u in range(1, 13)
        for i in rng.choice(np.arange(1, 31), 10, replace=False)
    ]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    for n in range(n_folds):
        test = [line for k, line in enumerate(lines) if k % n_folds == n]
        base = [line for k, line in enumerate(lines) if k % n_folds != n]
        (folder / f"u{n + 1}.base").write_text("\n".join(base) + "\n")
        (folder / f"u{n + 1}.test").write_text("\n".join(test) + "\n")
    return lines


def test_fold_files_pair_each_base_with_its_test(tmp_path):
    _ml100k_folds(tmp_path, 3)
    (tmp_path / "u4.base").write_text("1\t1\t5\t1\n")  # no u4.test: not a fold
    assert [name for name, _, _ in cv.fold_files(tmp_path)] == ["u1", "u2", "u3"]


def test_random_folds_put_each_rating_in_one_test_set(tmp_path):
    lines = _ml100k_folds(tmp_path, 2)
    data = DataConfig(source="file", layout="movielens", path=str(tmp_path / "u.data"))
    data.cv_folds = 4
    folds = cv.read_folds(data, seed=0)
    assert len(folds) == 4
    tested = [
        set(zip(f.user[f.given == "test"], f.item[f.given == "test"], strict=True))
        for _, f in folds
    ]
    assert sum(len(t) for t in tested) == len(lines)
    assert len(set().union(*tested)) == len(lines)


def test_summary_is_mean_and_sample_spread_over_the_folds():
    folds = {
        "u1": {"mf": {"rmse": 0.9, "mae": 0.7}, "_failed": {}},
        "u2": {"mf": {"rmse": 1.1, "mae": 0.9}, "bias_baseline": {"rmse": 1.0, "mae": 0.8}},
    }
    summary = cv.summarise(folds)
    assert summary["mf"]["rmse_mean"] == pytest.approx(1.0)
    assert summary["mf"]["rmse_std"] == pytest.approx(np.std([0.9, 1.1], ddof=1))
    assert summary["bias_baseline"] == {
        "folds": 1,
        "rmse_mean": 1.0,
        "rmse_std": 0.0,
        "mae_mean": 0.8,
        "mae_std": 0.0,
    }


def _cv_args(tmp_path, *extra):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    _ml100k_folds(folder, 2)
    return smoke_args(
        f"run.root={tmp_path / 'runs'}",
        "data.source=file",
        "data.layout=movielens",
        f"data.path={folder}",
        "data.items_path=null",
        "data.val_fraction=0.2",
        *extra,
    )


def test_cv_step_reads_each_fold_and_reports_each_baseline(tmp_path, capsys, monkeypatch):
    """The whole step with the networks left out (their training is the slow test's): the
    bias baseline's RMSE per fold and its mean; surprise's row failed when it is missing."""
    from apps.recsys import pipeline

    monkeypatch.setattr(pipeline, "RATING_MODELS", ())
    monkeypatch.setattr(cv, "RATING_MODELS", ())
    monkeypatch.setitem(sys.modules, "surprise", None)
    assert cli("cv", *_cv_args(tmp_path, "model.surprise_svd=true")) == 0
    (report_path,) = (tmp_path / "runs" / "recsys").glob("*/cv.json")
    report = json.loads(report_path.read_text())
    assert list(report["folds"]) == ["u1", "u2"]
    per_fold = [report["folds"][f]["bias_baseline"]["rmse"] for f in ("u1", "u2")]
    assert report["summary"]["bias_baseline"]["rmse_mean"] == pytest.approx(np.mean(per_fold))
    assert report["folds"]["u1"]["_failed"] == {"surprise_svd": "scikit-surprise not installed"}
    assert "fold 2/2 u2" in capsys.readouterr().out


@pytest.mark.slow
def test_cv_step_trains_every_u_fold_and_reports_mean_rmse(tmp_path, capsys):
    assert cli("cv", *_cv_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "fold 2/2 u2" in out and "rmse_mean" in out
    (report_path,) = (tmp_path / "runs" / "recsys").glob("*/cv.json")
    report = json.loads(report_path.read_text())
    assert list(report["folds"]) == ["u1", "u2"]
    for name in ("mf", "ncf", "bias_baseline"):
        per_fold = [report["folds"][f][name]["rmse"] for f in ("u1", "u2")]
        assert report["summary"][name]["rmse_mean"] == pytest.approx(np.mean(per_fold))
        assert 0 < report["summary"][name]["rmse_mean"] < 4
    # u1.test holds every 2nd of the 120 lines; those of an item only in u1.test are not scored
    assert 0 < report["folds"]["u1"]["_test_ratings"] <= 60


def test_cv_without_ratings_is_one_line(tmp_path):
    path = tmp_path / "plays.csv"
    path.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in range(9) for i in range(6)))
    data = DataConfig(source="file", path=str(path), rating=None, timestamp=None, items_path=None)
    with pytest.raises(DataError, match="no ratings"):
        cv.read_folds(data, seed=0)
