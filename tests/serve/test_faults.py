"""A model that returns NaN or -inf, or makes ONNX Runtime raise, on chosen words
(faulty_model.py), served for real: the fault stays with the request that carried the word."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from faulty_model import INF_WORD, NAN_WORD, RAISE_WORD
from prometheus_client.parser import text_string_to_metric_families
from service_process import Server, running_server

from reward_service.scorer import LoadedModel


@pytest.fixture(scope="module")
def faulty_server(faulty_repo, tmp_path_factory) -> Iterator[Server]:
    # ONNX Runtime, which raises on a Gather out of bounds (OpenVINO reads a zero instead), and
    # a longer batching window than the default, so that concurrent requests share batches.
    tmp = tmp_path_factory.mktemp("faulty")
    with running_server(faulty_repo, tmp, "--backend", "onnxruntime", "--max-wait-ms", "50") as srv:
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


def test_an_item_that_makes_the_backend_raise_fails_only_its_request(faulty_server, reference):
    """40 concurrent requests share batches; every fifth carries the word that raises."""
    requests = [
        [f"text {i} {'word ' * (i % 7)}", f"{RAISE_WORD} here" if i % 5 == 0 else "fine"]
        for i in range(40)
    ]
    runs_before = metric(faulty_server, "reward_batch_size_count")

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
    assert failed[(("kind", "error"), ("model", "faulty@1"))] == 8
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
