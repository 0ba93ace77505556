"""The HTTP contract against a real server, once per backend: identical behaviour on each."""

from __future__ import annotations

import asyncio
import math

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reward_service.scorer import LoadedModel

PAIRS = [
    ("Tell me about the day.", "the day is wonderful and lovely."),
    ("Tell me about the day.", "the day is awful and gloomy."),
    ("Tell me about our trip.", "our trip is happy and bright."),
]


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, backend) -> LoadedModel:
    """The same model in-process, on the same backend: what the service must reproduce."""
    return LoadedModel.open(tiny_model_dir, backend=backend, threads=1)


def test_score_pairs_and_texts_in_order(server, reference):
    inputs = [{"prompt": p, "response": r} for p, r in PAIRS] + ["a plain text"]
    body = server.post("/v1/score", {"inputs": inputs}).json()
    expected = reference.score([*PAIRS, "a plain text"])
    assert body["model"] == "tiny" and body["version"] == 1 and body["normalized"] is False
    np.testing.assert_allclose(body["scores"], expected, atol=1e-5)
    encoded = reference.encode([*PAIRS, "a plain text"])
    assert body["tokens"] == encoded.lengths.tolist()
    assert body["truncated"] == [False] * 4


def test_score_normalize_and_model_by_version(server, reference):
    raw = server.post("/v1/score", {"inputs": ["hello"], "model": "tiny@1"}).json()["scores"]
    body = server.post("/v1/score", {"inputs": ["hello"], "normalize": True, "model": "tiny"})
    norm = reference.manifest.normalization
    assert body.json()["normalized"] is True
    assert body.json()["scores"][0] == pytest.approx((raw[0] - norm.mean) / norm.std, abs=1e-5)


def test_long_input_is_truncated_and_reported(server, reference):
    long_response = " ".join(["wonderful"] * 150)  # 1,500 chars, 150+ tokens
    body = server.post("/v1/score", {"inputs": [{"prompt": "hi", "response": long_response}]})
    assert body.json()["truncated"] == [True]
    assert body.json()["tokens"] == [reference.manifest.template.max_length]


def test_empty_inputs_give_empty_results(server):
    body = server.post("/v1/score", {"inputs": []}).json()
    assert body["scores"] == [] and body["tokens"] == [] and body["truncated"] == []
    assert server.post("/v1/compare", {"pairs": []}).json()["margins"] == []


def test_compare_is_sigmoid_of_margin(server, reference):
    pairs = [{"prompt": PAIRS[0][0], "chosen": PAIRS[0][1], "rejected": PAIRS[1][1]}]
    body = server.post("/v1/compare", {"pairs": pairs}).json()
    chosen, rejected = reference.score([PAIRS[0], (PAIRS[0][0], PAIRS[1][1])])
    assert body["margins"][0] == pytest.approx(chosen - rejected, abs=1e-5)
    assert body["probabilities"][0] == pytest.approx(1 / (1 + math.exp(-(chosen - rejected))))
    assert body["chosen"][0] > body["rejected"][0]  # the tiny model learned sentiment


def test_openrlhf_get_reward_exact_client_shape(server, reference):
    """What OpenRLHF's remote_rm_fn posts, including the newer ``metas`` key."""
    queries = ["Tell me about the day. the day is lovely", "the day is nasty"]
    request = {"query": queries, "prompts": ["Tell me", "Tell"], "labels": ["", None]}
    body = server.post("/get_reward", {**request, "metas": [{}, {}]}).json()
    assert set(body) == {"rewards", "scores", "extra_logs"} and body["extra_logs"] == {}
    np.testing.assert_allclose(body["rewards"], reference.score(queries), atol=1e-5)
    assert body["scores"] == body["rewards"]
    legacy = server.post("/get_reward", {"query": queries}).json()
    assert legacy["rewards"] == body["rewards"]


def test_kserve_v2_infer_and_metadata(server, reference):
    texts = ["first text", "second text", "third"]
    request = {
        "id": "req-1",
        "inputs": [{"name": "text", "shape": [3, 1], "datatype": "BYTES", "data": texts}],
    }
    body = server.post("/v2/models/tiny/infer", request).json()
    assert body["model_name"] == "tiny" and body["model_version"] == "1" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert output["datatype"] == "FP32" and output["shape"] == [3] and output["name"] == "score"
    np.testing.assert_allclose(output["data"], reference.score(texts), atol=1e-5)
    pairs = {
        "inputs": [
            {"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [PAIRS[0][0]]},
            {"name": "response", "shape": [1], "datatype": "BYTES", "data": [PAIRS[0][1]]},
        ]
    }
    by_version = server.post("/v2/models/tiny/versions/1/infer", pairs).json()
    assert by_version["outputs"][0]["data"][0] == pytest.approx(
        reference.score([PAIRS[0]])[0], abs=1e-5
    )
    meta = server.get("/v2/models/tiny").json()
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["inputs"][0]["datatype"] == "BYTES" and meta["outputs"][0]["datatype"] == "FP32"
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert server.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
    assert server.get("/v2").json()["name"] == "reward-service"


def test_models_list_runtime_and_limits(server, backend):
    listing = server.get("/v1/models").json()
    assert listing["default"] == "tiny"
    (card,) = listing["data"]
    assert card["id"] == "tiny@1" and card["available"] is True
    assert card["runtime"]["backend"] == backend
    assert card["limits"]["max_items"] == 64 and card["limits"]["max_length"] == 64
    assert card["manifest"]["name"] == "tiny" and card["manifest"]["reference"] == []
    assert server.get("/v1/models/tiny@1").json()["id"] == "tiny@1"


def test_health_routes(server):
    assert server.get("/healthz").json() == {"status": "ok", "models": {}}
    assert server.get("/readyz").json() == {"status": "ready", "models": {"tiny@1": "ready"}}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/no/such/route", None, 404, "not_found"),
        ("DELETE", "/v1/score", None, 405, "method_not_allowed"),
        ("POST", "/v1/score", {"inputs": [1]}, 422, "invalid_request"),
        ("POST", "/v1/score", {"inputs": ["x"], "normalise": True}, 422, "invalid_request"),
        ("POST", "/v1/score", {"inputs": [{"prompt": "p"}]}, 422, "invalid_request"),
        ("POST", "/v1/score", {"inputs": ["x"] * 65}, 413, "too_many_items"),
        ("POST", "/v1/compare", {"pairs": [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 33},
         413, "too_many_items"),
        ("POST", "/v1/score", {"inputs": ["x" * 2001]}, 413, "text_too_long"),
        ("POST", "/get_reward", {"query": "not a list"}, 422, "invalid_request"),
        ("POST", "/get_reward", {"prompts": []}, 422, "invalid_request"),
        ("POST", "/v1/score", {"inputs": ["x"], "model": "nope"}, 404, "model_not_found"),
        ("POST", "/v1/score", {"inputs": ["x"], "model": "../../etc/passwd"}, 404,
         "model_not_found"),
        ("POST", "/v1/score", {"inputs": ["x"], "model": "tiny@7"}, 404, "model_not_found"),
        ("GET", "/v1/models/nope", None, 404, "model_not_found"),
    ],
)  # fmt: skip
def test_error_statuses_and_shape(server, method, path, body, status, code):
    response = httpx.request(method, server.url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


def test_malformed_json_and_wrong_content_type(server):
    broken = httpx.post(server.url + "/v1/score", content=b"{not json", timeout=30,
                        headers={"content-type": "application/json"})  # fmt: skip
    assert broken.status_code == 422 and error_of(broken)["code"] == "invalid_request"
    form = httpx.post(server.url + "/v1/score", content=b'{"inputs": ["x"]}', timeout=30,
                      headers={"content-type": "text/plain"})  # fmt: skip
    assert form.status_code == 422 and "Content-Type" in error_of(form)["message"]
    deep = httpx.post(server.url + "/v1/score", content=b"[" * 100_000, timeout=30,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= deep.status_code < 500


def test_body_over_limit_is_413_before_reading(server):
    huge = b'{"inputs": ["' + b"x" * (4 << 20) + b'"]}'
    response = httpx.post(server.url + "/v1/score", content=huge, timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 413 and error_of(response)["code"] == "body_too_large"

    def chunks():
        yield b'{"inputs": ["'
        for _ in range(80):
            yield b"x" * 65536
        yield b'"]}'

    chunked = httpx.post(server.url + "/v1/score", content=chunks(), timeout=30)
    assert chunked.status_code == 413


def test_concurrent_requests_each_get_their_own_scores(server, reference):
    """Many clients at once: batches mix their items, yet every answer is its own, in order."""
    rng = np.random.default_rng(0)
    words = ["lovely", "awful", "day", "trip", "song", "bright", "cruel", "kind", "the", "is"]
    requests = [
        [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(rng.integers(1, 9))]
        for _ in range(48)
    ]

    async def send_all() -> list[list[float]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/score", json={"inputs": texts}) for texts in requests)
            )
        return [r.json()["scores"] for r in responses]

    got = asyncio.run(send_all())
    for texts, scores in zip(requests, got, strict=True):
        np.testing.assert_allclose(scores, reference.score(texts), atol=1e-4)
    metrics = server.get("/metrics").text
    sizes = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "reward_batch_size"
        for s in f.samples
    }
    assert sizes["reward_batch_size_sum"] > sizes["reward_batch_size_count"]  # some batching


def test_metrics_parse_with_contract_names(server):
    server.post("/v1/score", {"inputs": ["count me"]})
    server.get("/no/such/route")
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    expected = {
        "reward_requests", "reward_request_duration_seconds", "reward_queue_wait_seconds",
        "reward_inference_seconds", "reward_batch_size", "reward_batch_padded_tokens",
        "reward_queue_depth", "reward_tokens_scored", "reward_rejected", "reward_model_info",
    }  # fmt: skip
    assert expected <= set(families)
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["reward_requests"].samples
        if s.name == "reward_requests_total"
    }
    assert requests[("/v1/score", "200")] >= 1 and requests[("unmatched", "404")] >= 1
    (info,) = families["reward_model_info"].samples
    assert info.labels["model"] == "tiny@1" and info.value == 1.0
    tokens = [s for s in families["reward_tokens_scored"].samples if s.name.endswith("_total")]
    assert tokens[0].value > 0
