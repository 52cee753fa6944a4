"""Several training workers on one machine: `deepfield <app> train --workers N`.

Starts N copies of the same train command, each with a TF_CONFIG naming every worker on a free
loopback port, so MultiWorkerMirroredStrategy trains them as one cluster. Their output is
streamed with a `[worker i]` prefix. If any worker fails, the others are stopped and the
launcher exits non-zero naming the worker that failed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


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
    processes = []
    for config in configs:
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "shared.cli", *argv]
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
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
    failed = None
    try:
        while True:
            codes = [p.poll() for p in processes]
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None or all(code == 0 for code in codes):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(processes)
        raise
    if failed is not None:
        _stop(processes)
    for thread in threads:
        thread.join(timeout=5)
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


def _stop(processes: list[subprocess.Popen]) -> None:
    """Terminate every worker's process group, then kill whatever is left."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.time() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
