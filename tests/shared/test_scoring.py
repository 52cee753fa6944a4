import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.io import DataError
from shared.scoring import (
    Column,
    InputSchema,
    Terminated,
    atomic_outputs,
    default_output_paths,
    expand_inputs,
    file_problem,
    score_file,
    score_files,
    stop_point,
)

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


def test_blank_and_ragged_lines_are_rejects_with_the_readers_reason_at_their_row(tmp_path):
    content = (
        b"id,when,x,kind\n"
        b"a,2026-01-01,1,k\n"
        b"b,2026-01-01,2,k,X\n"  # one field too many
        b"\n"
        b"c,2026-01-01,3\n"  # one too few
        b"d,2026-01-01,4,k\n"
    )
    counts, out, rej = run(tmp_path, content)
    assert (counts.rows, counts.scored, counts.rejected) == (5, 2, 3)
    assert out["row"].tolist() == [1, 5]
    reasons = dict(zip(rej["row"].astype(int), rej["reason"], strict=True))
    assert reasons == {2: "5 fields, expected 4", 3: "blank line", 4: "3 fields, expected 4"}


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

    for name in ("a", "bad", "c"):
        (tmp_path / name).write_bytes(b"x")
    files = [str(tmp_path / n) for n in ("a", "bad", "c", "a", "bad")]  # named twice: two rows
    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    counts = score_files(files, Scorer(), out, rej, chunk_files=2, label="test")
    assert (counts["files"], counts["scored"], counts["rejected"]) == (5, 3, 2)
    scored, rejected = pd.read_csv(out), pd.read_csv(rej)
    assert scored["row"].tolist() == [1, 3, 4]
    assert scored["path"].tolist() == [files[0], files[2], files[0]]
    assert rejected["row"].tolist() == [2, 5] and rejected["reason"].tolist() == ["unreadable"] * 2
    assert "5 files read: 3 scored" in capsys.readouterr().out


def test_score_files_rejects_a_row_with_a_non_finite_output(tmp_path):
    class Scorer:
        columns = ["path", "probability"]

        def predict(self, paths):
            return [[p, float("nan") if p.endswith("b") else 0.5] for p in paths]

    files = [tmp_path / "a", tmp_path / "b"]
    for file in files:
        file.write_bytes(b"x")
    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    counts = score_files(list(map(str, files)), Scorer(), out, rej, chunk_files=8, label="test")
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


# --- reliability: links and other entries, output targets, file names, signals ----------------


def test_expand_inputs_keeps_broken_links_fifos_and_folder_links_for_the_rejects(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (folder / "a.png").write_bytes(b"x")
    (folder / "broken.png").symlink_to(tmp_path / "gone.png")
    (folder / "linked").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(folder / "sub" / "pipe.png")
    files = expand_inputs([str(folder)], "images")
    assert [Path(f).name for f in files] == ["a.png", "broken.png", "linked", "pipe.png"]
    problems = [file_problem(f) for f in files]
    assert problems[0] == ""
    assert problems[1].startswith("broken symbolic link (to ")
    assert problems[2].startswith("link to a folder, not followed")
    assert problems[3].startswith("not a regular file")
    assert file_problem(tmp_path / "nope") == "no such file"


def test_score_files_rejects_unreadable_entries_without_giving_them_to_predict(tmp_path):
    (tmp_path / "good").write_bytes(b"x")
    (tmp_path / "broken").symlink_to(tmp_path / "gone")
    given = []

    class Scorer:
        columns = ["path"]

        def predict(self, paths):
            given.extend(paths)
            return [[p] for p in paths]

    files = [str(tmp_path / n) for n in ("broken", "good", "broken", "good")]
    counts = score_files(files, Scorer(), tmp_path / "o.csv", tmp_path / "r.csv", 3, "test")
    assert (counts["files"], counts["scored"], counts["rejected"]) == (4, 2, 2)
    assert given == [files[1], files[3]]  # a FIFO or a dead link never reaches a decoder
    assert pd.read_csv(tmp_path / "o.csv")["row"].tolist() == [2, 4]
    rejected = pd.read_csv(tmp_path / "r.csv")
    assert rejected["row"].tolist() == [1, 3]
    assert rejected["reason"].str.startswith("broken symbolic link").all()


def test_non_utf8_file_names_are_written_as_escapes_in_valid_utf8(tmp_path, capsys):
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: its byte is a surrogate in the str

    class Scorer:
        columns = ["path"]

        def predict(self, paths):
            return [[p] if p.endswith("1") else f"bad file {p}" for p in paths]

    files = [tmp_path / f"{name}1", tmp_path / f"{name}2"]
    for file in files:
        file.write_bytes(b"x")
    out = tmp_path / os.fsdecode(b"out\xff.csv")
    counts = score_files(list(map(str, files)), Scorer(), out, tmp_path / "r.csv", 8, "x")
    assert (counts["scored"], counts["rejected"]) == (1, 1)
    escaped = str(tmp_path / "caf\\udce9.png")
    assert pd.read_csv(out, encoding="utf-8")["path"].tolist() == [f"{escaped}1"]
    assert pd.read_csv(tmp_path / "r.csv")["reason"].tolist() == [f"bad file {escaped}2"]
    assert "out\\udcff.csv" in capsys.readouterr().out  # the counts line prints too


def test_atomic_outputs_writes_both_or_neither(tmp_path):
    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    with pytest.raises(RuntimeError, match="mid-way"), atomic_outputs(out, rej) as (a, b):
        a.write("partial\n")
        b.write("partial\n")
        raise RuntimeError("mid-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no target, no temporary
    with atomic_outputs(out, rej) as (a, b):
        a.write("o\n")
        b.write("r\n")
    assert (out.read_text(), rej.read_text()) == ("o\n", "r\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "r.csv"]


def test_atomic_outputs_raises_on_sigterm_only_while_it_writes(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic_outputs(tmp_path / "o.csv") as (handle,):
        assert signal.getsignal(signal.SIGTERM) is not before
        handle.write("x\n")
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_waits_for_the_next_stop_point_and_a_second_one_stops_at_once(tmp_path):
    out, reached = tmp_path / "o.csv", []
    with pytest.raises(Terminated), atomic_outputs(out) as (handle,):
        os.kill(os.getpid(), signal.SIGTERM)
        handle.write("still running\n")  # the signal has been handled: no raise mid-chunk
        reached.append("after the signal")
        stop_point()
        reached.append("after the stop point")
    assert reached == ["after the signal"] and list(tmp_path.iterdir()) == []
    reached.clear()
    with pytest.raises(Terminated), atomic_outputs(out) as _:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the second raises where it lands
        reached.append("after the second signal")
    assert reached == [] and list(tmp_path.iterdir()) == []
    stop_point()  # outside a scoring block: nothing to stop


def test_atomic_outputs_takes_back_the_first_when_the_second_cannot_be_renamed(tmp_path):
    out, rej = tmp_path / "o.csv", tmp_path / "r.csv"
    failure = pytest.raises(DataError, match=f"cannot write {rej}.*nothing written")
    with failure, atomic_outputs(out, rej) as (a, _):
        a.write("o\n")
        rej.mkdir()  # appears while scoring: the rename onto it fails
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_atomic_outputs_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_outputs(tmp_path / "o.csv") as (handle,):
            handle.write("x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.csv").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("folder", "folder: is a folder; name a file to write"),
        ("a_file/out.csv", "cannot be written \\(.*a_file is not a folder\\)"),
        ("same", "named both as the output and as the rejects"),
    ],
)
def test_bad_output_targets_are_one_line_before_any_work(tmp_path, target, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "in.csv").write_text("x\n1\n")
    out = tmp_path / ("out.csv" if target == "same" else target)
    rej = out if target == "same" else tmp_path / "r.csv"
    with pytest.raises(DataError, match=message):
        default_output_paths(tmp_path / "in.csv", str(out), str(rej))
    with pytest.raises(DataError, match=message):
        score_file(tmp_path / "in.csv", out, rej, InputSchema([Column("x", "numeric")]), None, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder", "in.csv"]


def test_rejects_may_not_overwrite_the_input(tmp_path):
    with pytest.raises(DataError, match="rejects .* would overwrite the input"):
        default_output_paths(tmp_path / "in.csv", None, str(tmp_path / "in.csv"))


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    """The folder's permissions decide (checked with os.access, which is all a root user in
    CI cannot show for real: root may write anywhere)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and p != folder)
    with pytest.raises(DataError, match="no write permission in"):
        default_output_paths(tmp_path / "in.csv", str(folder / "o.csv"), None)


SLOW_SCORING = """
import sys, time
import pandas as pd
from shared.scoring import Column, InputSchema, score_file

def predict(typed, raw):
    time.sleep(0.05)
    return pd.DataFrame({"row": typed.index, "x": typed["x"]})

score_file(sys.argv[1], sys.argv[2], sys.argv[3], InputSchema([Column("x", "numeric")]),
           predict, ["row", "x"], chunk_rows=1, progress=False)
"""


def terminate_mid_scoring(command: list[str], folder: Path, timeout: float = 120.0, **popen):
    """Start `command`, send it SIGTERM as soon as its hidden `*.tmp` outputs exist in `folder`
    (so mid-scoring), and return (exit code, stderr, what is left in `folder`)."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    process = subprocess.Popen(command, **pipes, **popen)
    deadline = time.monotonic() + timeout
    while not list(folder.glob(".*.tmp")):
        assert process.poll() is None, f"ended before scoring began: {process.communicate()}"
        assert time.monotonic() < deadline, "scoring did not begin"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr, sorted(p.name for p in folder.iterdir())


def test_sigterm_while_scoring_a_table_leaves_no_temporaries(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("x\n" + "".join(f"{i}\n" for i in range(2000)))  # 100 s at 0.05 s a row
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [sys.executable, "-c", SLOW_SCORING, str(source), str(out_dir / "o.csv")]
    code, stderr, left = terminate_mid_scoring([*command, str(out_dir / "r.csv")], out_dir)
    assert code == 128 + signal.SIGTERM
    assert left == [] and "Traceback" not in stderr
    assert stderr.strip() == "terminated by signal 15: nothing written"


# A predict step that turns the signal's exception into an error of its own, as TensorFlow can
# when the signal lands inside one of its calls.
SWALLOWING_SCORING = SLOW_SCORING.replace(
    "    time.sleep(0.05)\n",
    "    try:\n        time.sleep(0.05)\n"
    "    except SystemExit:\n        raise RuntimeError('op failed')\n",
)


def test_sigterm_turned_into_another_error_still_exits_as_terminated(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("x\n" + "".join(f"{i}\n" for i in range(2000)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [sys.executable, "-c", SWALLOWING_SCORING, str(source), str(out_dir / "o.csv")]
    code, stderr, left = terminate_mid_scoring([*command, str(out_dir / "r.csv")], out_dir)
    assert (code, left) == (128 + signal.SIGTERM, []), stderr
    assert stderr.strip() == "terminated by signal 15: nothing written"


# --- InputSchema.validate against the column-by-column reference it replaced -----------------


def _reference_validate(schema, chunk):
    """The reasons `validate` gave before it built messages for the failing rows only: every
    message for every row, then kept where its mask holds."""
    text_of = lambda v: (  # noqa: E731
        v.astype(object).where(v.notna(), "").astype(str).str.strip()
        if v.dtype == object or pd.api.types.is_string_dtype(v)
        else v.astype(str)
    )
    quoted = lambda v: "'" + v.astype(str).str.slice(0, 40) + "'"  # noqa: E731
    bad_bytes = lambda t: (  # noqa: E731
        t.str.contains("\ufffd", regex=False),
        pd.Series("contains bytes that are not valid UTF-8", index=t.index),
    )
    const = lambda text, v: pd.Series(text, index=v.index)  # noqa: E731

    def numeric(v):
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            n = v.astype(np.float64)
            miss, inf = n.isna(), np.isinf(n)
            return n.where(~(miss | inf), 0.0), [
                (miss, const("missing value", v)),
                (inf, "not finite (" + n.astype(str) + ")"),
            ]
        t = text_of(v)
        n = pd.to_numeric(t, errors="coerce").astype(np.float64)
        empty, lit = t == "", t.str.lower().isin(["nan", "na", "n/a", "null", "none"])
        inf, bb = np.isinf(n), bad_bytes(t)
        nan = n.isna() & ~empty & ~lit
        problems = [
            (empty | lit, const("missing value", v)),
            (nan & ~bb[0], "not a number (" + quoted(t) + ")"),
            (inf, "not finite (" + t + ")"),
            bb,
        ]
        return n.where(~(empty | lit | nan | inf), 0.0), problems

    def datetime(v):
        if pd.api.types.is_datetime64_any_dtype(v):
            s = v if v.dt.tz is None else v.dt.tz_convert("UTC").dt.tz_localize(None)
            return s.where(~s.isna(), pd.Timestamp(0)), [(s.isna(), const("missing timestamp", v))]
        t = text_of(v)
        s = pd.to_datetime(t, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
        empty = t == ""
        return s.where(~s.isna(), pd.Timestamp(0)), [
            (empty, const("missing timestamp", v)),
            (s.isna() & ~empty, "not a timestamp (" + quoted(t) + ")"),
        ]

    parsers = {
        "numeric": numeric,
        "datetime": datetime,
        "categorical": lambda v: (text_of(v), [bad_bytes(text_of(v))]),
        "id": lambda v: (
            text_of(v),
            [(text_of(v) == "", const("missing id", v)), bad_bytes(text_of(v))],
        ),
    }
    reasons = pd.Series("", index=chunk.index, dtype=object)
    typed = {}
    for column in schema.columns:
        typed[column.name], problems = parsers[column.kind](chunk[column.name])
        for mask, message in problems:
            if mask.any():
                reasons[mask] = reasons[mask] + f"{column.name}: " + message[mask] + "; "
    return pd.DataFrame(typed, index=chunk.index), reasons.str.rstrip("; ")


TRICKY = {
    "id": ["a", "", " b ", "\ufffdx", "a", "c", "d", "e", "f", "g"],
    "when": [
        "2026-01-01",
        "",
        "2026-01-01T10:00:00+02:00",
        "soon" * 20,
        "2026-13-01",
        " 2026-01-02 ",
        "2026-01-01T00:00:00Z",
        "nan",
        "2026-01-03",
        "x\ufffd",
    ],
    "x": ["1.5", "", "nan", "NA", "inf", "-Infinity", "1e400", "abc" * 30, "\ufffd1", " 2 "],
    "kind": ["k", "", "\ufffd", " k ", "k", "k", "None", "k", "k", "k"],
}


@pytest.mark.parametrize("form", ["text", "object with nulls", "typed"])
def test_validate_gives_the_reference_values_and_reasons(form):
    frame = pd.DataFrame(TRICKY, dtype=str)
    frame.index = pd.RangeIndex(5, 15, name="row")
    if form == "object with nulls":
        frame = frame.astype(object)
        frame.iloc[[1, 3], :] = None
        frame.iloc[2, 2] = np.nan
    elif form == "typed":  # as a Parquet file's columns come
        frame["x"] = [1.5, np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, 2.0, np.nan, 3.0]
        frame["when"] = pd.to_datetime(
            ["2026-01-01T10:00:00+02:00", None] + ["2026-01-02T00:00:00Z"] * 8, utc=True
        )
    typed, reasons = SCHEMA.validate(frame)
    want_typed, want_reasons = _reference_validate(SCHEMA, frame)
    pd.testing.assert_frame_equal(typed, want_typed)
    pd.testing.assert_series_equal(reasons, want_reasons)
    assert (reasons != "").sum() >= 4  # the comparison covers rejects, not only good rows
