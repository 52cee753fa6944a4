"""`fraud serve` on the session's trained run: JSON rows answered with `score`'s own outputs
and rejects for the same rows, also when concurrent requests are batched, bad requests
one-line 4xx, and the metrics counting what was sent."""

import pandas as pd

from tests.shared.serve_checks import (
    assert_accounting,
    assert_same_table,
    concurrently,
    counter,
    same_rejects,
    scored_files,
    served,
)

SAMPLE = "datasets/fraud/score_sample.csv"


def sample_rows(n: int) -> list[dict]:
    rows = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).head(n).to_dict("records")
    rows[2]["amount"] = "12,50"  # not a number
    rows[4]["timestamp"] = ""  # missing
    rows[6]["transaction_id"] = rows[5]["transaction_id"]  # a repeated id
    return rows


def test_served_rows_equal_score_batched_and_counted(trained, tmp_path):
    root, sets = trained
    rows = sample_rows(40)
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    want_out, want_rej = scored_files("fraud", sets, [str(tmp_path / "rows.csv")], tmp_path)
    with served("fraud", sets, max_batch=512, max_wait_ms=200) as (client, _):
        answer = client.post("/score", json={"rows": rows})
        assert answer.status_code == 200
        body = answer.json()
        assert_same_table(body["outputs"], want_out)
        assert same_rejects(body["rejects"], want_rej)
        assert client.post("/score", json={"rows": [{"amount": 1}]}).status_code == 400
        assert_accounting(client, "/score", 40, len(want_out), len(want_rej), 1)
        meta = client.get("/metadata").json()
        assert meta["decision"]["threshold"] > 0 and "transaction_id" in str(meta["schema"])
        # The same rows as a CSV upload (the file `score` read): the same answer.
        csv = (tmp_path / "rows.csv").read_bytes()
        upload = client.post("/score", content=csv, headers={"content-type": "text/csv"})
        assert upload.status_code == 200
        assert upload.json()["rejects"] == body["rejects"]
        assert_same_table(upload.json()["outputs"], want_out)
        calls = counter(client.get("/metrics").text, "deepfield_batch_rows_count", call="score")
        answers = concurrently(6, lambda: client.post("/score", json={"rows": rows}).json())
        # Joined in a batch, each request keeps its own history and repeated-id checks.
        for answer in answers:
            assert answer["rejects"] == body["rejects"]
            assert_same_table(answer["outputs"], want_out)
        text = client.get("/metrics").text
        # At most one model call per request: whether concurrent requests share one depends on
        # when they arrive (tests/shared/test_server.py checks the joining deterministically).
        assert counter(text, "deepfield_batch_rows_count", call="score") - calls <= 6
