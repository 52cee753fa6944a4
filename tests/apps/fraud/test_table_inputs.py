"""Transactions tables as users hand them over: ragged rows, blank lines, a byte-order mark,
time zones and files that are no table. Scoring rejects the row (never shifts another) or
stops with one line; training reads zoned times as UTC and names a ragged line."""

import json

import pandas as pd
import pytest

from apps.fraud.data import add_features, load_transactions
from shared.io import DataError
from tests.apps.fraud.conftest import cli, generic_frame
from tests.apps.fraud.test_data import config_for
from tests.scorer_contract import score_frames
from tests.scorer_contract import write_named as write


def transactions(root, n=12) -> pd.DataFrame:
    """The first `n` smoke transactions in the scoring layout, as text."""
    frame = pd.read_parquet(root / "smoke.parquet").head(n).drop(columns=["is_fraud"])
    return frame.astype(str)


def lines_of(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(index=False).splitlines()


@pytest.mark.parametrize("chunk_rows", ["3", "100000"])
def test_ragged_rows_and_a_blank_line_are_rejects_and_shift_no_other_row(
    trained, tmp_path, chunk_rows
):
    root, sets = trained
    frame = transactions(root)
    lines = lines_of(frame)
    lines[1] += ",X1,X2"  # an extra field on the first data row
    lines[4] = lines[4].rsplit(",", 1)[0]  # data row 4 lost its last field
    lines.insert(7, "")  # a blank line: file row 7
    chunked = ("--set", f"score.chunk_rows={chunk_rows}")
    scores, rejects = score(sets, write(tmp_path, "in.csv", lines), tmp_path, *chunked)
    assert dict(zip(rejects["row"], rejects["reason"], strict=True)) == {
        "1": "10 fields, expected 8",
        "4": "7 fields, expected 8",
        "7": "blank line",
    }
    # Every other row keeps its number in the file, and scores as without the bad lines.
    kept = frame.drop(index=[0, 3])
    expected_rows = [str(i + 1 if i < 6 else i + 2) for i in kept.index]
    assert scores["row"].tolist() == expected_rows
    assert scores["transaction_id"].tolist() == kept["transaction_id"].tolist()
    clean, _ = score(sets, write(tmp_path, "kept.csv", lines_of(kept)), tmp_path)
    # Chunks of 3 rows run the network at another batch size: the last printed digit may move
    # (the files are read as text, so the numbers are compared as numbers).
    numbers = ["fraud_probability", "anomaly_score"]
    pd.testing.assert_frame_equal(
        scores[numbers].astype(float), clean[numbers].astype(float), check_exact=False, atol=2e-6
    )
    for column in ("transaction_id", "decision"):
        assert scores[column].tolist() == clean[column].tolist()


def test_a_byte_order_mark_before_the_header_scores_as_without_it(trained, tmp_path):
    root, sets = trained
    plain = write(tmp_path, "plain.csv", lines_of(transactions(root)))
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    got, rejects = score(sets, marked, tmp_path)
    assert rejects.empty
    assert got.equals(score(sets, plain, tmp_path)[0])


def zoned(stamps: pd.Series) -> pd.Series:
    """The same instants (naive = UTC) written three ways in turn: +01:00, Z and naive."""
    times = pd.to_datetime(stamps)
    paris = (times + pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%dT%H:%M:%S+01:00")
    utc = times.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    naive = times.dt.strftime("%Y-%m-%dT%H:%M:%S")
    kind = pd.Series(range(len(times)), index=times.index) % 3
    return paris.where(kind == 0, utc.where(kind == 1, naive))


def test_zoned_and_mixed_zone_times_score_as_the_same_instants_in_utc(trained, tmp_path):
    root, sets = trained
    frame = transactions(root)
    clean, _ = score(sets, write(tmp_path, "naive.csv", lines_of(frame)), tmp_path)
    mixed = frame.assign(timestamp=zoned(frame["timestamp"]))
    assert mixed["timestamp"].str.endswith("+01:00").any()
    got, rejects = score(sets, write(tmp_path, "mixed.csv", lines_of(mixed)), tmp_path)
    assert rejects.empty
    assert got.equals(clean)


def test_a_zoned_parquet_time_column_scores_as_the_same_instants(trained, tmp_path):
    root, sets = trained
    frame = transactions(root)
    clean, _ = score(sets, write(tmp_path, "naive.csv", lines_of(frame)), tmp_path)
    stamps = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")
    path = tmp_path / "zoned.parquet"
    frame.assign(timestamp=stamps).to_parquet(path, index=False)
    got, rejects = score(sets, path, tmp_path)
    assert rejects.empty
    assert got.equals(clean)


def test_training_reads_zoned_and_mixed_zone_times_as_utc(tmp_path):
    frame = generic_frame()
    naive = tmp_path / "naive.csv"
    frame.to_csv(naive, index=False)
    mixed = tmp_path / "mixed.csv"
    frame.assign(when=zoned(frame["when"]), booked=zoned(frame["when"])).to_csv(mixed, index=False)
    want, columns, _ = load_transactions(config_for(naive))
    got, _, rejects = load_transactions(config_for(mixed, split_by="booked"))
    assert rejects.empty
    assert got["when"].tolist() == want["when"].tolist()
    assert got["booked"].tolist() == want["when"].tolist()  # the split's order, also UTC
    features = add_features(got, columns, ["1h", "24h"]).drop(columns=["booked"])
    assert features.equals(add_features(want, columns, ["1h", "24h"]))


def test_a_ragged_training_row_is_one_line_naming_it(tmp_path):
    path = tmp_path / "tx.csv"
    lines = generic_frame().to_csv(index=False).splitlines()
    lines[1] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match=r"tx\.csv: line 2: 8 fields, expected 7; 1 malformed row\(s\)"
    ):
        load_transactions(config_for(path))


def test_a_byte_order_mark_in_a_training_file_is_not_part_of_a_name(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_bytes(b"\xef\xbb\xbf" + generic_frame().to_csv(index=False).encode())
    typed, columns, rejects = load_transactions(config_for(path))
    assert columns.id == "tx" and rejects.empty and len(typed) == 60


def fake_run(tmp_path, trained_run, app: str):
    """A finished run of another app: its model_meta.json names that app and lacks fraud's
    fields (a recsys run has no feature_spec)."""
    other = tmp_path / f"{app}-run"
    other.mkdir()
    meta = json.loads((trained_run / "model_meta.json").read_text())
    keep = ("prepared", "input", "train_seconds", "precision_policy", "xla_compiled")
    other_meta = {"app": app, **{k: meta[k] for k in keep}, "max_k": 100}
    (other / "model_meta.json").write_text(json.dumps(other_meta))
    (other / "config.yaml").write_text("run:\n  root: runs\n")
    return other


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("corrupt_parquet", "bad.parquet: not a readable Parquet file"),
        ("recsys_run", "not a fraud run"),
        ("vision_run", "not a fraud run"),
        ("unterminated_quote", 'line 3: a quoted field opens with " and never closes'),
    ],
)
def test_files_that_are_no_table_and_runs_of_other_apps_are_one_line(
    trained, tmp_path, capsys, what, message
):
    root, sets = trained
    path = write(tmp_path, "in.csv", lines_of(transactions(root)))
    extra = []
    if what == "corrupt_parquet":
        path = tmp_path / "bad.parquet"
        path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    elif what.endswith("_run"):
        run = (root / "runs" / "fraud" / "latest").resolve()
        extra = ["--run", str(fake_run(tmp_path, run, what.removesuffix("_run")))]
    else:
        lines = lines_of(transactions(root))
        lines[2] = lines[2].replace(",", ',"never closed', 1)
        path = write(tmp_path, "in.csv", lines)
    out = tmp_path / "o.csv"
    assert cli("score", *sets, *extra, "--input", str(path), "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not out.exists() and not out.with_name("o.rejects.csv").exists()


def score(sets, path, tmp_path, *extra) -> tuple[pd.DataFrame, pd.DataFrame]:
    return score_frames("fraud", sets, path, tmp_path, *extra)
