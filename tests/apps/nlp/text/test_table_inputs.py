"""CSV and TSV texts to score as users hand them over: ragged rows, blank lines, a byte-order
mark, quoted texts over several lines and quotes that never close. Every record is a row
numbered as in the file: scored, or rejected with its own reason; never a shifted text."""

import pandas as pd
import pytest

from tests.apps.nlp.text.conftest import cli, tiny_frame
from tests.scorer_contract import score_frames
from tests.scorer_contract import write_named as write


@pytest.mark.parametrize("chunk_rows", ["2", "10000"])
def test_ragged_rows_and_a_blank_line_are_rejects_and_shift_no_other_text(
    trained, tmp_path, chunk_rows
):
    _, sets = trained
    texts = tiny_frame(8, seed=3)[["id", "text"]]
    lines = texts.to_csv(index=False).splitlines()
    lines[1] += ",X1,X2"  # an extra field on the first data row: never a row index
    lines[3] = lines[3].split(",")[0]  # data row 3 lost its text
    lines.insert(5, "")  # a blank line: file row 5
    chunked = ("--set", f"score.chunk_rows={chunk_rows}")
    scores, rejects = score(sets, write(tmp_path, "in.csv", lines), tmp_path, *chunked)
    assert rejects.to_dict("list") == {
        "row": ["1", "3", "5"],
        "id": ["1", "3", "5"],  # a row without an id is named by its number
        "reason": ["4 fields, expected 2", "1 fields, expected 2", "blank line"],
    }
    kept = texts.drop(index=[0, 2])
    assert scores["row"].tolist() == [str(i + 1 if i < 4 else i + 2) for i in kept.index]
    assert scores["id"].tolist() == kept["id"].tolist()
    clean, _ = score(
        sets, write(tmp_path, "kept.csv", kept.to_csv(index=False).splitlines()), tmp_path
    )
    assert scores.drop(columns=["row"]).equals(clean.drop(columns=["row"]))


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_byte_order_mark_before_the_header_scores_as_without_it(trained, tmp_path, suffix):
    _, sets = trained
    plain = tmp_path / f"plain{suffix}"
    tiny_frame(6, seed=4)[["id", "text"]].to_csv(
        plain, index=False, sep="\t" if suffix == ".tsv" else ","
    )
    marked = tmp_path / f"marked{suffix}"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    got, rejects = score(sets, marked, tmp_path)
    assert rejects.empty and len(got) == 6
    assert got.equals(score(sets, plain, tmp_path)[0])


def test_a_quoted_text_over_several_lines_is_one_row_and_later_rows_keep_counting(
    trained, tmp_path
):
    _, sets = trained
    path = tmp_path / "in.csv"
    path.write_text(
        'id,text\na,"the film was great,\nand the cast lovely"\nb,the film was awful\n'
        'c,"a ""quoted"" word, superb"\n'
    )
    scores, rejects = score(sets, path, tmp_path)
    assert rejects.empty
    assert scores["row"].tolist() == ["1", "2", "3"] and scores["id"].tolist() == ["a", "b", "c"]


def test_non_utf8_bytes_in_a_text_are_scored_with_a_replacement_character(trained, tmp_path):
    _, sets = trained
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text\na,the film was great\nb,the caf\xe9 scene was awful\n")
    scores, rejects = score(sets, path, tmp_path)
    assert rejects.empty and scores["id"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'id,text\na,fine\nb,"never closed\nc,fine\n', 'line 3: a quoted field opens with "'),
        ("id,text\na,fine\n".encode("utf-16"), "UTF-16 or UTF-32 text; save it as UTF-8"),
        (b"id,text,text\na,b,c\n", "duplicated column name(s): text"),
    ],
)
def test_files_that_are_no_table_are_one_line(trained, tmp_path, capsys, content, message):
    _, sets = trained
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    out = tmp_path / "o.csv"
    assert cli("score", *sets, "--input", str(path), "--output", str(out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def score(sets, path, tmp_path, *extra) -> tuple[pd.DataFrame, pd.DataFrame]:
    return score_frames("nlp", sets, path, tmp_path, *extra)
