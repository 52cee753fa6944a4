from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.io import DataError
from shared.scoring import Column, InputSchema, expand_inputs, score_file, score_files

SCHEMA = InputSchema(
    columns=[
        Column("id", "id"),
        Column("when", "datetime"),
        Column("x", "numeric"),
        Column("kind", "categorical"),
    ],
    id_column="id",
)
OUTPUT_COLUMNS = ["row", "id", "double_x"]


def double(typed, raw):
    return pd.DataFrame(
        {"row": typed.index, "id": typed["id"].to_numpy(), "double_x": typed["x"].to_numpy() * 2}
    )


def run(tmp_path, content: bytes, name="in.csv", chunk_rows=2):
    path = tmp_path / name
    path.write_bytes(content)
    out, rej = tmp_path / "out.csv", tmp_path / "rej.csv"
    counts = score_file(
        path, out, rej, SCHEMA, double, OUTPUT_COLUMNS, chunk_rows=chunk_rows, progress=False
    )
    return (
        counts,
        pd.read_csv(out, dtype={"id": str}),
        pd.read_csv(rej, dtype=str, keep_default_na=False),
    )


def test_good_rows_scored_bad_rows_rejected_with_reasons(tmp_path):
    content = (
        b"id,when,x,kind,extra\n"
        b"a,2026-01-01T10:00:00,1.5,k1,z\n"
        b"b,2026-01-01T11:00:00,abc,k2,z\n"  # wrong type
        b"c,2026-01-01T12:00:00,,k1,z\n"  # missing
        b"d,2026-01-01T13:00:00,inf,k1,z\n"  # not finite
        b"e,not-a-date,2,k1,z\n"  # bad timestamp
        b"a,2026-01-01T14:00:00,3,k1,z\n"  # duplicated id (other chunk)
        b"f,2026-01-01T15:00:00,NaN,k1,z\n"  # NaN literal
        b"g,2026-01-01T16:00:00,4,,z\n"  # empty category is allowed (unknown bucket)
    )
    counts, out, rej = run(tmp_path, content)
    assert (counts.rows, counts.scored, counts.rejected) == (8, 2, 6)
    assert out["id"].tolist() == ["a", "g"]
    assert out["double_x"].tolist() == [3.0, 8.0]
    reasons = dict(zip(rej["row"].astype(int), rej["reason"], strict=True))
    assert reasons == {
        2: "x: not a number ('abc')",
        3: "x: missing value",
        4: "x: not finite (inf)",
        5: "when: not a timestamp ('not-a-date')",
        6: "id: duplicate id 'a' (first seen at row 1)".removeprefix("id: "),
        7: "x: missing value",
    }
    assert set(out["row"]) | set(rej["row"].astype(int)) == set(range(1, 9))


def test_non_utf8_bytes_are_rejected_by_name(tmp_path):
    counts, out, rej = run(tmp_path, b"id,when,x,kind\na,2026-01-01,1,caf\xe9\nb,2026-01-01,2,ok\n")
    assert (counts.scored, counts.rejected) == (1, 1)
    assert rej["reason"].tolist() == ["kind: contains bytes that are not valid UTF-8"]


def test_header_only_writes_empty_outputs(tmp_path):
    counts, out, rej = run(tmp_path, b"id,when,x,kind\n")
    assert (counts.rows, counts.scored, counts.rejected) == (0, 0, 0)
    assert list(out.columns) == OUTPUT_COLUMNS and out.empty
    assert "reason" in rej.columns and rej.empty


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"id,when,kind\na,2026-01-01,k\n", "missing required column\\(s\\): x"),
        (b"id,when,x,x,kind\n", "duplicated column name|missing required"),
    ],
)
def test_file_level_problems_are_one_line(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        run(tmp_path, content)
    assert not (tmp_path / "out.csv").exists()


def test_parquet_input_with_typed_nan(tmp_path):
    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "when": pd.to_datetime(["2026-01-01", "2026-01-02"]),
            "x": [1.0, float("nan")],
            "kind": ["k", "k"],
        }
    )
    path = tmp_path / "in.parquet"
    frame.to_parquet(path)
    counts = score_file(
        path, tmp_path / "o.csv", tmp_path / "r.csv", SCHEMA, double, OUTPUT_COLUMNS, progress=False
    )
    assert (counts.scored, counts.rejected) == (1, 1)
    assert pd.read_csv(tmp_path / "r.csv")["reason"].tolist() == ["x: missing value"]


def test_expand_inputs_lists_every_visible_file_and_names_what_is_missing(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("b.png", "sub/a.wav", ".hidden", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"x")
    files = expand_inputs([str(tmp_path / "in")], "images")
    assert [Path(f).name for f in files] == ["b.png", "notes.txt", "a.wav"]  # sorted paths
    with pytest.raises(DataError, match="no such file or folder"):
        expand_inputs([str(tmp_path / "nope")], "images")
    with pytest.raises(DataError, match="score needs --input: images"):
        expand_inputs([], "images")


def test_score_files_puts_every_file_in_outputs_or_rejects_by_position(tmp_path, capsys):
    class Scorer:
        columns = ["path", "size"]

        def predict(self, paths):
            return ["unreadable" if p.endswith("bad") else [p, len(p)] for p in paths]

    files = ["a", "bad", "c", "a", "bad"]  # a path named twice is two rows
    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    counts = score_files(files, Scorer(), out, rej, chunk_files=2, label="test")
    assert (counts["files"], counts["scored"], counts["rejected"]) == (5, 3, 2)
    scored, rejected = pd.read_csv(out), pd.read_csv(rej)
    assert scored["row"].tolist() == [1, 3, 4] and scored["path"].tolist() == ["a", "c", "a"]
    assert rejected["row"].tolist() == [2, 5] and rejected["reason"].tolist() == ["unreadable"] * 2
    assert "5 files read: 3 scored" in capsys.readouterr().out


def test_score_files_rejects_a_row_with_a_non_finite_output(tmp_path):
    class Scorer:
        columns = ["path", "probability"]

        def predict(self, paths):
            return [[p, float("nan") if p == "b" else 0.5] for p in paths]

    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    counts = score_files(["a", "b"], Scorer(), out, rej, chunk_files=8, label="test")
    assert (counts["scored"], counts["rejected"]) == (1, 1)
    reason = pd.read_csv(rej)["reason"].item()
    assert reason == "model output not finite (probability=nan)"


def test_score_file_rejects_rows_whose_model_output_is_not_finite(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("x\n1\n2\n3\n")
    schema = InputSchema([Column("x", "numeric")])

    def predict(typed, raw):
        score = typed["x"].to_numpy()
        score = np.where(score == 2, np.inf, score / 10)
        return pd.DataFrame({"row": typed.index, "score": score})

    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    counts = score_file(path, out, rej, schema, predict, ["row", "score"], progress=False)
    assert (counts.rows, counts.scored, counts.rejected) == (3, 2, 1)
    assert pd.read_csv(out)["row"].tolist() == [1, 3]
    rejected = pd.read_csv(rej)
    assert rejected["row"].tolist() == [2]
    assert rejected["reason"].tolist() == ["model output not finite (score=inf)"]


def test_expand_inputs_reads_an_at_list_relative_to_its_folder(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\r\n\nmissing.png\n")
    files = expand_inputs([f"@{listing}"], "images")
    assert files == [str(tmp_path / "a.png"), str(tmp_path / "missing.png")]
