"""The serving image's install step, replayed here without Docker.

The RUN lines of the Dockerfile's ``build`` stage are read out of the Dockerfile (never copied)
and run as they are, with the CPU build arguments, in a clean venv standing in for /opt/venv, on
the files its COPY lines name. The image's own ENTRYPOINT and ENV then start the server on the
tiny model repository, which must get ready, score, pass the image's HEALTHCHECK command, and
drain on SIGTERM. What this does not cover: the base images themselves (Debian 12 distroless,
CUDA), which no machine here can pull.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from deploy_paths import K8S, ROOT
from dockerfile_steps import Dockerfile, Stage, read
from prometheus_client.parser import text_string_to_metric_families
from service_process import free_port

IMAGE_VENV = "/opt/venv"
CPU_BUILD_ARGS = {"VARIANT": "cpu", "OPENVINO": "0"}
SERVING_ONLY = {"torch", "transformers"}
READY_TIMEOUT_S = 120

pytestmark = pytest.mark.slow


@dataclass
class Image:
    dockerfile: Dockerfile
    venv: Path

    @property
    def serve(self) -> Stage:
        return self.dockerfile.stages[-1]

    def relocate(self, text: str) -> str:
        return text.replace(IMAGE_VENV, str(self.venv))


def copy_sources(stage: Stage, workdir: Path) -> None:
    for copy in stage.all("COPY"):
        *sources, dest = shlex.split(copy.arguments)
        assert not any(s.startswith("--from") for s in sources), "build stage copies from context"
        target = workdir / dest
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)


def replay_build(build_args: dict[str, str], root: Path) -> Image:
    """Runs the ``build`` stage's RUN lines with these build arguments; the venv is root/venv."""
    dockerfile = read(ROOT / "Dockerfile")
    stage = dockerfile.stage("build")
    built = Image(dockerfile, root / "venv")
    (workdir_line,) = stage.all("WORKDIR")
    workdir = root / "context" / workdir_line.arguments.lstrip("/")
    copy_sources(stage, workdir)
    (shell_line,) = stage.all("SHELL")
    shell = shell_line.exec_form()
    assert shell is not None
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(dockerfile.build_args(stage, build_args))
    for run in stage.all("RUN"):
        result = subprocess.run(
            [*shell, built.relocate(run.arguments)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"Dockerfile:{run.line} failed:\n{result.stderr[-4000:]}"
    return built


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return replay_build(CPU_BUILD_ARGS, tmp_path_factory.mktemp("image"))


def installed(venv: Path) -> set[str]:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {p["name"].lower() for p in json.loads(result.stdout)}


def test_install_is_the_serving_set_only(image: Image) -> None:
    packages = installed(image.venv)
    assert not packages & SERVING_ONLY, f"serving image holds {packages & SERVING_ONLY}"
    assert {"onnxruntime", "fastapi", "uvicorn", "tokenizers", "rlhf-reward-service"} <= packages
    assert "onnxruntime-gpu" not in packages


OTHER_VARIANTS = {
    "gpu": ({"VARIANT": "gpu", "OPENVINO": "0"}, "onnxruntime-gpu", "CUDAExecutionProvider"),
    "openvino": ({"VARIANT": "cpu", "OPENVINO": "1"}, "openvino", "CPUExecutionProvider"),
}


@pytest.mark.skipif(
    os.environ.get("DEPLOY_TEST_ALL_VARIANTS") != "1",
    reason="downloads onnxruntime-gpu or openvino (hundreds of MB): set DEPLOY_TEST_ALL_VARIANTS=1",
)
@pytest.mark.parametrize("variant", sorted(OTHER_VARIANTS))
def test_other_variants_install(variant: str, tmp_path: Path) -> None:
    """The GPU build keeps onnxruntime-gpu alone (its CUDA provider importable, no CPU-only
    onnxruntime left to shadow it); the OpenVINO build adds the runtime. Neither pulls torch."""
    build_args, package, provider = OTHER_VARIANTS[variant]
    built = replay_build(build_args, tmp_path)
    packages = installed(built.venv)
    assert package in packages and not packages & SERVING_ONLY
    if variant == "gpu":
        assert "onnxruntime" not in packages
    probe = "import onnxruntime; print(onnxruntime.get_available_providers())"
    if variant == "openvino":
        probe += "; import openvino; print(openvino.Core().available_devices)"
    result = subprocess.run(
        [str(built.venv / "bin" / "python"), "-c", probe], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert provider in result.stdout


def image_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in stage.all("ENV"):
        for pair in shlex.split(line.arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int
    env: dict[str, str]


@pytest.fixture(scope="module")
def server(image: Image, tiny_model_repo: Path) -> Iterator[Server]:
    """The image's ENTRYPOINT under the image's ENV, on loopback and the tiny repository."""
    stage = image.serve
    (entrypoint,) = stage.all("ENTRYPOINT")
    command = [image.relocate(part) for part in entrypoint.exec_form() or []]
    baked = image_env(stage)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD_SERVICE_")}
    env.update({k: v for k, v in baked.items() if k.startswith(("REWARD_SERVICE_", "PYTHON"))})
    port = free_port()
    env |= {
        "REWARD_SERVICE_HOST": "127.0.0.1",
        "REWARD_SERVICE_PORT": str(port),
        "REWARD_SERVICE_MODEL_REPO": str(tiny_model_repo),
        "REWARD_SERVICE_DRAIN_SECONDS": "5",
        "REWARD_SERVICE_GRPC_PORT": str(free_port()),
    }
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited {process.returncode}: {process.stderr.read()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("server not ready in time")
        time.sleep(0.25)
    yield Server(process, url, port, env)
    if process.poll() is None:
        process.kill()
        process.wait()


def test_image_env_binds_all_interfaces_and_reads_models_from_slash_models(image: Image) -> None:
    env = image_env(image.serve)
    assert env["REWARD_SERVICE_HOST"] == "0.0.0.0"
    assert env["REWARD_SERVICE_MODEL_REPO"] == "/models"
    (user,) = image.serve.all("USER")
    assert user.arguments.split(":")[0] not in ("0", "root")


def test_dockerignore_admits_every_copied_source(image: Image) -> None:
    """The context is an allow-list; a COPY of anything it leaves out would break the build."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for stage in image.dockerfile.stages:
        for copy in stage.all("COPY"):
            *sources, _ = shlex.split(copy.arguments)
            if not any(s.startswith("--from") for s in sources):
                assert {s.rstrip("/") for s in sources} <= allowed, f"Dockerfile:{copy.line}"


def test_server_from_the_image_install_is_ready_and_scores(server: Server) -> None:
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert httpx.get(server.url + "/healthz").status_code == 200
    response = httpx.post(
        server.url + "/v1/score",
        json={"inputs": [{"prompt": "How is the day?", "response": "It is lovely."}]},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["scores"]) == 1


def test_grpc_liveness_probe_passes_on_the_image_server(image: Image, server: Server) -> None:
    """The k8s livenessProbe is gRPC's health check on the port the image's ENV names."""
    import grpc

    assert image_env(image.serve)["REWARD_SERVICE_GRPC_PORT"] == "8001"
    address = f"127.0.0.1:{server.env['REWARD_SERVICE_GRPC_PORT']}"
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=10) == b"\x08\x01"  # status: SERVING
        named = b"\x0a\x1einference.GRPCInferenceService"
        assert check(named, timeout=10) == b"\x08\x01"


def test_healthcheck_command_passes_on_a_ready_server(image: Image, server: Server) -> None:
    (check,) = image.serve.all("HEALTHCHECK")
    command = [image.relocate(part) for part in check.exec_form() or []]
    assert command, "HEALTHCHECK must be exec form: the CPU image has no shell"
    assert subprocess.run(command, env=server.env, timeout=10).returncode == 0
    elsewhere = server.env | {"REWARD_SERVICE_PORT": str(free_port())}
    assert subprocess.run(command, env=elsewhere, capture_output=True, timeout=10).returncode != 0


def metric_names(expressions: list[str]) -> set[str]:
    names = set(re.findall(r"\breward_[a-z_]+", " ".join(expressions)))
    return {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in names}


def test_dashboard_and_autoscaler_metrics_exist_on_the_server(server: Server) -> None:
    httpx.post(server.url + "/v1/score", json={"inputs": ["warm up the histograms"]})
    exposed = {
        f.name for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)
    }
    dashboard = json.loads((K8S / "monitoring" / "grafana-dashboard.json").read_text())
    panel_queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rule_queries = [
        r[q] for r in adapter["rules"]["custom"] for q in ("seriesQuery", "metricsQuery")
    ]
    wanted = metric_names([*panel_queries, *rule_queries])
    assert wanted, "no reward_* metric found in the dashboard"
    assert wanted <= exposed, f"not exposed by the server: {sorted(wanted - exposed)}"


def test_sigterm_drains_and_exits_cleanly(server: Server) -> None:
    """Runs last in this module: it stops the shared server."""
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
