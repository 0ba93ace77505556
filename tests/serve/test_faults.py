"""A model that returns NaN or -inf, or makes ONNX Runtime raise, on chosen words
(faulty_model.py), served for real: the fault stays with the request that carried the word."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import grpc
import httpx
import pytest
from faulty_model import INF_WORD, NAN_WORD, RAISE_WORD
from prometheus_client.parser import text_string_to_metric_families
from service_process import Server, free_port, running_server
from tritonclient.grpc import service_pb2 as pb

from reward_service.scorer import LoadedModel


@pytest.fixture(scope="module")
def faulty_server(faulty_repo, tmp_path_factory) -> Iterator[Server]:
    # ONNX Runtime, which raises on a Gather out of bounds (OpenVINO reads a zero instead), and
    # a longer batching window than the default, so that concurrent requests share batches.
    tmp = tmp_path_factory.mktemp("faulty")
    flags = ("--backend", "onnxruntime", "--max-wait-ms", "50", "--grpc-port", str(free_port()))
    with running_server(faulty_repo, tmp, *flags) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(faulty_repo) -> LoadedModel:
    return LoadedModel.open(faulty_repo / "faulty" / "1", threads=1)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def metric(server: Server, name: str) -> dict[tuple, float]:
    families = text_string_to_metric_families(server.get("/metrics").text)
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in families
        for s in f.samples
        if s.name == name
    }


@pytest.mark.parametrize("word", [NAN_WORD, INF_WORD])
def test_non_finite_scores_fail_their_request_and_name_the_items(faulty_server, word):
    pair = {"prompt": "p", "response": word}
    inputs = ["a fine text", f"a {word} text", "another fine one", pair]
    response = faulty_server.post("/v1/score", {"inputs": inputs})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "non_finite_score"
    assert "inputs[1]" in error["message"] and "inputs[3]" in error["message"]
    assert "inputs[0]" not in error["message"]
    compare = faulty_server.post(
        "/v1/compare", {"pairs": [{"prompt": "p", "chosen": "fine", "rejected": word}]}
    )
    assert compare.status_code == 422 and "pairs[0].rejected" in error_of(compare)["message"]
    openrlhf = faulty_server.post("/get_reward", {"query": ["fine", f"not {word}"]})
    assert openrlhf.status_code == 422 and "query[1]" in error_of(openrlhf)["message"]


@pytest.mark.parametrize("word", [NAN_WORD, INF_WORD, RAISE_WORD])
def test_the_v2_doors_fail_the_request_too(faulty_server, word):
    """No NaN in a KServe v2 answer either, over REST or gRPC: the request fails, named."""
    texts = ["a fine text", f"a {word} text"]
    tensor = {"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}
    response = faulty_server.post("/v2/models/faulty/infer", {"inputs": [tensor]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and "element 1" in error and "element 0" not in error, error
    address = grpc_address(faulty_server)
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        request = pb.ModelInferRequest(model_name="faulty")
        request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
            [t.encode() for t in texts]
        )
        with pytest.raises(grpc.RpcError) as caught:
            infer(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "element 1" in caught.value.details()


def grpc_address(server: Server) -> str:
    """The gRPC address the server logged at start-up."""
    match = re.search(r"grpc://(\S+?)[ )]", server.logs())
    assert match, server.logs()[-2000:]
    return match.group(1)


def test_an_item_that_makes_the_backend_raise_fails_only_its_request(faulty_server, reference):
    """40 concurrent requests share batches; every fifth carries the word that raises."""
    requests = [
        [f"text {i} {'word ' * (i % 7)}", f"{RAISE_WORD} here" if i % 5 == 0 else "fine"]
        for i in range(40)
    ]
    runs_before = metric(faulty_server, "reward_batch_size_count")
    key = (("kind", "error"), ("model", "faulty@1"))
    failed_before = metric(faulty_server, "reward_failed_items_total").get(key, 0)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=faulty_server.url, timeout=120, limits=limits) as c:
            posts = [c.post("/v1/score", json={"inputs": r}) for r in requests]
            return await asyncio.gather(*posts)

    responses = asyncio.run(send_all())
    for i, (texts, response) in enumerate(zip(requests, responses, strict=True)):
        if i % 5 == 0:
            assert response.status_code == 422, response.text
            error = error_of(response)
            assert error["code"] == "inference_failed" and "inputs[1]" in error["message"]
            assert "inputs[0]" not in error["message"]
        else:
            assert response.status_code == 200, response.text
            assert response.json()["scores"] == pytest.approx(reference.score(texts), abs=1e-6)
    failed = metric(faulty_server, "reward_failed_items_total")
    assert failed[key] - failed_before == 8
    # The raising requests really shared runs with innocent ones, which were re-run apart.
    assert "re-running it" in faulty_server.logs()
    runs = metric(faulty_server, "reward_batch_size_count")
    assert sum(runs.values()) - sum(runs_before.values()) < 40 * 2
    assert "Traceback" not in faulty_server.logs()


def test_a_request_of_nothing_but_failures_is_still_a_4xx(faulty_server):
    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=faulty_server.url, timeout=120) as c:
            return await asyncio.gather(
                *(c.post("/v1/score", json={"inputs": [f"{RAISE_WORD} {i}"]}) for i in range(12))
            )

    statuses = {r.status_code for r in asyncio.run(send_all())}
    assert statuses == {422}
    assert faulty_server.post("/v1/score", {"inputs": ["still serving"]}).status_code == 200
