"""What every app's `test_serve.py` shares: a served app on a trained run (FastAPI's test
client, no socket), the Prometheus counters read back, and `score`'s own files to compare with."""

import contextlib
import importlib
import io
import re
import threading
from pathlib import Path

import pandas as pd
import pytest

from shared.apps import APPS
from shared.cli import _config_path, main
from shared.config import load_config
from shared.run import RunDir

pytest.importorskip("fastapi", reason="serve needs the `serve` extra")
pytest.importorskip("httpx", reason="the test client needs httpx")


def concurrently(count: int, request) -> list:
    """The answers of `request()` sent from `count` threads at once (the server may join them
    into one model call), in thread order."""
    answers = [None] * count

    def send(n):
        answers[n] = request()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def config_from(app: str, args: list[str]):
    """The config a CLI command with `args` (--config FILE, --set k=v ...) would use."""
    named, overrides = None, []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag == "--config":
            named = value
        else:
            overrides.append(value)
    package = APPS[app].package
    cls = importlib.import_module(f"{package}.config").Config
    configs = Path(importlib.import_module(package).__file__).parent / "configs"
    return load_config(cls, _config_path(named, configs), overrides)


@contextlib.contextmanager
def served(app: str, args: list[str], max_batch: int = 64, max_wait_ms: float = 5.0):
    """(test client, Server) of `app` serving its latest run under the config of `args`."""
    from fastapi.testclient import TestClient

    from shared.server import create_app, load_adapter

    config = config_from(app, args)
    run = RunDir.locate(app, None, config.run.root)
    web = create_app(app, load_adapter(app, config, run), run, max_batch, max_wait_ms)
    with TestClient(web, raise_server_exceptions=False) as client:
        yield client, web.state.server


def counter(text: str, name: str, **labels) -> float:
    """A Prometheus sample's value from /metrics text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def scored_files(app: str, args: list[str], inputs: list[str], folder: Path):
    """`score`'s outputs and rejects for `inputs`, read back as tables of strings."""
    out, rej = folder / "served-out.csv", folder / "served-rej.csv"
    command = [app, "score", *args, "--input", *inputs, "--output", str(out), "--rejects", str(rej)]
    assert main(command) == 0
    read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)  # noqa: E731
    return read(out), read(rej)


def assert_same_table(records: list[dict], want: pd.DataFrame, atol: float = 1e-5) -> None:
    """JSON answers equal `score`'s CSV (`want`, read as strings): the same rows, columns and
    values, numbers within `atol` (a model's last float digit moves with its batch's size)."""
    frame = pd.DataFrame(records, columns=list(want.columns))
    text = io.StringIO(frame.to_csv(index=False))
    got = pd.read_csv(text, keep_default_na=False)
    expected = pd.read_csv(io.StringIO(want.to_csv(index=False)), keep_default_na=False)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=atol, check_dtype=False)


def same_rejects(rejects: list[dict], want: pd.DataFrame) -> bool:
    """The answer's rejects are `score`'s: the same rows with the same reasons."""
    return [(r["row"], r["reason"]) for r in rejects] == [
        (int(r), why) for r, why in zip(want["row"], want["reason"], strict=True)
    ]


def assert_accounting(client, route: str, rows: int, outputs: int, rejects: int, requests: int):
    """/metrics counts what was sent and answered on `route`."""
    text = client.get("/metrics").text
    assert counter(text, "deepfield_rows_total", route=route) == rows
    assert counter(text, "deepfield_outputs_total", route=route) == outputs
    assert counter(text, "deepfield_rejects_total", route=route) == rejects
    assert counter(text, "deepfield_requests_total", route=route, status="200") == requests
    assert counter(text, "deepfield_request_seconds_count", route=route) >= requests


def check_file_app(app: str, args: list[str], sources: list[Path], folder: Path, name_column: str):
    """An upload of `sources` and two unusable files answered as `score` answers the same
    files (outputs, rejects, reasons; each file by its upload name), also when four uploads
    arrive together (one batched model call serves them), and counted in /metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, source in enumerate(sources):  # unique names: an answer names each file by its name
        files.append(folder / f"f{n}_{source.name}")
        files[-1].write_bytes(source.read_bytes())
    files.append(folder / f"broken{sources[0].suffix}")
    files[-1].write_bytes(b"not a real file of this type")
    files.append(folder / "notes.txt")
    files[-1].write_text("hello")
    want_out, want_rej = scored_files(app, args, [str(p) for p in files], folder)
    named = lambda text: text.replace(str(folder) + "/", "")  # noqa: E731
    want_out[name_column] = want_out[name_column].map(named)
    want_rej["reason"] = want_rej["reason"].map(named)
    upload = [("files", (p.name, p.read_bytes())) for p in files]
    with served(app, args, max_wait_ms=300) as (client, _):
        answers = concurrently(4, lambda: client.post("/score", files=upload).json())
        for answer in answers:
            assert_same_table(answer["outputs"], want_out)
            assert same_rejects(answer["rejects"], want_rej), (answer["rejects"], want_rej)
        bad = client.post("/score", json={"rows": []})
        assert bad.status_code == 415 and "multipart" in bad.json()["error"]
        empty = client.post("/score", files=[("other", ("a.txt", b"x"))])
        assert empty.status_code == 400 and "no files" in empty.json()["error"]
        rows = 4 * (len(want_out) + len(want_rej))
        assert_accounting(client, "/score", rows, 4 * len(want_out), 4 * len(want_rej), 4)
        text = client.get("/metrics").text
        # at most one model call per request (sharing one depends on when they arrive)
        assert counter(text, "deepfield_batch_rows_count", call="score") <= 4
        return client.get("/metadata").json()
