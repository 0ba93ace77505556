"""Run ``reward-service feedback`` as an operator does: each command a subprocess, the app a
real server on a free loopback port. A module of its own so every test file can import it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_process import free_port, running_process

CLI = [sys.executable, "-m", "reward_service.cli"]


def feedback(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """``reward-service feedback ARGS``; fails the test with its stderr unless ``check=False``."""
    done = subprocess.run(
        [*CLI, "feedback", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and done.returncode != 0:
        pytest.fail(f"feedback {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr}")
    return done


def new_annotator(db: str, name: str) -> str:
    """The annotator's token, from the one line ``feedback annotator`` prints."""
    line = feedback("annotator", "--db", db, "--name", name).stdout.strip()
    assert line.startswith("/login?token="), line
    return line.removeprefix("/login?token=")


@dataclass
class App:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def logs(self) -> str:
        return self.log.read_text()


@contextmanager
def running_app(db: str, tmp: Path, *flags: str) -> Iterator[App]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / f"feedback-{port}.log"
    command = [*CLI, "feedback", "serve", "--db", db, "--host", "127.0.0.1", "--port", str(port)]

    def ready() -> bool:  # /login without a token answers 401 once the app is up
        return httpx.get(url + "/login", timeout=5).status_code == 401

    with running_process([*command, *flags], log, ready, "feedback serve") as process:
        yield App(url, process, log)
