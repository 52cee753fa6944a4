import pandas as pd
import pytest

from shared.io import (
    DataError,
    atomic_path,
    iter_table_chunks,
    read_table_header,
    source_fingerprint,
    write_json,
    write_table,
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
