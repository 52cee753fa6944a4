"""Pair and interaction tables as users hand them over: ragged rows, blank lines, a byte-order
mark and files that are no table. Scoring rejects the row (never shifts another) or stops with
one line; training names the ragged line and reads past the mark."""

import pandas as pd
import pytest

from apps.recsys import data
from shared.io import DataError
from tests.apps.recsys.conftest import cli
from tests.scorer_contract import score_frames
from tests.scorer_contract import write_named as write


def known_pairs(root, n=8) -> pd.DataFrame:
    """`n` (user, item) pairs seen in training, under the scorer's column names."""
    run = (root / "runs" / "recsys" / "latest").resolve()
    user, item = pd.read_csv(run / "test_split.csv", nrows=0).columns[:2]
    known = pd.read_parquet(run / "known_items.parquet").head(n)
    return pd.DataFrame({user: known["user"].astype(str), item: known["item"].astype(str)})


@pytest.mark.parametrize("chunk_rows", ["2", "100000"])
def test_ragged_rows_and_a_blank_line_are_rejects_and_shift_no_other_row(
    trained, tmp_path, chunk_rows
):
    root, sets = trained
    pairs = known_pairs(root)
    lines = pairs.to_csv(index=False).splitlines()
    lines[1] += ",X1,X2"  # an extra field on the first data row: never a row index
    lines[3] = lines[3].split(",")[0]  # data row 3 lost its item
    lines.insert(5, "")  # a blank line: file row 5
    chunked = ("--set", f"serve.chunk_rows={chunk_rows}")
    scores, rejects = score(sets, write(tmp_path, "in.csv", lines), tmp_path, *chunked)
    assert dict(zip(rejects["row"], rejects["reason"], strict=True)) == {
        "1": "4 fields, expected 2",
        "3": "1 fields, expected 2",
        "5": "blank line",
    }
    kept = pairs.drop(index=[0, 2])
    assert scores["row"].tolist() == [str(i + 1 if i < 4 else i + 2) for i in kept.index]
    clean, _ = score(
        sets, write(tmp_path, "kept.csv", kept.to_csv(index=False).splitlines()), tmp_path
    )
    assert scores.drop(columns=["row"]).equals(clean.drop(columns=["row"]))


def test_a_byte_order_mark_before_the_header_scores_as_without_it(trained, tmp_path):
    root, sets = trained
    plain = write(tmp_path, "plain.csv", known_pairs(root).to_csv(index=False).splitlines())
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    got, rejects = score(sets, marked, tmp_path)
    assert rejects.empty
    assert got.equals(score(sets, plain, tmp_path)[0])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.parquet", b"PAR1 this is not a parquet file PAR1", "not a readable Parquet file"),
        ("quote.csv", b'user_id,item_id\n1,"2\n3,4\n', 'line 2: a quoted field opens with "'),
        ("utf16.csv", "user_id,item_id\n1,2\n".encode("utf-16"), "UTF-16 or UTF-32 text"),
    ],
)
def test_files_that_are_no_table_are_one_line(trained, tmp_path, capsys, name, content, message):
    _, sets = trained
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "o.csv"
    assert cli("score", *sets, "--input", str(path), "--output", str(out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_an_extra_field_on_the_first_training_row_is_one_line_never_an_index(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user,item,rating\n1,10,4,oops\n2,11,5\n3,12,3\n")
    with pytest.raises(DataError, match=r"events\.csv: line 2: 4 fields, expected 3; 1 malformed"):
        data.read_interactions(path, "user", "item", "rating", None)


def test_a_ragged_row_in_an_unquoted_layout_counts_quotes_as_text(tmp_path):
    path = tmp_path / "user_artists.dat"
    path.write_text('userID\tartistID\tweight\n2\t"51\t13883\n2\t52\t11690\t7\n')
    with pytest.raises(DataError, match="line 3: 4 fields, expected 3"):
        data.read_interactions(path, "userID", "artistID", "weight", None)


def test_a_byte_order_mark_in_a_training_file_is_not_part_of_a_name(tmp_path):
    generic = tmp_path / "events.csv"
    generic.write_bytes(b"\xef\xbb\xbfuser,item\n1,10\n2,11\n")
    assert data.read_interactions(generic, "user", "item", None, None)["user"].tolist() == [
        "1",
        "2",
    ]
    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n1,10,4.0,964982703\n")
    assert data.read_movielens_ratings(ratings)["user"].tolist() == ["1"]


def test_a_corrupt_parquet_training_file_is_one_line(tmp_path):
    path = tmp_path / "events.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(DataError, match="events.parquet: not a readable Parquet file"):
        data.read_interactions(path, "user", "item", None, None)


def score(sets, path, tmp_path, *extra) -> tuple[pd.DataFrame, pd.DataFrame]:
    return score_frames("recsys", sets, path, tmp_path, *extra)
