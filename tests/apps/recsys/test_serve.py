"""`recsys serve` on the session's trained run: pairs answered with `score`'s ratings and
rejects, /recommend with `recommend`'s table, both batched, bad requests one-line 4xx, and
the metrics counting them."""

import pandas as pd

from shared.run import RunDir
from tests.shared.serve_checks import (
    assert_accounting,
    assert_same_table,
    concurrently,
    config_from,
    counter,
    same_rejects,
    scored_files,
    served,
)


def known(sets) -> pd.DataFrame:
    """(user, item) pairs the run trained on."""
    config = config_from("recsys", sets)
    run = RunDir.locate("recsys", None, config.run.root)
    return pd.read_parquet(run.path / "known_items.parquet").astype(str)


def test_served_pairs_and_recommendations_equal_score_and_recommend(trained, tmp_path):
    from shared.cli import main

    _, sets = trained
    pairs = known(sets).head(12)
    rows = [{"user_id": u, "item_id": i} for u, i in zip(pairs["user"], pairs["item"], strict=True)]
    rows += [
        {"user_id": "no-such-user", "item_id": rows[0]["item_id"]},
        {"user_id": rows[0]["user_id"], "item_id": "no-such-item"},
        {"user_id": rows[1]["user_id"], "item_id": None},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    want_out, want_rej = scored_files("recsys", sets, [str(tmp_path / "pairs.csv")], tmp_path)
    users = pairs["user"].unique()[:4].tolist() + ["no-such-user"]
    out = tmp_path / "recs.csv"
    command = ["recsys", "recommend", *sets, "--users", ",".join(users), "--k", "3"]
    assert main([*command, "--output", str(out)]) == 0
    want = pd.read_csv(out, dtype=str, keep_default_na=False)
    with served("recsys", sets, max_wait_ms=300) as (client, _):
        body = client.post("/score", json={"rows": rows}).json()
        assert_same_table(body["outputs"], want_out)
        assert same_rejects(body["rejects"], want_rej) and len(want_rej) == 3
        assert_accounting(client, "/score", len(rows), len(want_out), 3, 1)
        upload = client.post(
            "/score", files={"file": ("pairs.csv", (tmp_path / "pairs.csv").read_bytes())}
        )
        assert upload.json()["rejects"] == body["rejects"]  # the file `score` read, uploaded
        assert_same_table(upload.json()["outputs"], want_out)
        answers = concurrently(
            4, lambda: client.post("/recommend", json={"users": users, "k": 3}).json()
        )
        for answer in answers:
            assert_same_table(answer["outputs"], want)
        for bad_body, message in (
            ({"users": users, "k": 0}, '"k" must be'),
            ({"users": []}, '"users" must be'),
            ({"k": 3}, "expected a JSON object"),
        ):
            bad = client.post("/recommend", json=bad_body)
            assert bad.status_code == 400 and message in bad.json()["error"]
        text = client.get("/metrics").text
        assert counter(text, "deepfield_rows_total", route="/recommend") == 4 * len(users)
        assert counter(text, "deepfield_requests_total", route="/recommend", status="400") == 3
        # Each request's users reach the model as one part: at most one call per request, every
        # user counted once. Whether concurrent requests share a call depends on when they
        # arrive (a batch closes once every request in the server has submitted, so requests
        # that come in after a fast call has run get calls of their own); the joining itself is
        # checked deterministically in tests/shared/test_server.py.
        assert counter(text, "deepfield_batch_rows_count", call="recommend") <= 4
        assert counter(text, "deepfield_batch_rows_sum", call="recommend") == 4 * len(users)
