"""Run a server command in its own process group until it is ready, and stop it with its workers.

One piece for everything that starts the real service (``make bench-serve``, the screenshots,
the HTTP, fresh-score and browser tests): start the command with its output in a log file,
poll a readiness check, then on exit SIGTERM the whole process group (``bentoml serve`` and its
workers), escalating to SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from triage.paths import PROJECT_ROOT

__all__ = ["ServerFailed", "free_port", "running_server", "stop_process_group"]


def free_port() -> int:
    """A TCP port free on loopback right now (for a server started next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerFailed(RuntimeError):
    """The server exited, or was not ready in time; the message ends with its log's tail."""


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL it if it outlives ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def running_server(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout_s: float,
    poll_s: float = 0.3,
    grace_s: float = 20,
) -> Iterator[subprocess.Popen]:
    """Start ``command`` (cwd: the project root), wait until ``ready()``, yield the process.

    ``ready`` may raise ``requests.RequestException`` while the server is still starting.

    Raises:
        ServerFailed: the process exited, or ``ready()`` stayed false for ``timeout_s``.
    """
    import requests

    def tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(command),
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the workers stop with it
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise ServerFailed(f"server exited:\n{tail()}")
            with contextlib.suppress(requests.RequestException):
                if ready():
                    break
            if time.monotonic() > deadline:
                raise ServerFailed(f"server not ready after {timeout_s:.0f} s:\n{tail()}")
            time.sleep(poll_s)
        yield proc
    finally:
        stop_process_group(proc, grace_s)
