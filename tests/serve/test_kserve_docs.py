"""docs/serving.md's three KServe v2 examples (REST JSON, REST binary, gRPC) run as written
against a real server, and agree with each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from service_process import free_port, running_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def examples() -> list[tuple[str, str]]:
    text = DOCS.read_text()
    section = text[text.index("### KServe v2") : text.index("### Health and metrics")]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


def test_the_three_documented_ways_score_alike(tiny_model_repo, tmp_path):
    blocks = examples()
    assert [kind for kind, _ in blocks] == ["bash", "python", "python"]
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    grpc_port = free_port()
    with running_server(tiny_model_repo, tmp_path, "--grpc-port", str(grpc_port)) as server:
        http = server.url.removeprefix("http://")
        results = []
        for kind, code in blocks:
            code = code.replace("127.0.0.1:8000", http).replace(
                "127.0.0.1:8001", f"127.0.0.1:{grpc_port}"
            )
            code = code.replace("/models/demo/", "/models/tiny/").replace('"demo"', '"tiny"')
            command = ["bash", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            if kind == "bash":
                body = json.loads(done.stdout)
                assert body["id"] == "1" and body["outputs"][0]["datatype"] == "FP32"
                results.append(body["outputs"][0]["data"])
            else:
                results.append(
                    [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", done.stdout)]
                )
    assert all(len(r) == 2 for r in results), results
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)
    np.testing.assert_allclose(results[2], results[0], atol=1e-5)
    assert results[0][0] > results[0][1]  # the tiny model learned that lovely beats awful
