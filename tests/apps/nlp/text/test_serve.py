"""`nlp serve` on the session's trained run: JSON rows answered with `score`'s outputs and
rejects for the same objects as a JSONL file, batched across concurrent requests, and the
metrics counting them."""

import json

from tests.shared.serve_checks import (
    assert_accounting,
    assert_same_table,
    concurrently,
    counter,
    same_rejects,
    scored_files,
    served,
)

ROWS = [
    {"id": "a", "text": "the film was great and the cast superb"},
    {"id": "b", "text": ""},
    {"id": "c", "text": "awful and boring " * 40},
    {"text": "lovely"},
    {"id": "e", "text": 12},
    {"id": "f"},
    {"id": "g", "text": "   "},
    {"id": "h", "text": "terrible, broken"},
]


def test_served_texts_equal_score_batched_and_counted(trained, tmp_path):
    _, sets = trained
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    want_out, want_rej = scored_files("nlp", sets, [str(source)], tmp_path)
    with served("nlp", sets, max_batch=256, max_wait_ms=200) as (client, _):
        body = client.post("/score", json={"rows": ROWS}).json()
        assert_same_table(body["outputs"], want_out)
        assert same_rejects(body["rejects"], want_rej)
        assert [r["id"] for r in body["rejects"]] == list(want_rej["id"])
        bad = client.post("/score", json={"texts": ["x"]})
        assert bad.status_code == 400 and "rows" in bad.json()["error"]
        assert_accounting(client, "/score", len(ROWS), len(want_out), len(want_rej), 1)
        meta = client.get("/metadata").json()
        classes = [c.removeprefix("prob_") for c in want_out.columns if c.startswith("prob_")]
        assert meta["classes"] == classes and meta["schema"]["text"] == "text"
        answers = concurrently(8, lambda: client.post("/score", json={"rows": ROWS}).json())
        for answer in answers:
            assert answer["rejects"] == body["rejects"]
            assert_same_table(answer["outputs"], want_out)
        text = client.get("/metrics").text
        # at most one model call per request (sharing one depends on when they arrive)
        assert counter(text, "deepfield_batch_rows_count", call="score") <= 9
