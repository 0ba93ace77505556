"""Hostile KServe v2 requests, over REST and gRPC, against a real server.

Every case must get a clear 4xx (or INVALID_ARGUMENT) in the protocol's own error shape, with a
short message that does not echo the input back, and the server must keep serving. Sizes that
drive work (dimensions, element counts, length prefixes, names) are refused before the work.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from service_process import Server, free_port, running_server, serve_command
from tritonclient.grpc import service_pb2 as pb

INFER = "/v2/models/tiny/infer"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def hostile(tiny_model_repo, tmp_path_factory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("v2-hostile")
    port = free_port()
    flags = ("--backend", "onnxruntime", "--grpc-port", str(port), "--max-items", "32")
    with running_server(tiny_model_repo, tmp, *flags) as server:
        yield server, f"127.0.0.1:{port}"


def v2_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert len(response.content) < 600, "the error echoes the request"
    return body["error"]


def post(server: Server, body: bytes, header_length: int | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if header_length is not None:
        headers = {"inference-header-content-length": str(header_length)}
    return httpx.post(server.url + INFER, content=body, headers=headers, timeout=30)


def text_tensor(data: list, shape: list | None = None, name: str = "text") -> dict:
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(data)], "data": data}


def binary_elements(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_request(raw: bytes, shape: list[int], size: int | None = None) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ]
        }
    ).encode()
    return header + raw, len(header)


def test_lone_surrogates_in_every_string_field_are_400(hostile):
    server, _ = hostile
    surrogate = "\\ud800"  # JSON accepts it; UTF-8 cannot encode it
    bodies = [
        '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a%s"]}]}',
        '{"id": "%s", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], '
        '"data": ["a"]}]}',
        '{"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["%s"]}, '
        '{"name": "response", "datatype": "BYTES", "shape": [1], "data": ["b"]}]}',
        '{"inputs": [{"name": "t%s", "datatype": "FP32", "shape": [1], "data": ["a"]}]}',
        '{"inputs": [{"name": "text", "datatype": "BYTES%s", "shape": [1], "data": ["a"]}]}',
        '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], '
        '"outputs": [{"name": "x%s"}]}',
        '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], '
        '"parameters": {"normalize": "%s"}}',
    ]
    for template in bodies:
        response = post(server, (template % surrogate).encode())
        assert 400 <= response.status_code < 500, (template, response.text)
        v2_error(response, response.status_code)
    body = json.dumps({"inputs": [text_tensor(["fine"])]}).encode()
    assert post(server, body).status_code == 200


def test_invalid_utf8_in_json_and_in_binary_elements_is_400(hostile):
    server, _ = hostile
    raw_json = b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["\xff"]}]}'
    assert "not valid JSON" in v2_error(post(server, raw_json), 400)
    body, length = binary_request(binary_elements(b"ok", b"\xed\xa0\x80"), [2])
    assert "not valid UTF-8" in v2_error(post(server, body, length), 400)


def test_huge_shapes_are_refused_without_echo(hostile):
    server, _ = hostile
    many_dims = [10**18] * 50_000  # ~1 MB of dimensions
    body = json.dumps({"inputs": [text_tensor(["a"], many_dims)]}).encode()
    assert "dimensions; at most 8" in v2_error(post(server, body), 422)
    product = json.dumps({"inputs": [text_tensor(["a"], [2**62] * 8)]}).encode()
    assert "more than 32 elements" in v2_error(post(server, product), 413)
    for bad in ([-1], [1.5], [True], ["1"], [2**63]):
        body = json.dumps({"inputs": [text_tensor(["a"], bad)]}).encode()
        assert "integers from 0" in v2_error(post(server, body), 422)
    digits = b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1' + b"0" * 5000 + b"]}]}"
    v2_error(post(server, digits), 400)


def test_sizes_that_drive_work_are_bounded(hostile):
    server, _ = hostile
    cases = [
        ({"inputs": [text_tensor(["a"])] * 1000}, 422, "1000 input tensors"),
        ({"inputs": [text_tensor(["a"] * 33)]}, 413, "at most 32"),
        ({"inputs": [text_tensor(["a"], [1])], "id": "i" * 5000}, 422, "at most 1024"),
        ({"inputs": [text_tensor(["a"], [1], name="n" * 100_000)]}, 422, "at most 256"),
        ({"inputs": [text_tensor(["a"] * 5000, [1])]}, 422, "more values than"),
        ({"inputs": [text_tensor(["a"])], "outputs": [{"name": "score"}] * 500}, 422, "500"),
        ({"inputs": [text_tensor(["a"])], "outputs": [{"name": "q" * 10_000}]}, 422, "256"),
        ({"inputs": [text_tensor([["a"], ["a"]], [3])]}, 422, "2 values where its shape holds 3"),
        ({"inputs": [text_tensor([1])]}, 422, "must be a string"),
        ({"inputs": [{**text_tensor(["a"]), "datatype": "FP32"}]}, 422, "must be BYTES"),
        ({"inputs": [text_tensor(["a"])], "parameters": {"normalize": 1}}, 422, "boolean"),
        ([1, 2], 422, "JSON object"),
    ]
    for body, status, words in cases:
        assert words in v2_error(post(server, json.dumps(body).encode()), status)
    deep = b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": '
    assert "nested too deeply" in v2_error(post(server, deep + b"[" * 100_000), 400)
    long_model = httpx.post(server.url + "/v2/models/" + "m" * 5000 + "/infer", json={}, timeout=30)
    assert "at most 256" in v2_error(long_model, 422)


def test_binary_length_prefixes_are_checked_before_slicing(hostile):
    server, _ = hostile
    good = binary_elements(b"first text", b"second")
    body, length = binary_request(good, [2])
    assert post(server, body, length).status_code == 200
    lying = struct.pack("<I", 0xFFFFFFFF) + b"abc"
    cases = [
        (binary_request(lying, [1]), "claims 4294967295 bytes but 3 remain"),
        (binary_request(good[:-1], [2]), "claims 6 bytes but 5 remain"),
        (binary_request(good + b"\x00", [2]), "1 bytes are left"),
        (binary_request(good[:2], [1]), "ends inside the length"),
        (binary_request(good, [2], size=len(good) + 1), "binary_data_size must count"),
        (binary_request(good, [2], size=-1), "binary_data_size must count"),
    ]
    for (body, length), words in cases:
        assert words in v2_error(post(server, body, length), 422)
    for header in ("99999999", "-1", "abc", "1" * 40):
        assert "Inference-Header-Content-Length" in v2_error(post(server, body, header), 400)
    extra, length = binary_request(good, [2])
    assert "belong to no input" in v2_error(post(server, extra + b"tail", length), 422)


def test_v2_errors_keep_the_protocol_shape_everywhere(hostile):
    server, _ = hostile
    assert "no model" in v2_error(httpx.get(server.url + "/v2/models/nope", timeout=30), 404)
    v2_error(httpx.get(server.url + "/v2/repository/index", timeout=30), 404)
    for undecodable in ("%ED%A0%80", "%FF"):  # a surrogate and a stray byte, percent-encoded
        v2_error(httpx.get(server.url + "/v2/models/" + undecodable, timeout=30), 404)
    v2_error(httpx.get(server.url + INFER, timeout=30), 405)
    form = httpx.post(server.url + INFER, data={"inputs": "x"}, timeout=30)
    assert "application/json" in v2_error(form, 415)
    huge = httpx.post(server.url + INFER, content=b"x" * (5 << 20), timeout=30)
    assert "split the request" in v2_error(huge, 413)
    # The service's own routes keep their own shape.
    assert httpx.get(server.url + "/v1/models/nope", timeout=30).json()["error"]["code"]


def grpc_call(address: str, payload: bytes, metadata=()) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GRPC_INFER)  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as error:
            call(payload, metadata=metadata, timeout=30)
    return error.value


def infer_request(**fields) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="tiny", **fields)


def tensor(shape: list[int], name: str = "text", datatype: str = "BYTES", **kw):
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape, **kw)


def test_grpc_hostile_requests_get_invalid_argument(hostile):
    server, address = hostile
    good = binary_elements(b"first", b"second")
    contents = pb.InferTensorContents
    invalid = [
        (b"\x0a\x05\xff\xfe\xfd\xfc\xfb", "not a valid ModelInferRequest"),  # bad UTF-8 in a string
        (b"\xff\xff\xff", "not a valid ModelInferRequest"),
        (infer_request(inputs=[tensor([1])] * 3), "3 input tensors"),
        (infer_request(inputs=[tensor([10**18] * 10_000)], raw_input_contents=[good]), "at most 8"),
        (infer_request(inputs=[tensor([2])], raw_input_contents=[good[:-1]]), "5 remain"),
        (infer_request(inputs=[tensor([1])], raw_input_contents=[b"\xff\xff\xff\xff"]), "claims"),
        (infer_request(inputs=[tensor([2])], raw_input_contents=[good, good]), "one per input"),
        (infer_request(inputs=[tensor([1], contents=contents(bytes_contents=[b"\xff"]))]), "UTF-8"),
        (infer_request(inputs=[tensor([2], contents=contents(bytes_contents=[b"a"]))]), "holds 2"),
        (infer_request(inputs=[tensor([1], datatype="FP32")], raw_input_contents=[good]), "BYTES"),
        (infer_request(id="i" * 5000, inputs=[tensor([2])], raw_input_contents=[good]), "1024"),
        (infer_request(inputs=[tensor([2], name="n" * 50_000)], raw_input_contents=[good]), "256"),
    ]
    for message, words in invalid:
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        error = grpc_call(address, payload)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (words, error.details())
        assert words in error.details() and len(error.details()) < 400, error.details()
    unknown = grpc_call(address, pb.ModelInferRequest(model_name="m" * 100).SerializeToString())
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert server.post(INFER, {"inputs": [text_tensor(["still serving"])]}).status_code == 200


def test_grpc_typed_contents_get_typed_outputs_and_metrics_count_calls(hostile):
    server, address = hostile
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary(
            GRPC_INFER,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        contents = pb.InferTensorContents(bytes_contents=[b"one", b"two"])
        request = infer_request(inputs=[tensor([2], contents=contents)])
        request.parameters["normalize"].bool_param = True
        response = infer(request, timeout=30)
    assert len(response.raw_output_contents) == 0
    typed = list(response.outputs[0].contents.fp32_contents)
    normalized = server.post(
        INFER, {"inputs": [text_tensor(["one", "two"])], "parameters": {"normalize": True}}
    ).json()["outputs"][0]["data"]
    assert typed == pytest.approx(normalized, abs=1e-5)
    metrics = server.get("/metrics").text
    assert f'reward_requests_total{{route="{GRPC_INFER}",status="OK"}}' in metrics
    assert f'route="{GRPC_INFER}",status="INVALID_ARGUMENT"' in metrics


def test_grpc_port_in_use_stops_start_up_with_one_line(tiny_model_repo, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = serve_command(tiny_model_repo, free_port(), "--grpc-port", str(port))
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("reward-service serve: error: cannot bind the gRPC port")
    assert "Traceback" not in done.stderr


def test_drain_turns_grpc_unavailable_then_exits(tiny_model_repo, tmp_path):
    """A request held in flight keeps the server draining; meanwhile gRPC says not ready and
    refuses new inference with UNAVAILABLE, and the process exits 0 once the request ends."""
    port = free_port()
    flags = ("--grpc-port", str(port), "--drain-seconds", "60")
    with running_server(tiny_model_repo, tmp_path, *flags) as server:
        host, http_port = server.url.removeprefix("http://").split(":")
        held = socket.create_connection((host, int(http_port)))
        body = json.dumps({"inputs": [text_tensor(["held"])]}).encode()
        held.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        time.sleep(0.5)  # the guard counts it in flight once the headers are in
        server.process.send_signal(signal.SIGTERM)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ready = channel.unary_unary(
                "/inference.GRPCInferenceService/ServerReady",
                request_serializer=pb.ServerReadyRequest.SerializeToString,
                response_deserializer=pb.ServerReadyResponse.FromString,
            )
            deadline = time.monotonic() + 30
            while ready(pb.ServerReadyRequest(), timeout=10).ready:
                assert time.monotonic() < deadline, "never started draining"
                time.sleep(0.1)
        request = infer_request(inputs=[tensor([1])], raw_input_contents=[binary_elements(b"x")])
        error = grpc_call(f"127.0.0.1:{port}", request.SerializeToString())
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in error.details()
        held.sendall(body)
        assert b"200 OK" in held.recv(4096)
        held.close()
        assert server.process.wait(timeout=60) == 0
