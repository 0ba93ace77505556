"""KServe v2 as its real clients speak it, with their defaults, against one real server.

tritonclient (HTTP and gRPC) and kserve's InferenceRESTClient / InferenceGRPCClient each check
health, metadata and inference (numpy inputs, so the binary tensor extension over HTTP and
``raw_input_contents`` over gRPC), then the errors a user meets: an unknown model, a missing
key, a request over the limits. The server runs with API keys on, so every call carries one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from service_process import free_port, running_server
from tritonclient.utils import InferenceServerException

from reward_service.scorer import LoadedModel

KEY = "v2-client-key"
TEXTS = ["the day is wonderful and lovely.", "the day is awful and gloomy.", "a plain text"]
PAIRS = [("Tell me about the day.", "the day is lovely."), ("Tell me.", "it is nasty.")]
MAX_ITEMS = 16


@dataclass(frozen=True)
class V2Server:
    url: str  # http://127.0.0.1:port
    grpc: str  # 127.0.0.1:port
    log: str

    @property
    def http_address(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture(scope="module")
def v2(tiny_model_repo, tmp_path_factory) -> Iterator[V2Server]:
    tmp = tmp_path_factory.mktemp("v2-clients")
    keys = tmp / "keys"
    keys.write_text(KEY + "\n")
    port = free_port()
    flags = ["--backend", "onnxruntime", "--grpc-port", str(port), "--api-keys-file", str(keys)]
    flags += ["--max-items", str(MAX_ITEMS), "--max-request-bytes", "65536"]
    with running_server(tiny_model_repo, tmp, *flags) as server:
        yield V2Server(server.url, f"127.0.0.1:{port}", str(server.log))


@pytest.fixture(scope="module")
def reference(tiny_model_dir) -> LoadedModel:
    return LoadedModel.open(tiny_model_dir, backend="onnxruntime", threads=1)


def texts_tensor(texts: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=np.object_)


def auth() -> dict[str, str]:
    """A fresh dict per call: tritonclient adds its own headers to the dict it is given."""
    return {"authorization": f"Bearer {KEY}"}


# -- tritonclient.http -------------------------------------------------------------------------


def test_tritonclient_http_health_metadata_and_binary_infer(v2, reference):
    client = triton_http.InferenceServerClient(v2.http_address)
    assert client.is_server_live() and client.is_server_ready(headers=auth())
    assert client.is_model_ready("tiny", headers=auth())
    assert client.get_server_metadata(headers=auth())["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("tiny", headers=auth())
    assert meta["versions"] == ["1"] and meta["outputs"][0]["datatype"] == "FP32"

    tensor = triton_http.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(texts_tensor(TEXTS))  # binary by default
    result = client.infer("tiny", [tensor], headers=auth())  # asks for binary outputs by default
    scores = result.as_numpy("score")
    assert scores.dtype == np.float32 and scores.shape == (len(TEXTS),)
    np.testing.assert_allclose(scores, reference.score(TEXTS), atol=1e-5)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 4 * len(TEXTS)


def test_tritonclient_http_json_pairs_and_version(v2, reference):
    client = triton_http.InferenceServerClient(v2.http_address)
    inputs = []
    for name, column in zip(("prompt", "response"), zip(*PAIRS, strict=True), strict=True):
        tensor = triton_http.InferInput(name, [len(PAIRS), 1], "BYTES")
        tensor.set_data_from_numpy(texts_tensor(list(column)).reshape(-1, 1), binary_data=False)
        inputs.append(tensor)
    output = triton_http.InferRequestedOutput("score", binary_data=False)
    result = client.infer("tiny", inputs, model_version="1", outputs=[output], headers=auth())
    assert "data" in result.get_response()["outputs"][0]
    np.testing.assert_allclose(result.as_numpy("score"), reference.score(PAIRS), atol=1e-5)


def test_tritonclient_http_formats_every_v2_error(v2):
    client = triton_http.InferenceServerClient(v2.http_address)
    tensor = triton_http.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(texts_tensor(["x"]))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [tensor], headers=auth())
    assert unknown.value.status() == "404" and "no model 'nope'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as unauthorized:
        client.infer("tiny", [tensor])
    assert unauthorized.value.status() == "401" and "API key" in unauthorized.value.message()

    many = triton_http.InferInput("text", [MAX_ITEMS + 1], "BYTES")
    many.set_data_from_numpy(texts_tensor(["x"] * (MAX_ITEMS + 1)))
    with pytest.raises(InferenceServerException) as too_many:
        client.infer("tiny", [many], headers=auth())
    assert too_many.value.status() == "413" and f"at most {MAX_ITEMS}" in str(too_many.value)
    huge = triton_http.InferInput("text", [1], "BYTES")
    huge.set_data_from_numpy(texts_tensor(["x" * 70_000]))
    with pytest.raises(InferenceServerException) as too_big:
        client.infer("tiny", [huge], headers=auth())
    assert too_big.value.status() == "413" and "over 65536 bytes" in too_big.value.message()
    with pytest.raises(InferenceServerException) as metadata:
        client.get_model_metadata("nope", headers=auth())
    assert metadata.value.status() == "404"


# -- tritonclient.grpc -------------------------------------------------------------------------


def test_tritonclient_grpc_health_metadata_and_raw_infer(v2, reference):
    client = triton_grpc.InferenceServerClient(v2.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny", headers=auth())
    assert client.get_server_metadata(headers=auth()).name == "reward-service"
    meta = client.get_model_metadata("tiny", headers=auth())
    assert list(meta.versions) == ["1"] and meta.outputs[0].datatype == "FP32"

    tensor = triton_grpc.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(texts_tensor(TEXTS))  # raw_input_contents
    result = client.infer("tiny", [tensor], request_id="r-7", headers=auth())
    response = result.get_response()
    assert response.id == "r-7" and response.model_version == "1"
    assert len(response.raw_output_contents) == 1
    np.testing.assert_allclose(result.as_numpy("score"), reference.score(TEXTS), atol=1e-5)

    inputs = []
    for name, column in zip(("prompt", "response"), zip(*PAIRS, strict=True), strict=True):
        tensor = triton_grpc.InferInput(name, [len(PAIRS)], "BYTES")
        tensor.set_data_from_numpy(texts_tensor(list(column)))
        inputs.append(tensor)
    pairs = client.infer("tiny", inputs, model_version="1", headers=auth())
    np.testing.assert_allclose(pairs.as_numpy("score"), reference.score(PAIRS), atol=1e-5)


def test_tritonclient_grpc_status_codes(v2):
    client = triton_grpc.InferenceServerClient(v2.grpc)
    tensor = triton_grpc.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(texts_tensor(["x"]))
    cases = [
        ("nope", [tensor], auth(), "StatusCode.NOT_FOUND", "no model 'nope'"),
        ("tiny", [tensor], None, "StatusCode.UNAUTHENTICATED", "authorization: Bearer"),
        ("tiny", [tensor], {"authorization": "Bearer wrong"}, "StatusCode.UNAUTHENTICATED", ""),
    ]
    many = triton_grpc.InferInput("text", [MAX_ITEMS + 1], "BYTES")
    many.set_data_from_numpy(texts_tensor(["x"] * (MAX_ITEMS + 1)))
    cases.append(("tiny", [many], auth(), "StatusCode.INVALID_ARGUMENT", f"at most {MAX_ITEMS}"))
    huge = triton_grpc.InferInput("text", [1], "BYTES")
    huge.set_data_from_numpy(texts_tensor(["x" * 70_000]))
    cases.append(("tiny", [huge], auth(), "StatusCode.RESOURCE_EXHAUSTED", "larger than max"))
    for model, inputs, headers, status, words in cases:
        with pytest.raises(InferenceServerException) as error:
            client.infer(model, inputs, headers=headers)
        assert error.value.status() == status, error.value
        assert words in error.value.message()
    with pytest.raises(InferenceServerException) as metadata:
        client.get_model_metadata("nope", headers=auth())
    assert metadata.value.status() == "StatusCode.NOT_FOUND"


# -- kserve ------------------------------------------------------------------------------------
# kserve and tritonclient.grpc each register the protocol's messages in protobuf's default pool
# and cannot be imported into one process, so kserve's clients run in a child process.


def run_kserve_check(v2, check: str, expected: list[float]) -> None:
    script = Path(__file__).with_name("kserve_clients.py")
    args = [sys.executable, str(script), check, v2.url, v2.grpc, KEY, json.dumps(expected)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(f"{check}: ok"), done.stdout


def test_kserve_rest_client(v2, reference):
    run_kserve_check(v2, "rest", reference.score(TEXTS).tolist())


def test_kserve_grpc_client(v2, reference):
    run_kserve_check(v2, "grpc", reference.score(TEXTS).tolist())
