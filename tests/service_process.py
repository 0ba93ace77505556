"""Start ``reward-service serve`` as a subprocess and wait until it is ready: one copy for all.

The service runs through the CLI exactly as an operator starts it, on a free loopback port, so
tests cover start-up, settings, signal handling and shutdown, not just the app object. A module
of its own (not a conftest) so test files in every folder can import it by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, body: object = None, **kw) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30, **kw)

    def logs(self) -> str:
        return self.log.read_text()


def serve_command(repo: Path, port: int, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "reward_service.cli", "serve",
        "--model-repo", str(repo), "--port", str(port), "--threads", "1", *flags,
    ]  # fmt: skip


@contextmanager
def running_process(
    command: list[str], log: Path, ready: Callable[[], bool], name: str, env: dict | None = None
) -> Iterator[subprocess.Popen]:
    """Start ``command`` (output to ``log``), wait until ``ready()`` holds, always stop it: a
    SIGTERM first, as an orchestrator sends, then a kill if it does not exit in 30 s."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}")
            try:
                if ready():
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready in 90 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_server(repo: Path, tmp: Path, *flags: str, env: dict | None = None) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / f"server-{port}.log"

    def ready() -> bool:
        return httpx.get(url + "/readyz", timeout=30).status_code == 200

    command = serve_command(repo, port, *flags)
    with running_process(command, log, ready, "server", env) as process:
        yield Server(url, process, log)
