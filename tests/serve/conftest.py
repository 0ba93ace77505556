"""Real ``reward-service serve`` processes on loopback, over the shared tiny ONNX model.

Each server is a subprocess started through the CLI exactly as an operator would, so the tests
cover start-up, settings, signal handling and shutdown, not just the app object.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BACKENDS = ["onnxruntime", "openvino"]


def openvino_usable() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


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
def running_server(repo: Path, tmp: Path, *flags: str, env: dict | None = None) -> Iterator[Server]:
    port = free_port()
    log = tmp / f"server-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            serve_command(repo, port, *flags),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{server.logs()}")
            try:
                if server.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 90 s:\n{server.logs()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    if request.param == "openvino" and not openvino_usable():
        pytest.skip("openvino is not installed")
    return request.param


@pytest.fixture(scope="module")
def server(backend, tiny_model_repo, tmp_path_factory) -> Iterator[Server]:
    """The tiny model on the given backend, default limits except a small item cap."""
    tmp = tmp_path_factory.mktemp(f"serve-{backend}")
    with running_server(
        tiny_model_repo, tmp, "--backend", backend, "--max-items", "64", "--max-text-chars", "2000"
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def two_model_repo(tiny_model_repo, tmp_path_factory) -> Path:
    """``tiny`` (good) beside ``broken``, whose model.onnx no longer matches its sha256."""
    import json

    repo = tmp_path_factory.mktemp("two-models")
    shutil.copytree(tiny_model_repo / "tiny", repo / "tiny")
    broken = repo / "broken" / "1"
    shutil.copytree(tiny_model_repo / "tiny" / "1", broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["name"] = "broken"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with (broken / "model.onnx").open("ab") as fh:
        fh.write(b"corrupted")
    return repo


@dataclass(frozen=True)
class Launcher:
    """Test access to the helpers above without importing conftest as a module."""

    def running(self, repo: Path, tmp: Path, *flags: str):
        return running_server(repo, tmp, *flags)

    def command(self, repo: Path, *flags: str) -> list[str]:
        return serve_command(repo, free_port(), *flags)


@pytest.fixture(scope="session")
def launcher() -> Launcher:
    return Launcher()
