"""Real ``reward-service serve`` processes on loopback, over the shared tiny ONNX model.

Each server is a subprocess started through the CLI exactly as an operator would, so the tests
cover start-up, settings, signal handling and shutdown, not just the app object.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from service_process import Server, free_port, running_server, serve_command

BACKENDS = ["onnxruntime", "openvino"]


def openvino_usable() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


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


@pytest.fixture(scope="session")
def faulty_repo(tiny_model_dir, tmp_path_factory) -> Path:
    """``faulty@1``: NaN, -inf or an ONNX Runtime error for chosen words (faulty_model.py)."""
    from faulty_model import make_faulty_repo

    repo = tmp_path_factory.mktemp("faulty-repo")
    make_faulty_repo(repo, tiny_model_dir / "tokenizer.json")
    return repo


@pytest.fixture(scope="session")
def slow_repo(tiny_model_dir, tmp_path_factory) -> Path:
    """``slow@1``: the faulty graph plus a fixed matrix workload, so each run takes a while."""
    from faulty_model import make_faulty_repo

    repo = tmp_path_factory.mktemp("slow-repo")
    make_faulty_repo(repo, tiny_model_dir / "tokenizer.json", name="slow", burn=40)
    return repo


@pytest.fixture(scope="module")
def ort_server(tiny_model_repo, tmp_path_factory) -> Iterator[Server]:
    """The tiny model at default settings but for the backend, named so that scores can be
    compared with an in-process ONNX Runtime reference."""
    tmp = tmp_path_factory.mktemp("ort-default")
    with running_server(tiny_model_repo, tmp, "--backend", "onnxruntime") as srv:
        yield srv
