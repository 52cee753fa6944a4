"""`deepfield <app> serve`: a trained run's model loaded once, answering HTTP scoring requests.

Built on FastAPI and uvicorn (the `serve` extra: `pip install -e ".[serve]"`). Every app has an
adapter, `apps/<app>/server.py: load(config, run) -> Adapter`, that turns a request into the
same checks, outputs and reject reasons as the app's `score` step. The routes:

    POST /score      JSON {"rows": [{...}, ...]} (table, text and pair apps), or a multipart
                     upload of files under the field `files` (images, audio, DICOM, NPZ);
                     answers {"outputs": [...], "rejects": [{"row": i, "reason": ...}]}
    GET  /health     {"status": "ok"} once the model is loaded
    GET  /metadata   input schema, classes, threshold, model card summary, run id
    GET  /metrics    Prometheus text: requests, rows, rejects, latency and batch-size histograms

Requests are scored together: each request's model call goes to one queue, and one worker
thread (the only one that calls TensorFlow) runs the calls that arrived within `max_wait_ms`
as one, up to `max_batch` rows (sooner once every request the server holds has queued its
call), so throughput under concurrency approaches batch `predict`.
"""

import collections
import contextlib
import dataclasses
import importlib
import json
import math
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.apps import APPS
from shared.config import ConfigError
from shared.io import DataError
from shared.run import RunDir

MAX_REQUEST_ROWS = 100_000  # rows (or files) one request may carry; more is a 413
MAX_UPLOAD_BYTES = 256 * 2**20  # bytes of all files of one upload
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class RequestError(Exception):
    """A request the server cannot score as sent: answered with `status` and this one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- batching ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Pending:
    call: str  # which of the adapter's model calls
    part: Any  # this request's input to it
    size: int  # its rows
    future: Future


_STOP = object()
_WAKE = object()  # a request that was expected will not submit: look again


class Batcher:
    """One worker thread running `calls[name](parts) -> results` (one result per part) over the
    parts that queued within `max_wait_ms` of the first, up to `max_batch` rows.

    Only parts for the same call are joined; a part larger than `max_batch` is a call of its
    own (the scorers split it into their own batch size). TensorFlow runs on this thread only.

    The server tells the batcher which requests it is handling (`expecting`): a batch then
    also closes before `max_wait_ms` once every such request has submitted its part (or
    finished without one) and it holds as many parts as the largest of the last few batches
    (`RECENT` of them). A lone client's request does not wait for company that is not there,
    and a batch of all the clients that keep the server busy runs as soon as the last of them
    is in (closing whenever the server holds no other request would split their batch in
    two: their requests arrive a little apart). Without `expecting`, a batch always waits.
    """

    RECENT = 8  # batches whose largest part count a batch waits for (up to max_wait_ms)

    def __init__(
        self,
        calls: dict[str, Callable[[list], list]],
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[str, int, int], None] | None = None,
    ):
        if max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must be 0 or more, got {max_wait_ms}")
        self.calls, self.max_batch, self.max_wait = calls, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch  # (call, parts, rows) after each model call
        self.queue: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.tracking = False  # whether `expecting` has been used: requests are counted
        self.expected = 0  # requests being handled that have not submitted yet
        self.forming = False  # the worker is waiting for a batch's further parts
        self.recent: collections.deque = collections.deque(maxlen=self.RECENT)  # their parts
        self.thread = threading.Thread(target=self._work, name="deepfield-batcher", daemon=True)
        self.thread.start()

    def submit(self, call: str, part, size: int | None = None, ticket: list | None = None):
        """`calls[call]`'s result for `part`, computed in a batch with other requests' parts
        (blocks the calling thread until it is ready; re-raises the call's error)."""
        future: Future = Future()
        self.queue.put(_Pending(call, part, len(part) if size is None else size, future))
        if ticket is not None:
            self._settle(ticket)
        return future.result()

    @contextlib.contextmanager
    def expecting(self):
        """Around the handling of one request that may submit: yields the request's `submit`.
        Until it submits (or the block ends), a forming batch may wait for its part."""
        ticket = [False]  # whether the request has submitted (or finished)
        with self.lock:
            self.tracking = True
            self.expected += 1

        def submit(call: str, part, size: int | None = None):
            return self.submit(call, part, size, ticket)

        try:
            yield submit
        finally:
            self._settle(ticket)

    def _settle(self, ticket: list) -> None:
        with self.lock:
            if ticket[0]:
                return
            ticket[0] = True
            self.expected -= 1
            idle = self.expected == 0
        if idle and self.forming:
            self.queue.put(_WAKE)

    def _complete(self, parts: int) -> bool:
        """Whether the forming batch of `parts` parts holds the parts of every request in the
        server, and as many as recent batches held: waiting longer is unlikely to add any."""
        return (
            self.tracking
            and self.expected == 0
            and self.queue.empty()
            and parts >= max(self.recent, default=1)
        )

    def close(self) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout=30)

    def _work(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self.queue.get()
            carry = None
            if first is _WAKE:
                continue
            if first is _STOP:
                return
            batch, rows = [first], first.size
            deadline = time.perf_counter() + self.max_wait
            self.forming = True
            while rows < self.max_batch and not self._complete(len(batch)):
                try:
                    item = self.queue.get(timeout=max(deadline - time.perf_counter(), 0))
                except queue.Empty:
                    break
                if item is _WAKE:
                    continue
                if item is _STOP or item.call != first.call or rows + item.size > self.max_batch:
                    carry = item  # starts the next batch (or stops after this one)
                    break
                batch.append(item)
                rows += item.size
            self.forming = False
            self.recent.append(len(batch))
            self._run(batch, rows)

    def _run(self, batch: list[_Pending], rows: int) -> None:
        try:
            results = self.calls[batch[0].call]([p.part for p in batch])
            if len(results) != len(batch):
                raise RuntimeError("a batched model call returned a different number of parts")
        except BaseException as exc:  # every waiting request hears of it, none hangs
            for pending in batch:
                pending.future.set_exception(exc)
            return
        for pending, result in zip(batch, results, strict=True):
            pending.future.set_result(result)
        if self.on_batch:
            self.on_batch(batch[0].call, len(batch), rows)


def joined(fn: Callable) -> Callable[[list], list]:
    """A batch call from `fn` on one input: the parts are concatenated (DataFrames, lists,
    arrays, tuples of them), `fn` runs once, and its output is split back per part (a dict,
    DataFrame, array, list or tuple of them, one row per input row)."""

    def call(parts: list) -> list:
        lengths = [_length(p) for p in parts]
        out = fn(_concat(parts)) if not isinstance(parts[0], tuple) else fn(*_concat(parts))
        bounds = np.cumsum([0, *lengths])
        return [_slice(out, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    return call


def _length(part) -> int:
    return len(part[0]) if isinstance(part, tuple) else len(part)


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(_concat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, pd.DataFrame):
        return pd.concat(parts) if len(parts) > 1 else first
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    return [item for part in parts for item in part]


def _slice(out, begin: int, end: int):
    if isinstance(out, dict):
        return {key: _slice(value, begin, end) for key, value in out.items()}
    if isinstance(out, tuple):
        return tuple(_slice(value, begin, end) for value in out)
    if isinstance(out, pd.DataFrame | pd.Series):
        return out.iloc[begin:end]
    return out[begin:end]


# --- adapters ----------------------------------------------------------------------------------


class Adapter:
    """What an app's `server.load(config, run)` returns.

    `kind` "rows": `score(rows, submit)` takes the JSON rows; "files": `score(files, submit)`
    takes (name, path) pairs of the uploaded files, saved to a temporary folder. Either returns
    (outputs, rejects): lists of JSON objects, rejects as {"row": i, "reason": ...} (1-based
    rows, as in `score`'s rejects file). `submit(call, part)` runs `model_calls()[call]` in a
    batch on the worker thread. `routes(app, server)` may add app routes (recsys: /recommend).
    """

    kind = "rows"
    # A table app's input schema: `POST /score` then also takes a CSV/TSV/Parquet upload, and
    # `score(payload)` a DataFrame of it as `iter_table_chunks` reads it (None: JSON rows only).
    table_schema = None

    def model_calls(self) -> dict[str, Callable[[list], list]]:
        raise NotImplementedError

    def score(self, payload: list, submit: Callable) -> tuple[list[dict], list[dict]]:
        raise NotImplementedError

    def metadata(self) -> dict:
        raise NotImplementedError

    def routes(self, app, server: "Server") -> None:
        """Extra routes of the app (none by default)."""

    def warm_up(self) -> None:
        """Run before the server listens: trace the model calls, so that the first requests
        (and the first batch of a new size) do not pay for it. Nothing by default."""


def table_rows_call(
    schema, score_joined: Callable[[pd.DataFrame, np.ndarray], tuple]
) -> Callable[[list], list]:
    """A batch call over several requests' JSON rows for a table app, all of it on the worker
    thread: the requests' rows become one frame (`rows_groups_frame`, each request's rows as
    `rows_frame` reads them), `score_joined(frame, bounds)` checks and scores them in one pass
    (`score_joined_groups`: (outputs or None, reasons), rows numbered 1..N across the requests)
    and each request gets its JSON-ready (outputs, rejects) (`group_answers`), or the DataError
    its rows raised (`submit_rows` raises it in the request). An uploaded table (a frame, as
    `score` reads the file) is scored on its own, never joined with other requests' text.

    One frame, one validation and one conversion to JSON per batch, not one per request: on a
    server's one-row requests those per-request steps cost more than the model. Doing them
    here, not in the request threads, keeps the pandas work on one thread: spread over the
    request threads it contends for the GIL with the batch and costs several times as much."""
    from shared.scoring import join_groups, rows_groups_frame

    def call(parts: list) -> list:
        answers: list = [None] * len(parts)
        texts = [n for n, part in enumerate(parts) if not isinstance(part, pd.DataFrame)]
        for n, part in enumerate(parts):
            if isinstance(part, pd.DataFrame):
                frame, bounds = join_groups([part])
                answers[n] = group_answers(*score_joined(frame, bounds), bounds)[0]
        if texts:
            frame, bounds, errors = rows_groups_frame([parts[n] for n in texts], schema)
            scored = (
                group_answers(*score_joined(frame, bounds), bounds)
                if len(frame)
                else [([], [])] * len(texts)
            )
            for k, n in enumerate(texts):
                answers[n] = errors.get(k, scored[k])
        return answers

    return call


def group_answers(result: pd.DataFrame | None, reasons: pd.Series, bounds: np.ndarray) -> list:
    """Each request's JSON-ready (outputs, rejects) from a joined answer (`score_joined_groups`:
    rows numbered 1..N across the requests joined with `bounds`), its rows numbered from 1:
    `records` and `reject_list` of each request's part, converted in one pass."""
    from shared.scoring import group_of_rows

    outputs: list[list] = [[] for _ in range(len(bounds) - 1)]
    rejects: list[list] = [[] for _ in range(len(bounds) - 1)]
    if result is not None and len(result):
        rows = result["row"].to_numpy()
        groups = group_of_rows(bounds, rows)
        local = result.assign(row=rows - bounds[groups])
        for group, record in zip(groups.tolist(), records(local), strict=True):
            outputs[group].append(record)
    values = reasons.to_numpy()
    bad = np.flatnonzero(values != "")
    for position, group in zip(bad.tolist(), group_of_rows(bounds, bad + 1).tolist(), strict=True):
        rejects[group].append(
            {"row": position + 1 - int(bounds[group]), "reason": str(values[position])}
        )
    return list(zip(outputs, rejects, strict=True))


def submit_rows(submit: Callable, call: str, rows) -> tuple[list[dict], list[dict]]:
    """A request's (outputs, rejects) from a `table_rows_call` on the worker thread (`rows`:
    JSON objects, or an uploaded table's frame)."""
    answer = submit(call, rows, len(rows))
    if isinstance(answer, Exception):
        raise answer
    return answer


class FilesAdapter(Adapter):
    """A file app's adapter from its scorer (`predict(paths)` -> per path, the output row for
    `scorer.columns` or the reason, as `shared.scoring.score_files` takes): the upload's files
    are checked and scored as `score` scores them, named by their upload names."""

    kind = "files"

    def __init__(self, scorer, info: dict):
        self.scorer, self.info = scorer, info

    def model_calls(self) -> dict:
        return {"score": joined(self.scorer.predict)}

    def score(self, files: list[tuple[str, str]], submit) -> tuple[list[dict], list[dict]]:
        from shared.scoring import non_finite_reason, predict_readable

        columns = list(self.scorer.columns)
        paths = [path for _, path in files]
        results = predict_readable(lambda some: submit("score", some), paths)
        outputs, rejects = [], []
        for row, ((name, path), result) in enumerate(zip(files, results, strict=True), 1):
            reason = result if isinstance(result, str) else non_finite_reason(result, columns)
            if reason:
                rejects.append({"row": row, "file": name, "reason": reason.replace(path, name)})
                continue
            values = {c: plain(v) for c, v in zip(columns, result, strict=True)}
            if "path" in values:
                values["path"] = name  # the client's name, not the server's temporary file
            outputs.append({"row": row, **values})
        return outputs, rejects

    def metadata(self) -> dict:
        return {"outputs": ["row", *self.scorer.columns], **self.info}


def load_adapter(app_name: str, config, run: RunDir) -> Adapter:
    module = importlib.import_module(f"{APPS[app_name].package}.server")
    return module.load(config, run)


def records(frame: pd.DataFrame | None) -> list[dict]:
    """JSON-ready rows of an output table: NumPy scalars as Python ones, NaN and NA as null.

    Column by column (one `tolist` each), not `to_dict(orient="records")` and a cast of the
    whole frame: on a server's few rows those cost about 4 ms a request, more than the model."""
    if frame is None:
        return []
    keys, columns = [str(k) for k in frame.columns], []
    for k in range(frame.shape[1]):
        column = frame.iloc[:, k]
        kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"
        if column.dtype in (np.float32, np.float16):
            # Their shortest digits, as a CSV shows them, not the widened double's.
            values = column.to_numpy().astype(str).astype(np.float64).tolist()
        else:
            values = column.tolist()
        if kind in "iub":
            columns.append(values)
        elif kind == "f":
            columns.append([v if math.isfinite(v) else None for v in values])
        else:
            columns.append([None if v is pd.NA or v is pd.NaT else plain(v) for v in values])
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def plain(value):
    """One output value as JSON has it."""
    if isinstance(value, np.float32 | np.float16):
        value = float(str(value))  # its shortest digits, as a CSV shows it, not the double's
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def reject_list(reasons: pd.Series) -> list[dict]:
    """{"row", "reason"} per rejected row of a reasons Series indexed by row number."""
    bad = reasons[reasons != ""]
    return [{"row": int(row), "reason": str(reason)} for row, reason in bad.items()]


def model_card_summary(run: RunDir, limit: int = 1500) -> dict:
    """The run's model card: its title, its section headings and its first section's text."""
    path = run.path / "model_card.md"
    if not path.exists():
        return {"title": None, "sections": [], "summary": "no model card (run evaluate)"}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), None)
    sections = [line[3:].strip() for line in lines if line.startswith("## ")]
    first, body = False, []
    for line in lines:
        if line.startswith("## "):
            if first:
                break
            first = True
        elif first:
            body.append(line)
    return {"title": title, "sections": sections, "summary": "\n".join(body).strip()[:limit]}


def row_objects(body) -> list[dict]:
    """The rows of a JSON body {"rows": [{...}, ...]}; RequestError saying what is wrong."""
    if not isinstance(body, dict) or "rows" not in body:
        raise RequestError('expected a JSON object {"rows": [{...}, ...]}')
    rows = body["rows"]
    if not isinstance(rows, list):
        raise RequestError(f'"rows" must be a list of objects, got {type(rows).__name__}')
    if not rows:
        raise RequestError('"rows" is empty: send at least one row')
    if len(rows) > MAX_REQUEST_ROWS:
        raise RequestError(f"{len(rows):,} rows in one request; at most {MAX_REQUEST_ROWS:,}", 413)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise RequestError(f"row {n} is not a JSON object ({type(row).__name__})")
    return rows


# --- metrics -----------------------------------------------------------------------------------


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per server)."""

    def __init__(self, app_name: str):
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # the `_created` series only clutter a scrape
        self.registry = CollectorRegistry()
        kw = {"registry": self.registry}
        self.requests = Counter(
            "deepfield_requests", "HTTP requests answered", ["route", "status"], **kw
        )
        self.rows = Counter("deepfield_rows", "rows (or files) received to score", ["route"], **kw)
        self.outputs = Counter("deepfield_outputs", "output rows answered", ["route"], **kw)
        self.rejects = Counter("deepfield_rejects", "rows (or files) rejected", ["route"], **kw)
        self.latency = Histogram(
            "deepfield_request_seconds",
            "request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.batch_rows = Histogram(
            "deepfield_batch_rows", "rows per model call", ["call"], buckets=BATCH_BUCKETS, **kw
        )
        self.batch_parts = Histogram(
            "deepfield_batch_requests",
            "requests joined in one model call",
            ["call"],
            buckets=BATCH_BUCKETS,
            **kw,
        )
        self.info = Gauge("deepfield_model_info", "the served run", ["app", "run"], **kw)

    def batch(self, call: str, parts: int, rows: int) -> None:
        self.batch_rows.labels(call).observe(rows)
        self.batch_parts.labels(call).observe(parts)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --- the application ---------------------------------------------------------------------------


class Server:
    """An adapter, its batcher and its metrics: what the routes share."""

    def __init__(
        self,
        app_name: str,
        adapter: Adapter,
        run: RunDir,
        max_batch,
        max_wait_ms,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ):
        self.app_name, self.adapter, self.run = app_name, adapter, run
        self.max_upload_bytes = max_upload_bytes
        self.metrics = Metrics(app_name)
        self.metrics.info.labels(app_name, run.path.name).set(1)
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        adapter.warm_up()  # before the batcher's thread exists: TensorFlow on one thread at once
        self.batcher = Batcher(adapter.model_calls(), max_batch, max_wait_ms, self.metrics.batch)

    def submit(self, call: str, part, size: int | None = None):
        return self.batcher.submit(call, part, size)

    def expecting(self):
        """Around a request's handling: yields its `submit` (`Batcher.expecting`)."""
        return self.batcher.expecting()

    def metadata(self) -> dict:
        return {
            "app": self.app_name,
            "run": self.run.path.name,
            "run_path": str(self.run.path),
            "input": self.adapter.kind,
            "batching": {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms},
            "uploads": {
                "max_bytes": self.max_upload_bytes,
                "tables": self.adapter.table_schema is not None,
            },
            **self.adapter.metadata(),
            "model_card": model_card_summary(self.run),
        }

    def answer(self, route: str, work: Callable[[], tuple[list, list]], received: int):
        """Run a scoring request and count it: rows received, outputs, rejects. The answer is
        a JSONResponse of plain values (`records`), so FastAPI does not walk it again."""
        from starlette.responses import JSONResponse

        outputs, rejects = work()
        self.metrics.rows.labels(route).inc(received)
        self.metrics.outputs.labels(route).inc(len(outputs))
        self.metrics.rejects.labels(route).inc(len(rejects))
        return JSONResponse({"outputs": outputs, "rejects": rejects})

    def close(self) -> None:
        self.batcher.close()


def create_app(
    app_name: str,
    adapter: Adapter,
    run: RunDir,
    max_batch=64,
    max_wait_ms=5.0,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
):
    """The FastAPI application serving `adapter` (its `state.server` is the `Server`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    server = Server(app_name, adapter, run, max_batch, max_wait_ms, max_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        server.close()

    app = FastAPI(title=f"Deepfield {app_name}", lifespan=lifespan, docs_url="/docs")
    app.state.server = server
    _error_handlers(app, server)

    app.add_middleware(_Counting, server=server)

    @app.get("/health")
    async def health():
        return {"status": "ok", "app": app_name, "run": run.path.name}

    @app.get("/metadata")
    async def metadata():
        return server.metadata()

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(server.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/score")
    async def score(request: Request):
        with server.expecting() as submit:  # a batch forming now may wait for this request
            check_length(request, server.max_upload_bytes)
            if adapter.kind == "files":
                return await _score_upload(request, server, run_in_threadpool, submit)
            if adapter.table_schema is not None and _table_upload(request):
                return await _score_table(request, server, run_in_threadpool, submit)
            rows = row_objects(await json_body(request, tables=adapter.table_schema is not None))
            work = lambda: adapter.score(rows, submit)  # noqa: E731
            return await run_in_threadpool(server.answer, "/score", work, len(rows))

    adapter.routes(app, server)
    return app


_ROUTES = {"/score", "/recommend", "/health", "/metadata", "/metrics"}


class _Counting:
    """Counts every request by route and status, and its latency: a plain ASGI middleware
    (Starlette's `BaseHTTPMiddleware` runs each request in a task group of its own, about a
    millisecond of a request that the model answers in a few)."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]  # an error raised past here is answered 500

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            route = path if path in _ROUTES else "other"
            self.server.metrics.requests.labels(route, str(status[0])).inc()
            self.server.metrics.latency.labels(route).observe(time.perf_counter() - start)


async def json_body(request, tables: bool = False) -> Any:
    """The request's JSON body; RequestError for another content type or malformed JSON."""
    kind = request.headers.get("content-type", "")
    if "json" not in kind:
        also = ", text/csv, or a multipart upload of a CSV/Parquet file" if tables else ""
        raise RequestError(
            f"expected Content-Type application/json{also}, got {kind or 'none'}", status=415
        )
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({exc})") from exc


TABLE_TYPES = {"text/csv": ".csv", "text/tab-separated-values": ".tsv"}


def check_length(request, limit: int) -> None:
    """A 413 before reading a body its Content-Length says is over `limit` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError(_too_large(int(length), limit), 413)


def _too_large(size: int, limit: int) -> str:
    return (
        f"the request body is {_bytes(size)} (or more); this server takes at most "
        f"{_bytes(limit)}: split the upload"
    )


def _bytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"


def _table_upload(request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in TABLE_TYPES or kind == "multipart/form-data"


async def _score_table(request, server: Server, run_in_threadpool, submit):
    """A CSV/TSV body (Content-Type text/csv) or a multipart upload of one CSV/TSV/Parquet file,
    scored as `score` scores the file: the same header checks (a missing column is one 400),
    the same rejects with the same reasons, rows numbered from 1 as in the file."""
    folder = Path(tempfile.mkdtemp(prefix="deepfield-serve-"))
    try:
        path = await _save_table(request, folder, server.max_upload_bytes)
        frame = await run_in_threadpool(read_upload_table, path, server.adapter.table_schema)
        work = lambda: server.adapter.score(frame, submit)  # noqa: E731
        return await run_in_threadpool(server.answer, "/score", work, len(frame))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _save_table(request, folder: Path, limit: int) -> Path:
    """The uploaded table saved under `folder`, its suffix telling the reader its format; a
    body over `limit` bytes is a 413 however it is sent (no Content-Length, chunked)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in TABLE_TYPES:
        path, size = folder / f"upload{TABLE_TYPES[kind]}", 0
        with open(path, "wb") as handle:
            async for block in request.stream():
                size += len(block)
                if size > limit:
                    raise RequestError(_too_large(size, limit), 413)
                handle.write(block)
        return path
    try:
        form = await request.form(max_files=2, max_part_size=limit)
    except Exception as exc:  # python-multipart raises several types for a malformed body
        raise RequestError(f"malformed multipart upload ({exc})") from exc
    try:
        uploads = [
            item for key in ("file", "files") for item in form.getlist(key) if hasattr(item, "file")
        ]
        if len(uploads) != 1:
            raise RequestError(
                "expected one CSV, TSV or Parquet file under the field `file` "
                f"(curl -F file=@transactions.csv), got {len(uploads)}"
            )
        suffix = Path(uploads[0].filename or "upload.csv").suffix.lower()[:16] or ".csv"
        path = folder / f"upload{suffix}"
        with open(path, "wb") as handle:
            shutil.copyfileobj(uploads[0].file, handle)
        if path.stat().st_size > limit:
            raise RequestError(_too_large(path.stat().st_size, limit), 413)
        return path
    finally:
        await form.close()


def read_upload_table(path: Path, schema) -> pd.DataFrame:
    """An uploaded table as `score` reads its file (`iter_table_chunks`: text cells, malformed
    records as rows with their reason), after `score`'s header checks; RequestError (400, or
    413 over MAX_REQUEST_ROWS rows) naming the upload, never the server's temporary path."""
    from shared.io import ROW_PROBLEMS, iter_table_chunks, read_table_header

    try:
        schema.check_header(read_table_header(path), "the upload")
        chunks = list(iter_table_chunks(path, MAX_REQUEST_ROWS + 1))
    except DataError as exc:
        raise RequestError(str(exc).replace(str(path), "the upload")) from exc
    frame = chunks[0]
    if len(chunks) > 1 or len(frame) > MAX_REQUEST_ROWS:
        raise RequestError(f"more than {MAX_REQUEST_ROWS:,} rows in one upload", 413)
    if not len(frame):
        raise RequestError("the upload has a header and no rows")
    frame = frame.reset_index(drop=True)
    if ROW_PROBLEMS in chunks[0].attrs:
        frame.attrs[ROW_PROBLEMS] = chunks[0].attrs[ROW_PROBLEMS]
    return frame


async def _score_upload(request, server: Server, run_in_threadpool, submit) -> dict:
    """A multipart upload (field `files`) saved to a temporary folder and scored as files."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise RequestError(
            "expected a multipart/form-data upload with the files under the field `files` "
            f"(curl -F files=@image.png), got Content-Type {kind or 'none'}",
            status=415,
        )
    try:
        form = await request.form(max_files=MAX_REQUEST_ROWS, max_part_size=MAX_UPLOAD_BYTES)
    except Exception as exc:  # python-multipart raises several types for a malformed body
        raise RequestError(f"malformed multipart upload ({exc})") from exc
    uploads = [item for item in form.getlist("files") if hasattr(item, "filename")]
    if not uploads:
        raise RequestError("no files in the upload: send them under the field `files`")
    folder = Path(tempfile.mkdtemp(prefix="deepfield-serve-"))
    try:
        files = []
        for n, upload in enumerate(uploads):
            name = upload.filename or f"file{n + 1}"
            # The saved name keeps the suffix (the readers go by it), never the client's path.
            path = folder / f"{n:06d}{Path(name).suffix.lower()[:16]}"
            with open(path, "wb") as handle:
                shutil.copyfileobj(upload.file, handle)
            files.append((name, str(path)))
        size = sum(Path(path).stat().st_size for _, path in files)
        if size > server.max_upload_bytes:  # sent without a Content-Length (chunked)
            raise RequestError(_too_large(size, server.max_upload_bytes), 413)
        work = lambda: server.adapter.score(files, submit)  # noqa: E731
        return await run_in_threadpool(server.answer, "/score", work, len(files))
    finally:
        await form.close()
        shutil.rmtree(folder, ignore_errors=True)


def _error_handlers(app, server: Server) -> None:
    """One JSON line {"error": ...} for every failure: 4xx for the request's, 500 for ours."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def bad_request(_request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(DataError)
    async def bad_data(_request, exc: DataError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal(_request, exc: Exception):
        # Starlette raises it on after this answer, so uvicorn logs the traceback for the
        # operator; the client gets the one line.
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}: {exc})"}, status_code=500
        )


# --- the step ----------------------------------------------------------------------------------


def serve(app_name: str, config, options) -> None:
    """The `serve` step: load the run's model once, then answer until Ctrl-C or SIGTERM."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ConfigError(
            f"serve needs FastAPI and uvicorn ({exc.name} is not installed): "
            'pip install -e ".[serve]"'
        ) from exc
    host = options.host or "127.0.0.1"
    port = 8080 if options.port is None else options.port
    max_batch = 64 if options.max_batch is None else options.max_batch
    max_wait_ms = 5.0 if options.max_wait_ms is None else options.max_wait_ms
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    if max_batch < 1 or max_wait_ms < 0:  # before the model loads, not after
        raise ConfigError(
            f"--max-batch must be 1 or more and --max-wait-ms 0 or more, got {max_batch} and "
            f"{max_wait_ms:g}"
        )
    _check_port(host, port)  # a port in use is one line before the model loads (seconds)
    run = RunDir.locate(app_name, options.run, config.run.root)
    adapter = load_adapter(app_name, config, run)
    app = create_app(app_name, adapter, run, max_batch, max_wait_ms)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = _Uvicorn(uv_config, app_name, run, max_batch, max_wait_ms)
    # uvicorn handles SIGINT and SIGTERM itself: it stops accepting, finishes the requests in
    # flight, runs the lifespan shutdown (the batcher) and returns.
    server.run()
    if server.stopped_by:
        print(f"serve: stopped by {server.stopped_by}", file=sys.stderr, flush=True)


def _check_port(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from exc


def _uvicorn_server():
    import uvicorn

    class Announcing(uvicorn.Server):
        """uvicorn's server, printing the URL once it listens (the port it got, when 0)."""

        def __init__(self, config, app_name, run, max_batch, max_wait_ms):
            super().__init__(config)
            self.banner = (app_name, run, max_batch, max_wait_ms)
            self.stopped_by = None

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                app_name, run, max_batch, max_wait_ms = self.banner
                sock = self.servers[0].sockets[0].getsockname() if self.servers else None
                host, port = (sock[0], sock[1]) if sock else (self.config.host, self.config.port)
                shown = f"[{host}]" if ":" in host else host
                print(
                    f"serve: {app_name} run {run.path.name} at http://{shown}:{port} "
                    f"(POST /score, GET /health /metadata /metrics; batches of up to "
                    f"{max_batch} rows, {max_wait_ms:g} ms wait); Ctrl-C stops",
                    flush=True,
                )

        def handle_exit(self, sig, frame):
            self.stopped_by = signal.Signals(sig).name
            super().handle_exit(sig, frame)
            # uvicorn re-raises a caught signal once it has shut down, which would end the
            # process by the signal's default action: a stop asked for is a clean exit here.
            getattr(self, "_captured_signals", []).clear()

    return Announcing


def _Uvicorn(*args):  # noqa: N802 - a class made on first use, so uvicorn is imported lazily
    return _uvicorn_server()(*args)
