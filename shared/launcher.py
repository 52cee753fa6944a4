"""Several training workers on one machine: `deepfield <app> train --workers N`.

Starts N copies of the same train command, each with a TF_CONFIG naming every worker on a free
loopback port, so MultiWorkerMirroredStrategy trains them as one cluster. Their output is
streamed with a `[worker i]` prefix. If any worker fails, the others are stopped and the
launcher exits non-zero naming the worker that failed. SIGTERM or SIGINT to the launcher is
passed on to every worker, which it waits for before exiting non-zero: the workers run in
sessions of their own, so nothing else would reach them, and they would be left running.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 10  # seconds a stopped worker has to exit before it is killed


def free_ports(n: int) -> list[int]:
    """Ports the OS has just handed out on loopback (and released) for the workers to bind."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(n: int) -> list[dict]:
    workers = [f"127.0.0.1:{port}" for port in free_ports(n)]
    return [
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in range(n)
    ]


def launch(argv: list[str], workers: int, stream=None) -> int:
    """Run `python -m shared.cli *argv` as `workers` cooperating processes; return an exit code."""
    stream = stream or sys.stdout
    configs = tf_configs(workers)
    received: list[int] = []
    # Caught before the first worker starts, so no signal can land between a start and its stop.
    previous = _catch_stop_signals(received)
    processes: list[subprocess.Popen] = []
    try:
        processes.extend(_start(argv, config) for config in configs)
        print(
            f"launcher: {workers} workers on {', '.join(configs[0]['cluster']['worker'])}",
            file=stream,
            flush=True,
        )
        lock = threading.Lock()
        threads = [
            threading.Thread(target=_pump, args=(p, i, stream, lock), daemon=True)
            for i, p in enumerate(processes)
        ]
        for thread in threads:
            thread.start()
        failed = _watch(processes, received)
        if received or failed is not None:
            _stop(processes, received[0] if received else signal.SIGTERM, received)
        for thread in threads:
            thread.join(timeout=5)
    finally:
        _stop(processes, signal.SIGTERM, received)  # whatever went wrong, no worker outlives us
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _report(processes, workers, failed, received, stream)


def _catch_stop_signals(received: list[int]) -> dict:
    """Record SIGTERM and SIGINT in `received` instead of dying; the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers; the caller then owns the signals
    return {
        signum: signal.signal(signum, lambda n, _: received.append(n)) for signum in STOP_SIGNALS
    }


def _start(argv: list[str], config: dict) -> subprocess.Popen:
    env = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _watch(processes: list[subprocess.Popen], received: list[int]) -> int | None:
    """Wait until every worker has finished, one has failed (its index) or a signal came."""
    while not received:
        codes = [p.poll() for p in processes]
        failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
        if failed is not None or all(code == 0 for code in codes):
            return failed
        time.sleep(0.2)
    return None


def _report(processes, workers: int, failed: int | None, received: list[int], stream) -> int:
    if received:
        name = signal.Signals(received[0]).name
        print(
            f"error: launcher got {name}; passed it on to the {workers} workers and they stopped",
            file=sys.stderr,
            flush=True,
        )
        return 128 + received[0]
    if failed is not None:
        code = processes[failed].returncode
        print(
            f"error: worker {failed} exited with code {code}; stopped the other workers",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f"launcher: all {workers} workers finished", file=stream, flush=True)
    return 0


def _pump(process: subprocess.Popen, index: int, stream, lock: threading.Lock) -> None:
    for line in process.stdout:
        with lock:
            stream.write(f"[worker {index}] {line}")
            stream.flush()


def _stop(processes: list[subprocess.Popen], signum: int, received: list[int]) -> None:
    """Send `signum` to every running worker's process group and wait for them; kill what is
    left after GRACE_S, or at once when a second signal comes (an impatient second Ctrl-C)."""
    seen = len(received)
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signum)
    deadline = time.monotonic() + GRACE_S
    while any(p.poll() is None for p in processes):
        if time.monotonic() > deadline or len(received) > max(seen, 1):
            for process in processes:
                if process.poll() is None:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
            return
        time.sleep(0.1)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has just exited
        os.killpg(process.pid, signum)
