"""Hostile input against a real server: every string field, every size that drives work, and
texts far beyond the model's max_length with the server's memory measured."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from reward_service.scorer import LoadedModel

BODIES = {
    "/v1/score": {
        "inputs": ["a plain text", {"prompt": "Tell me.", "response": "lovely"}],
        "model": "tiny",
        "normalize": False,
    },
    "/v1/compare": {
        "pairs": [{"prompt": "Tell me.", "chosen": "lovely", "rejected": "awful"}],
        "model": "tiny",
    },
    "/get_reward": {
        "query": ["Tell me. lovely"],
        "prompts": ["Tell me."],
        "labels": ["a label"],
        "model": "tiny",
        "metas": [{"note": "extra keys are accepted"}],
    },
}


def string_slots(value: object, path: tuple = ()) -> list[tuple]:
    """Every string value and every object key in a JSON document, by path (keys end in KEY)."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        slots = []
        for key, child in value.items():
            slots.append((*path, key, KEY))
            slots += string_slots(child, (*path, key))
        return slots
    if isinstance(value, list):
        return [s for i, child in enumerate(value) for s in string_slots(child, (*path, i))]
    return []


KEY = object()


def poisoned(body: dict, slot: tuple) -> bytes:
    """The body with one string (or key) given a lone surrogate, as a JSON client writes it."""
    body = copy.deepcopy(body)
    *parents, last = slot
    if last is KEY:
        *parents, key = parents
        node = body
        for p in parents:
            node = node[p]
        node["x\ud800" + key] = node.pop(key)
    else:
        node = body
        for p in parents:
            node = node[p]
        node[last] = node[last] + "\ud800"
    return json.dumps(body, ensure_ascii=True).encode()


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def post_raw(server, path: str, content: bytes, **kw) -> httpx.Response:
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=60, **kw)


@pytest.mark.parametrize("path", list(BODIES))
def test_a_lone_surrogate_in_any_string_is_a_clear_422(ort_server, path):
    assert ort_server.post(path, BODIES[path]).status_code == 200  # the clean body scores
    slots = string_slots(BODIES[path])
    assert len(slots) >= 5
    for slot in slots:
        response = post_raw(ort_server, path, poisoned(BODIES[path], slot))
        assert response.status_code == 422, (slot, response.text)
        error = error_of(response)
        assert error["code"] == "invalid_request" and "surrogate" in error["message"], slot
    assert "Traceback" not in ort_server.logs()


def test_unencodable_bytes_and_paths_are_4xx(ort_server):
    raw = b'{"inputs": ["\xed\xa0\x80 raw surrogate bytes", "\xff"]}'
    response = post_raw(ort_server, "/v1/score", raw)
    assert 400 <= response.status_code < 500 and error_of(response)
    path = httpx.get(ort_server.url + "/v1/models/%ED%A0%80", timeout=30)
    assert path.status_code == 404 and error_of(path)["code"] == "model_not_found"
    assert "Traceback" not in ort_server.logs()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/score", {"inputs": ["x"], "model": "m" * 200_000}, 422),
        ("/v1/score", {"inputs": ["x"], "k" * 200_000: 1}, 422),
        ("/v1/compare", {"pairs": [{"prompt": "p", "chosen": "c", "z" * 10**5: 1}]}, 422),
        ("/get_reward", {"query": ["x"], "prompts": ["x", "y" * 100_000]}, 422),
        ("/v1/score", {"inputs": [["nested"] * 50_000]}, 422),
        ("/v1/score", {"inputs": ["x" * 40_000]}, 413),
    ],
)  # fmt: skip
def test_errors_never_echo_what_was_sent(ort_server, path, body, status):
    response = ort_server.post(path, body)
    assert response.status_code == status, response.text[:300]
    assert len(response.content) < 1024 and error_of(response)


def test_long_names_in_the_url_are_not_echoed(ort_server):
    for url in ("/v1/models/" + "a" * 6000, "/get_reward?chat_markup=" + "z" * 6000):
        response = httpx.request(
            "GET" if "models" in url else "POST", ort_server.url + url, json={"query": []},
            timeout=30,
        )  # fmt: skip
        assert 400 <= response.status_code < 500 and len(response.content) < 1024


def tokens_scored(server) -> float:
    return sum(
        float(line.split()[-1])
        for line in server.get("/metrics").text.splitlines()
        if line.startswith("reward_tokens_scored_total{")
    )


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/score", {"inputs": ["x"] * 1025}, "too_many_items"),
        ("/v1/compare", {"pairs": [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 513},
         "too_many_items"),
        ("/get_reward", {"query": ["x"] * 1025}, "too_many_items"),
        ("/v1/score", {"inputs": [{"prompt": "p" * 32769, "response": "r"}]}, "text_too_long"),
        ("/get_reward", {"query": ["q"], "prompts": ["p" * 32769]}, "text_too_long"),
        ("/get_reward", {"query": ["q", "r"], "prompts": ["p"]}, "invalid_request"),
    ],
)  # fmt: skip
def test_work_is_refused_before_tokenization(ort_server, path, body, code):
    """Item counts, text lengths, prompt counts: refused at default settings, nothing scored."""
    before = tokens_scored(ort_server)
    response = ort_server.post(path, body)
    assert response.status_code in (413, 422) and error_of(response)["code"] == code
    assert tokens_scored(ort_server) == before


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


def test_texts_far_beyond_max_length_keep_memory_bounded(launcher, tiny_model_repo, tmp_path):
    """Four concurrent 4 MB requests of 16,000-character texts, all admitted (the latency
    bound, on by default, would refuse some): only what the model can use is tokenized, so the
    peak RSS grows by little more than the bodies."""
    texts = [" ".join(f"w{(i * 7 + j) % 997}" for j in range(3200))[:16000] for i in range(256)]
    body = json.dumps({"inputs": texts}).encode()
    assert 4_000_000 < len(body) < 4 << 20
    flags = ("--backend", "onnxruntime", "--max-queue-tokens", "0")
    with launcher.running(tiny_model_repo, tmp_path, *flags) as srv:
        srv.post("/v1/score", {"inputs": texts[:4]})
        before = rss_mib(srv.process.pid, "VmHWM")

        async def four() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=300) as client:
                return await asyncio.gather(*(
                    client.post(srv.url + "/v1/score", content=body,
                                headers={"content-type": "application/json"})
                    for _ in range(4)
                ))  # fmt: skip

        responses = asyncio.run(four())
        growth = rss_mib(srv.process.pid, "VmHWM") - before
    for response in responses:
        assert response.status_code == 200, response.text[:300]
        assert response.json()["truncated"] == [True] * 256
        assert response.json()["tokens"] == [64] * 256
    # Four 4 MB bodies are 16 MB; whole-text tokenization grew the RSS by ~600 MB here.
    print(f"peak RSS growth: {growth:.0f} MiB")
    assert growth < 200


def test_truncation_sides_hold_for_texts_cut_before_tokenizing(ort_server, tiny_model_dir):
    """Only the end of a long text and of a long prompt, and the start of a long response, are
    seen: the score equals that of the short text made of the kept words alone."""
    model = LoadedModel.open(tiny_model_dir, backend="onnxruntime", threads=1)
    lovely, awful = " lovely" * 80, " awful" * 80
    long_text = "awful " * 4000 + lovely
    prompt, response = "gloomy " * 4000 + "Tell me about the day.", lovely + awful * 50
    body = ort_server.post(
        "/v1/score", {"inputs": [long_text, {"prompt": prompt, "response": response}]}
    ).json()
    assert body["truncated"] == [True, True]
    expected = model.score([lovely, ("gloomy " * 40 + "Tell me about the day.", lovely)])
    np.testing.assert_allclose(body["scores"], expected, atol=1e-5)
