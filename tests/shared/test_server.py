"""The serving layer without TensorFlow: batching, the in-memory row checks, the routes'
answers to good and bad requests, the metrics, and one real uvicorn server on a free
loopback port (start-up line, a request over HTTP, SIGTERM exits cleanly)."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.io import ROW_PROBLEMS, DataError
from shared.run import RunDir
from shared.scoring import (
    Column,
    InputSchema,
    join_groups,
    rows_frame,
    rows_groups_frame,
    score_file,
    score_joined_groups,
    score_rows,
)
from shared.server import (
    Adapter,
    Batcher,
    group_answers,
    joined,
    records,
    reject_list,
    submit_rows,
    table_rows_call,
)

fastapi = pytest.importorskip("fastapi", reason="serve needs the `serve` extra")
pytest.importorskip("httpx", reason="the test client needs httpx")

from tests.shared.serve_checks import counter  # noqa: E402  (after the extra's skip)

SCHEMA = InputSchema(
    [Column("id", "id"), Column("amount", "numeric"), Column("when", "datetime")], "id"
)


def doubled(typed: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    amount = typed["amount"].to_numpy()
    return pd.DataFrame({"row": typed.index, "id": typed["id"], "double": amount * 2})


class Doubler(Adapter):
    """A table app without a model: doubles `amount`, checked against SCHEMA."""

    def __init__(self):
        self.calls: list[int] = []  # rows of each batched call

    def model_calls(self):
        def double(frames):
            self.calls.append(sum(map(len, frames)))
            return [f["amount"].to_numpy() * 2 for f in frames]

        return {"score": double}

    def score(self, rows, submit):
        def predict(typed, raw):
            out = submit("score", typed)
            return pd.DataFrame({"row": typed.index, "id": typed["id"], "double": out})

        result, reasons = score_rows(rows_frame(rows, SCHEMA), SCHEMA, predict)
        return records(result), reject_list(reasons)

    def metadata(self):
        return {"schema": SCHEMA.to_dict()}


JSON = {"content-type": "application/json"}
ROWS = [
    {"id": "a", "amount": 1.5, "when": "2026-01-01T00:00:00"},
    {"id": "b", "amount": "x1", "when": "2026-01-01"},
    {"id": "a", "amount": 2, "when": "2026-01-02"},
    {"id": "c", "amount": None, "when": "soon"},
    {"id": "d", "amount": [1], "when": "2026-01-03"},
    {"id": "e", "amount": 1e400, "when": "2026-01-04"},
    {"id": "f", "amount": "3", "when": "2026-01-05", "extra": 1},
]


def test_score_rows_gives_score_file_outputs_and_reasons(tmp_path):
    csv = tmp_path / "in.csv"
    pd.DataFrame(
        [{k: r.get(k) for k in ("id", "amount", "when")} for r in ROWS if r["id"] != "d"]
    ).to_csv(csv, index=False)
    score_file(csv, tmp_path / "o.csv", tmp_path / "r.csv", SCHEMA, doubled, [], progress=False)
    want_out = pd.read_csv(tmp_path / "o.csv")
    want_rej = pd.read_csv(tmp_path / "r.csv")
    kept = [r for r in ROWS if r["id"] != "d"]
    result, reasons = score_rows(rows_frame(kept, SCHEMA), SCHEMA, doubled)
    pd.testing.assert_frame_equal(result.reset_index(drop=True), want_out, check_dtype=False)
    assert reject_list(reasons) == [
        {"row": int(r), "reason": why}
        for r, why in zip(want_rej["row"], want_rej["reason"], strict=True)
    ]


def test_rows_frame_rejects_a_nested_value_and_refuses_a_missing_column():
    _, reasons = score_rows(rows_frame(ROWS, SCHEMA), SCHEMA, doubled)
    assert reasons[5] == "amount: a JSON list, not a value"
    assert reasons[3] == "duplicate id 'a' (first seen at row 1)"
    assert reasons[6] == "amount: not finite (inf)"
    with pytest.raises(DataError, match="missing required column"):
        rows_frame([{"id": "a"}], SCHEMA)


def test_joined_requests_are_answered_each_as_score_rows_does():
    requests = [ROWS, ROWS[:3], [{"id": "a", "amount": 5, "when": "2026-02-01"}]]
    frames = [rows_frame(rows, SCHEMA) for rows in requests]
    seen = []

    def predict(typed, raw):
        seen.append(len(typed))
        return doubled(typed, raw)

    joined, bounds = join_groups(frames)
    answers = group_answers(*score_joined_groups(joined, bounds, SCHEMA, predict), bounds)
    assert seen == [2 + 1 + 1]  # one predict for all three requests
    for frame, (outputs, rejects) in zip(frames, answers, strict=True):
        want_result, want_reasons = score_rows(frame, SCHEMA, doubled)
        assert rejects == reject_list(want_reasons)  # repeats within a request
        assert outputs == records(want_result)


def test_batcher_joins_concurrent_requests_into_one_call():
    calls = []

    def call(parts):
        calls.append([len(p) for p in parts])
        return [[x * 10 for x in p] for p in parts]

    batcher = Batcher({"x": call}, max_batch=8, max_wait_ms=200)
    results = {}

    def send(n):
        results[n] = batcher.submit("x", [n, n])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {n: [n * 10, n * 10] for n in range(4)}
    assert calls == [[2, 2, 2, 2]]  # 4 requests of 2 rows: one call of 8 rows


def test_batcher_caps_rows_per_call_and_passes_errors_on():
    seen = []

    def call(parts):
        seen.append(sum(map(len, parts)))
        if any(p == ["boom"] for p in parts):
            raise ValueError("model failed")
        return parts

    batcher = Batcher({"x": call}, max_batch=3, max_wait_ms=50)
    threads = [threading.Thread(target=batcher.submit, args=("x", [1, 2])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(ValueError, match="model failed"):
        batcher.submit("x", ["boom"])
    batcher.close()
    assert max(seen[:-1]) <= 3  # two 2-row parts never share a 3-row call


def test_joined_splits_dicts_frames_and_tuples_back_per_part():
    def fn(ids, frame):
        return {"a": np.arange(len(ids)), "b": frame.reset_index(drop=True)}

    parts = [(["x"], pd.DataFrame({"v": [1]})), (["y", "z"], pd.DataFrame({"v": [2, 3]}))]
    first, second = joined(fn)(parts)
    assert first["a"].tolist() == [0] and second["a"].tolist() == [1, 2]
    assert second["b"]["v"].tolist() == [2, 3]


@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    from shared.server import create_app

    (tmp_path / "model_card.md").write_text("# Doubler\n\n## Intended use\n\nTests.\n\n## More\n")
    adapter = Doubler()
    web = create_app("fraud", adapter, RunDir(tmp_path), max_batch=16, max_wait_ms=1)
    with TestClient(web, raise_server_exceptions=False) as test_client:
        yield test_client, adapter


def test_score_answers_outputs_and_rejects_and_counts_them(client):
    http, _ = client
    # json.dumps writes 1e400 as Infinity, which the server reads (and rejects the row)
    answer = http.post("/score", content=json.dumps({"rows": ROWS}), headers=JSON)
    assert answer.status_code == 200
    body = answer.json()
    assert [o["row"] for o in body["outputs"]] == [1, 7]
    assert body["outputs"][1] == {"row": 7, "id": "f", "double": 6.0}
    assert [r["row"] for r in body["rejects"]] == [2, 3, 4, 5, 6]
    assert body["rejects"][0]["reason"] == "amount: not a number ('x1')"
    text = http.get("/metrics").text
    assert counter(text, "deepfield_rows_total", route="/score") == 7
    assert counter(text, "deepfield_outputs_total", route="/score") == 2
    assert counter(text, "deepfield_rejects_total", route="/score") == 5
    assert counter(text, "deepfield_requests_total", route="/score", status="200") == 1
    assert counter(text, "deepfield_batch_rows_count", call="score") == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"id,amount\n", {"content-type": "text/csv"}, 415, "expected Content-Type"),
        (b'{"rows": 3}', {"content-type": "application/json"}, 400, "must be a list"),
        (b'{"rows": []}', {"content-type": "application/json"}, 400, "is empty"),
        (b'{"rows": [1]}', {"content-type": "application/json"}, 400, "row 1 is not"),
        (b'[{"id": "a"}]', {"content-type": "application/json"}, 400, "expected a JSON object"),
        (b'{"rows": [{"id": "a"}]}', {"content-type": "application/json"}, 400, "missing"),
    ],
)
def test_bad_requests_are_one_line_4xx(client, body, headers, status, message):
    http, _ = client
    answer = http.post("/score", content=body, headers=headers)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert set(answer.json()) == {"error"}


def test_health_metadata_and_unknown_routes(client):
    http, _ = client
    assert http.get("/health").json()["status"] == "ok"
    meta = http.get("/metadata").json()
    assert meta["schema"]["id_column"] == "id"
    assert meta["model_card"]["title"] == "Doubler"
    assert meta["model_card"]["summary"] == "Tests."
    assert meta["batching"] == {"max_batch": 16, "max_wait_ms": 1}
    assert http.get("/nowhere").status_code == 404
    assert http.get("/score").status_code == 405


def test_a_failing_model_is_a_500_with_one_line(client):
    http, _ = client
    http.app.state.server.batcher.calls["score"] = lambda parts: 1 / 0
    answer = http.post("/score", json={"rows": ROWS[:1]})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error (ZeroDivisionError: division by zero)"}
    text = http.get("/metrics").text
    assert counter(text, "deepfield_requests_total", route="/score", status="500") == 1
    assert counter(text, "deepfield_rows_total", route="/score") == 0  # nothing answered


SERVE_SCRIPT = textwrap.dedent(
    """
    import sys
    from shared.run import RunDir
    from shared.server import _Uvicorn, create_app
    from tests.shared.test_server import Doubler
    import uvicorn
    run = RunDir(sys.argv[1])
    app = create_app("fraud", Doubler(), run, 64, 5)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = _Uvicorn(config, "fraud", run, 64, 5)
    server.run()
    print("exited", server.stopped_by, flush=True)
    """
)


def test_a_real_server_on_a_free_port_answers_and_stops_on_sigterm(tmp_path):
    import httpx

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, str(tmp_path)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serve: fraud run "), line + process.stderr.read()
        url = line.split(" at ")[1].split(" ")[0]
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=10) as http:
            answers = [http.post("/score", json={"rows": ROWS[:2]}) for _ in range(3)]
            assert all(a.status_code == 200 for a in answers)
            assert answers[0].json()["rejects"] == [
                {"row": 2, "reason": "amount: not a number ('x1')"}
            ]
            text = http.get("/metrics").text
        assert counter(text, "deepfield_rows_total", route="/score") == 6
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.strip() == "exited SIGTERM"
    assert "Traceback" not in err


def test_serve_step_without_fastapi_is_one_config_error(monkeypatch):
    from shared import server
    from shared.config import ConfigError
    from shared.steps import StepOptions

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[serve\]"'):
        server.serve("fraud", None, StepOptions())


def test_a_port_in_use_is_one_config_error_before_the_model_loads():
    import socket

    from shared import server
    from shared.config import ConfigError
    from shared.steps import StepOptions

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.serve("fraud", None, StepOptions(port=port))
    with pytest.raises(ConfigError, match="--max-batch must be 1 or more"):
        server.serve("fraud", None, StepOptions(max_batch=0))


class TableDoubler(Doubler):
    """Doubler as a table app: JSON rows or an uploaded CSV, checked and scored on the worker
    thread in one pass per batch (`table_rows_call`), as fraud and recsys serve."""

    table_schema = SCHEMA

    def model_calls(self):
        def groups(frame, bounds):
            self.calls.append(len(frame))
            return score_joined_groups(frame, bounds, SCHEMA, doubled)

        return {"score": table_rows_call(SCHEMA, groups)}

    def score(self, rows, submit):
        return submit_rows(submit, "score", rows)


CSV = (
    "id,amount,when,extra\n"
    "a,1.5,2026-01-01T00:00:00,x\n"
    "b,x1,2026-01-01,x\n"
    "a,2,2026-01-02,x\n"
    "too,few\n"
    "\n"
    'f,"3",2026-01-05,"quoted, comma"\n'
)


@pytest.fixture
def table_client(tmp_path):
    from fastapi.testclient import TestClient

    from shared.server import create_app

    web = create_app("fraud", TableDoubler(), RunDir(tmp_path), max_batch=16, max_wait_ms=1)
    with TestClient(web, raise_server_exceptions=False) as test_client:
        yield test_client, web.state.server


def test_a_csv_upload_is_answered_as_score_answers_the_file(table_client, tmp_path):
    http, server = table_client
    (tmp_path / "in.csv").write_text(CSV)
    score_file(tmp_path / "in.csv", tmp_path / "o.csv", tmp_path / "r.csv", SCHEMA, doubled, [])
    want_out = pd.read_csv(tmp_path / "o.csv", keep_default_na=False)
    want_rej = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert len(want_out) == 2 and len(want_rej) == 4  # the checks below compare something
    body = http.post("/score", content=CSV, headers={"content-type": "text/csv"}).json()
    multipart = http.post("/score", files={"file": ("mine.csv", CSV.encode())}).json()
    assert multipart == body
    assert pd.DataFrame(body["outputs"]).to_dict("list") == want_out.to_dict("list")
    assert [(r["row"], r["reason"]) for r in body["rejects"]] == list(
        zip(want_rej["row"], want_rej["reason"], strict=True)
    )
    assert http.post("/score", json={"rows": ROWS[:1]}).json()["outputs"][0]["double"] == 3.0
    text = http.get("/metrics").text
    assert counter(text, "deepfield_rows_total", route="/score") == 6 + 6 + 1
    assert http.get("/metadata").json()["uploads"]["tables"] is True


def test_bad_and_oversized_table_uploads_are_one_line_4xx(table_client):
    http, server = table_client
    missing = http.post(
        "/score", content="id,when\na,2026-01-01\n", headers={"content-type": "text/csv"}
    )
    assert missing.status_code == 400
    assert missing.json()["error"] == "the upload: missing required column(s): amount"
    header_only = http.post("/score", files={"file": ("t.csv", b"id,amount,when\n")})
    assert header_only.status_code == 400 and "no rows" in header_only.json()["error"]
    two = http.post("/score", files=[("file", ("a.csv", b"x")), ("file", ("b.csv", b"y"))])
    assert two.status_code == 400 and "one CSV" in two.json()["error"]
    wrong = http.post("/score", content=b"<xml/>", headers={"content-type": "text/xml"})
    assert wrong.status_code == 415 and "text/csv" in wrong.json()["error"]
    server.max_upload_bytes = 40
    sized = http.post("/score", content=CSV, headers={"content-type": "text/csv"})
    assert sized.status_code == 413 and "at most 40 bytes" in sized.json()["error"]
    streamed = http.post(  # no Content-Length: counted while it arrives
        "/score", content=iter([CSV.encode()]), headers={"content-type": "text/csv"}
    )
    assert streamed.status_code == 413 and "split the upload" in streamed.json()["error"]
    assert http.post("/score", files={"file": ("a.csv", CSV.encode())}).status_code == 413
    text = http.get("/metrics").text
    assert counter(text, "deepfield_requests_total", route="/score", status="413") == 3


# --- the joined path: one frame, one validation and one JSON conversion per batch -------------

# Requests as a batch may join them: repeats within a request and across requests, rejects of
# each kind, nested values (in another column order than the request's first row), extra
# columns, rows lacking a column other rows have, and a request missing a needed column.
BATCH = [
    ROWS,
    [{"id": "a", "amount": 4, "when": "2026-03-01"}],  # `a` again, in another request: scored
    [
        {"when": "2026-03-02", "id": "z", "amount": "7", "extra": "e"},
        {"id": "w", "amount": {"x": 1}, "when": [1]},  # named by the request's column order
        {"id": "z", "amount": "8"},  # no `when` in this row: ''
        {"id": "y", "amount": " 9 ", "when": "2026-03-04T10:00:00+02:00", "more": "m"},
        {"id": "y", "amount": "10", "when": "2026-03-05"},
        {"id": "z", "amount": "11", "when": "2026-03-06"},
    ],
    [{"id": "q", "when": "2026-01-01"}],  # no `amount` in any row: the request's DataError
    [{"id": "", "amount": "nan", "when": ""}, {"id": "\ufffd", "amount": "-inf", "when": "x"}],
]


def per_request_answers(requests) -> list:
    """Each request scored on its own, as `score_rows` scores it (or its DataError)."""
    answers = []
    for rows in requests:
        try:
            frame = rows_frame(rows, SCHEMA)
        except DataError as exc:
            answers.append(str(exc))
            continue
        result, reasons = score_rows(frame, SCHEMA, doubled)
        answers.append((records(result), reject_list(reasons)))
    return answers


def test_rows_groups_frame_is_each_requests_rows_frame_joined():
    frame, bounds, errors = rows_groups_frame(BATCH, SCHEMA)
    kept = [rows for n, rows in enumerate(BATCH) if n not in errors]
    want, want_bounds = join_groups([rows_frame(rows, SCHEMA) for rows in kept])
    assert list(errors) == [3] and "missing required column(s): amount" in str(errors[3])
    assert bounds.tolist() == [0, 7, 8, 14, 14, 16]  # the failed request has no rows
    pd.testing.assert_frame_equal(frame, want[SCHEMA.names])
    (got_at, got_rows, got_why), (at, rows, why) = (
        frame.attrs[ROW_PROBLEMS],
        want.attrs[ROW_PROBLEMS],
    )
    assert got_at.tolist() == at.tolist() and got_rows.tolist() == rows.tolist()
    assert (
        got_why.tolist()
        == why.tolist()
        == [
            "amount: a JSON list, not a value",
            "when: a JSON list, not a value",  # the request's column order, not the row's
        ]
    )
    assert want_bounds[-1] == bounds[-1]


def test_a_joined_batch_answers_each_request_as_it_is_answered_alone():
    table = pd.read_csv(io.StringIO(CSV), dtype=str, keep_default_na=False)
    calls = []

    def groups(frame, bounds):
        calls.append(bounds.tolist())
        return score_joined_groups(frame, bounds, SCHEMA, doubled)

    answers = table_rows_call(SCHEMA, groups)([*BATCH, table])
    want = per_request_answers(BATCH)
    assert [str(a) if isinstance(a, Exception) else a for a in answers[:-1]] == want
    assert answers[-1] == per_request_answers([table.to_dict("records")])[0]
    # One pass for the uploaded table, one for the JSON requests (never joined with it).
    assert calls == [[0, len(table)], [0, 7, 8, 14, 14, 16]]
    outputs, rejects = answers[0]
    assert [o["id"] for o in outputs] == ["a", "f"] and rejects[1]["reason"].startswith("dup")
    assert answers[1] == ([{"row": 1, "id": "a", "double": 8.0}], [])  # not a repeat of `a`
    assert [(r["row"], r["reason"]) for r in answers[2][1]] == [
        (2, "when: a JSON list, not a value"),
        (3, "when: missing timestamp"),
        (5, "duplicate id 'y' (first seen at row 4)"),  # row numbers within the request
        (6, "duplicate id 'z' (first seen at row 1)"),
    ]
    assert [r["row"] for r in answers[4][1]] == [1, 2]


def test_group_answers_of_a_joined_batch_agree_with_each_request_scored_alone():
    frames = [rows_frame(rows, SCHEMA) for n, rows in enumerate(BATCH) if n != 3]
    joined_frame, bounds = join_groups(frames)
    together = group_answers(*score_joined_groups(joined_frame, bounds, SCHEMA, doubled), bounds)
    alone = [score_rows(frame, SCHEMA, doubled) for frame in frames]
    assert together == [(records(result), reject_list(reasons)) for result, reasons in alone]


def test_an_expected_request_closes_the_batch_without_the_full_wait():
    calls = []

    def call(parts):
        calls.append(len(parts))
        return parts

    batcher = Batcher({"x": call}, max_batch=64, max_wait_ms=60_000)
    with batcher.expecting() as submit:  # the only request in the server: no one to wait for
        assert submit("x", [1]) == [1]
    results = []
    waiting = threading.Thread(target=lambda: results.append(alone("x", [2])))
    with batcher.expecting() as alone, batcher.expecting():
        waiting.start()
        time.sleep(0.3)
    # The other request ended without submitting: the batch closes without the full minute.
    waiting.join(timeout=30)
    assert results == [[2]]
    with batcher.expecting() as first, batcher.expecting() as second:
        # Two requests in the server: the batch waits for the second one's part, and joins it.
        thread = threading.Thread(target=lambda: results.append(first("x", [3])))
        thread.start()
        time.sleep(0.3)
        assert second("x", [4]) == [4]
        thread.join(timeout=30)
    batcher.close()
    assert results == [[2], [3]] and calls == [1, 1, 2]
