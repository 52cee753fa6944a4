import os
import stat

import pandas as pd
import pytest

from shared.io import (
    DataError,
    atomic_dir,
    atomic_path,
    check_fields,
    iter_table_chunks,
    read_table,
    read_table_header,
    row_problems,
    source_fingerprint,
    write_json,
    write_table,
    write_text,
)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_handles_numpy(tmp_path):
    import numpy as np

    write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(2)})
    assert (tmp_path / "m.json").read_text().replace(" ", "").replace(
        "\n", ""
    ) == '{"a":0.5,"b":[0,1]}'


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_cover_every_row(tmp_path, suffix):
    frame = pd.DataFrame({"a": range(25), "b": [f"x{i}" for i in range(25)]})
    path = tmp_path / f"t{suffix}"
    write_table(path, frame)
    chunks = list(iter_table_chunks(path, 10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert pd.concat(chunks)["b"].tolist() == frame["b"].tolist()
    assert read_table_header(path) == ["a", "b"]


def test_csv_chunks_are_strings_and_bad_bytes_are_marked(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,ok\n2,caf\xe9\n")
    chunk = next(iter_table_chunks(path, 10))
    assert chunk["a"].tolist() == ["1", "2"]
    assert "\ufffd" in chunk["b"].iloc[1]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "empty.csv", "the file is empty \\(0 bytes\\)"),
        (None, "missing.csv", "no such file"),
        (b"x", "data.json", "unsupported file type"),
        (b"PAR1garbage", "bad.parquet", "not a readable Parquet file"),
    ],
)
def test_bad_files_give_one_line(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(iter_table_chunks(path, 10))


def test_generated_file_is_current_only_for_the_same_parameters(tmp_path):
    from shared.io import generated_is_current, record_generated

    path = tmp_path / "sample.csv"
    assert not generated_is_current(path, {"seed": 0})
    path.write_text("a\n1\n")
    assert not generated_is_current(path, {"seed": 0})  # written, but from unknown parameters
    record_generated(path, {"seed": 0})
    assert generated_is_current(path, {"seed": 0})
    assert not generated_is_current(path, {"seed": 1})


def test_source_fingerprint_changes_with_the_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"12")
    first = source_fingerprint(tmp_path)
    assert first[1:3] == [1, 2]  # one file of two bytes
    assert source_fingerprint(tmp_path) == first
    (tmp_path / "a" / "y.png").write_bytes(b"3")
    assert source_fingerprint(tmp_path)[1:3] == [2, 3]
    assert source_fingerprint(tmp_path / "a" / "x.png")[1:3] == [1, 2]


# --- delimited text: every record a row, numbered as in the file -----------------------------


def _rows(path, chunk_rows=100):
    """(cells, problem) per row of every chunk, and the chunks' indexes joined."""
    chunks = list(iter_table_chunks(path, chunk_rows))
    cells = [row for chunk in chunks for row in chunk.to_numpy().tolist()]
    problems = [p for chunk in chunks for p in row_problems(chunk)]
    index = [i for chunk in chunks for i in chunk.index]
    assert index == list(range(len(cells)))
    return list(zip(cells, problems, strict=True))


def test_an_extra_field_on_the_first_row_is_that_rows_problem_and_shifts_nothing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3,X1,X2\n4,5,6\n7,8,9\n")
    assert _rows(path) == [
        (["", "", ""], "5 fields, expected 3"),
        (["4", "5", "6"], ""),
        (["7", "8", "9"], ""),
    ]


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_ragged_and_blank_lines_anywhere_are_rows_with_their_reason(tmp_path, chunk_rows):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n\n7,8,9,10\n11,12,13\n")
    assert _rows(path, chunk_rows) == [
        (["1", "2", "3"], ""),
        (["", "", ""], "2 fields, expected 3"),
        (["", "", ""], "blank line"),
        (["", "", ""], "4 fields, expected 3"),
        (["11", "12", "13"], ""),
    ]


def test_a_blank_line_in_a_one_column_table_is_a_row_but_spaces_are_a_value(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text\nhello\n\n   \nbye\n")
    assert _rows(path) == [(["hello"], ""), ([""], "blank line"), (["   "], ""), (["bye"], "")]


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert read_table_header(path) == ["a", "b"]
    assert list(next(iter_table_chunks(path, 10)).columns) == ["a", "b"]
    assert read_table(path).columns.tolist() == ["a", "b"]


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_quoted_fields_with_separators_and_line_breaks_are_one_row(tmp_path, chunk_rows):
    path = tmp_path / "t.csv"
    path.write_text('id,text\n1,"a, b"\n2,"two\nlines"\n3,"say ""hi"""\n4,plain\n')
    assert _rows(path, chunk_rows) == [
        (["1", "a, b"], ""),
        (["2", "two\nlines"], ""),
        (["3", 'say "hi"'], ""),
        (["4", "plain"], ""),
    ]


def test_a_ragged_record_over_several_lines_names_them(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,b\n1,"x\ny",extra\n2,3\n')
    assert _rows(path) == [
        (
            ["", ""],
            "3 fields, expected 2 (one record over lines 2-3: a quoted field holds line breaks)",
        ),
        (["2", "3"], ""),
    ]


def test_the_fast_and_the_careful_reading_give_the_same_values(tmp_path):
    plain, quoted = tmp_path / "plain.csv", tmp_path / "quoted.csv"
    rows = [f"{i}, spaced ,x{i}\t" for i in range(50)]
    plain.write_text("a,b,c\n" + "".join(f"{r}\r\n" for r in rows))
    quoted.write_text("a,b,c\n" + "".join(f"{r}\r\n" for r in rows) + '50,"q",z\r\n')
    assert _rows(plain) == _rows(quoted)[:-1]
    assert _rows(quoted)[-1] == (["50", "q", "z"], "")


def test_an_unterminated_quote_is_one_line_naming_where_it_opens(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,b\n1,"two\nlines"\n2,"never closed\n3,4\n')
    with pytest.raises(DataError, match=r"t\.csv: line 4: a quoted field opens with \" and never"):
        list(iter_table_chunks(path, 10))


def test_a_header_only_file_is_one_empty_chunk_with_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n")
    chunks = list(iter_table_chunks(path, 10))
    assert len(chunks) == 1 and chunks[0].empty and list(chunks[0].columns) == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\n\n", "the file is empty \\(no header row\\)"),
        (b"a,b,a\n1,2,3\n", "duplicated column name\\(s\\): a"),
        ("a,b\n1,2\n".encode("utf-16"), "UTF-16 or UTF-32 text; save it as UTF-8"),
    ],
)
def test_bad_text_tables_give_one_line(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(iter_table_chunks(path, 10))


def test_a_whole_table_read_names_the_first_ragged_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3,4\n\n5,6,7\n8,9\n")
    expected = "line 2: 4 fields, expected 3; 2 malformed row\\(s\\) with the wrong"
    with pytest.raises(DataError, match=expected):
        read_table(path)
    dat = tmp_path / "t.dat"
    dat.write_text("a::b\n1::2\n3::4::5\n")
    with pytest.raises(DataError, match="line 3: 3 fields, expected 2"):
        check_fields(dat, "::")
    hetrec = tmp_path / "artists.tsv"
    hetrec.write_text('id\tname\n1\t"Weird Al" Yankovic\n2\t"open quote\n')
    check_fields(hetrec, "\t", quoted=False)  # a quote is text in an unquoted layout


def test_a_whole_table_read_keeps_a_saved_index_column_and_blank_lines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(",x,y\n0,1,a\n\n1,2,b\n")
    frame = read_table(path)
    assert frame.columns.tolist() == ["Unnamed: 0", "x", "y"]
    assert frame["y"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "read",
    [
        read_table_header,
        lambda p: list(iter_table_chunks(p, 10)),
        read_table,
    ],
    ids=["header", "chunks", "whole"],
)
def test_a_corrupt_parquet_file_is_one_line_for_every_reader(tmp_path, read):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        read(path)


def test_a_parquet_file_cut_short_is_one_line(tmp_path):
    path = tmp_path / "t.parquet"
    write_table(path, pd.DataFrame({"a": range(1000), "b": [f"x{i}" for i in range(1000)]}))
    data = path.read_bytes()
    path.write_bytes(data[:20] + b"\0" * (len(data) - 40) + data[-20:])
    with pytest.raises(DataError, match="not a readable Parquet file"):
        list(iter_table_chunks(path, 100))


# --- artifacts: the umask's permissions, and a data folder's broken link ------------------------


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"),
    [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)],
)
def test_artifacts_get_the_permissions_the_umask_gives(tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "meta.json", {"a": 1})
        write_text(tmp_path / "card.md", "x")
        write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1]}))
        with atomic_path(tmp_path / "model.keras", suffix=".keras") as tmp:
            tmp.write_bytes(b"model")
        with atomic_dir(tmp_path / "saved_model") as folder:
            (folder / "saved_model.pb").write_bytes(b"pb")
    finally:
        os.umask(previous)
    for name in ("meta.json", "card.md", "t.csv", "model.keras"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE((tmp_path / "saved_model").stat().st_mode) == dir_mode


def test_a_broken_link_in_a_data_folder_is_one_line_naming_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"12")
    link = tmp_path / "a" / "gone.png"
    os.symlink(tmp_path / "nowhere.png", link)
    with pytest.raises(DataError, match=f"^{link}: a broken symbolic link \\(its target "):
        source_fingerprint(tmp_path)
