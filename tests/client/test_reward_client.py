"""RewardClient against a real loopback HTTP server that misbehaves on purpose.

Backoff values are milliseconds here so the retry paths run in well under a second.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import subprocess
import sys
import time
from email.utils import formatdate

import pytest
from scripted_server import Drop, Late, Reply, ScriptedServer

from ppo_client.reward_client import (
    RewardClient,
    RewardServiceError,
    as_text,
    backoff_delay,
    chunked,
    parse_retry_after,
)

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def responses_of_lengths(n: int) -> tuple[list[str], list[str]]:
    """Inputs whose scripted score is their index: response i has i characters."""
    return [f"prompt {i}" for i in range(n)], ["x" * i for i in range(n)]


# -- pure helpers ------------------------------------------------------------------------------


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0.25 ", now) == 0.25
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after(formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    rng = random.Random(0)
    for attempt in range(8):
        delays = [backoff_delay(attempt, 0.5, 4.0, rng) for _ in range(200)]
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole interval rather than clustering at its top.
        assert min(delays) < 0.25 * ceiling < 0.75 * ceiling < max(delays)
    assert all(backoff_delay(0, 0.5, 4.0, rng, retry_after=2.0) == 2.0 for _ in range(50))
    assert backoff_delay(0, 0.5, 4.0, rng, retry_after=3600.0) == 4.0


def test_chunked_covers_every_index_once_in_order() -> None:
    for n, size in [(0, 3), (1, 3), (7, 3), (9, 3), (5, 64)]:
        chunks = chunked(n, size)
        assert [i for c in chunks for i in c] == list(range(n))
        assert all(0 < len(c) <= size for c in chunks)


def test_as_text_joins_conversational_messages() -> None:
    assert as_text("plain") == "plain"
    conversation = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "!"}],
        },
    ]
    assert as_text(conversation) == "Be brief.\nHi !"
    assert as_text({"role": "assistant", "content": "Hello"}) == "Hello"
    with pytest.raises(TypeError):
        as_text(3)


@pytest.mark.parametrize(
    "kwargs",
    [{"chunk_size": 0}, {"max_concurrency": 0}, {"max_retries": -1}, {"timeout": 0}],
)
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RewardClient("http://127.0.0.1:1", **kwargs)


# -- retries against a real server --------------------------------------------------------------


def test_429_retry_after_503_and_dropped_connection_then_success(make_server) -> None:
    server: ScriptedServer = make_server()
    server.script.extend(
        [Reply(429, {"error": {"code": "overloaded"}}, {"Retry-After": "0.3"}), Reply(503), Drop()]
    )
    prompts, responses = responses_of_lengths(3)
    # backoff_max caps Retry-After too, so it is set above the 0.3 s asked for.
    with RewardClient(server.url, max_retries=5, backoff_base=0.01, backoff_max=0.5) as client:
        assert client.score(prompts, responses) == [0.0, 1.0, 2.0]
    assert len(server.seen) == 4
    gaps = [b.at - a.at for a, b in zip(server.seen, server.seen[1:], strict=False)]
    # Retry-After is a floor: the client came back no sooner than the server asked...
    assert gaps[0] >= 0.3
    # ...while its own backoff (at most 20 and 40 ms here) was far shorter.
    assert max(gaps[1:]) < 0.3


def test_retry_after_as_http_date_is_honoured(make_server) -> None:
    server = make_server()
    server.script.append(
        Reply(503, headers={"Retry-After": formatdate(time.time() + 2, usegmt=True)})
    )
    with RewardClient(server.url, max_retries=1, backoff_base=0.01, backoff_max=5.0) as client:
        assert client.score(["p"], ["abc"]) == [3.0]
    # The date has one-second resolution, so the wait is at least one full second.
    assert server.seen[1].at - server.seen[0].at >= 0.9


def test_budget_exhausted_raises_with_last_status(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(503, {"error": {"code": "draining", "message": "bye"}})] * 10)
    with (
        RewardClient(server.url, max_retries=2, **FAST) as client,
        pytest.raises(RewardServiceError, match=r"after 3 attempts.*HTTP 503.*bye") as info,
    ):
        client.score(["p"], ["r"])
    assert info.value.status == 503
    assert len(server.seen) == 3


def test_dropped_connections_exhaust_the_budget(make_server) -> None:
    server = make_server()
    server.script.extend([Drop()] * 10)
    with (
        RewardClient(server.url, max_retries=3, **FAST) as client,
        pytest.raises(RewardServiceError, match="RemoteProtocolError") as info,
    ):
        client.score(["p"], ["r"])
    assert info.value.status is None
    assert len(server.seen) == 4


def test_timeout_is_retried_then_reported(make_server) -> None:
    server = make_server()
    server.script.extend([Late(1.0), Late(1.0)])
    with (
        RewardClient(server.url, timeout=0.2, max_retries=1, **FAST) as client,
        pytest.raises(RewardServiceError, match="ReadTimeout"),
    ):
        client.score(["p"], ["r"])
    assert len(server.seen) == 2


def test_client_error_fails_at_once_with_server_message(make_server) -> None:
    server = make_server()
    error = {"error": {"code": "model_not_found", "message": "no model named 'nope'"}}
    server.script.append(Reply(404, error))
    with (
        RewardClient(server.url, model="nope", max_retries=5, **FAST) as client,
        pytest.raises(RewardServiceError, match="no model named 'nope'") as info,
    ):
        client.score(["p"], ["r"])
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"scores": [1.0]},
        {"scores": [1.0, "high"]},
        {"scores": [1.0, float("inf")]},
        {"results": [1.0, 2.0]},
    ],
)
def test_a_200_without_one_finite_score_per_input_is_an_error(make_server, body) -> None:
    server = make_server()
    server.script.append(Reply(200, body))
    with RewardClient(server.url, **FAST) as client, pytest.raises(RewardServiceError):
        client.score(["a", "b"], ["r", "s"])


def test_request_carries_model_normalize_and_bearer_key(make_server) -> None:
    server = make_server()
    with RewardClient(server.url, model="tiny", api_key="s3cret", normalize=True) as client:
        client.score(["p"], ["r"])
    seen = server.seen[0]
    assert seen.path == "/v1/score"
    assert seen.headers["authorization"] == "Bearer s3cret"
    assert seen.body == {
        "model": "tiny",
        "normalize": True,
        "inputs": [{"prompt": "p", "response": "r"}],
    }


# -- replicas, chunking, concurrency ------------------------------------------------------------


def test_round_robin_spreads_chunks_over_replicas(make_server) -> None:
    a, b = make_server(), make_server()
    prompts, responses = responses_of_lengths(8)
    with RewardClient([a.url, b.url], chunk_size=2, max_concurrency=1) as client:
        assert client.score(prompts, responses) == [float(i) for i in range(8)]
    assert (len(a.seen), len(b.seen)) == (2, 2)


def test_dead_replica_is_skipped_and_the_live_one_answers(make_server, dead_url) -> None:
    live = make_server()
    prompts, responses = responses_of_lengths(12)
    # The backoff is huge on purpose: failing over must not wait for it.
    slow = {"backoff_base": 30.0, "backoff_max": 30.0}
    with RewardClient([dead_url, live.url], chunk_size=3, max_retries=2, **slow) as client:
        start = time.monotonic()
        assert client.score(prompts, responses) == [float(i) for i in range(12)]
        assert time.monotonic() - start < 5.0
    assert len(live.seen) == 4


def test_failing_replica_hands_the_retry_to_the_next_one(make_server) -> None:
    sick, healthy = make_server(), make_server()
    sick.script.extend([Reply(503)] * 10)
    with RewardClient([sick.url, healthy.url], max_retries=1, **FAST) as client:
        assert client.score(["p"], ["four"]) == [4.0]
    assert (len(sick.seen), len(healthy.seen)) == (1, 1)


def test_order_is_kept_across_chunks_answered_out_of_order(make_server) -> None:
    server = make_server()
    # Earlier chunks answer later, so completions arrive in reverse order.
    server.delay_for = lambda body: 0.02 * (40 - len(body["inputs"][0]["response"])) / 3
    prompts, responses = responses_of_lengths(40)
    with RewardClient(server.url, chunk_size=3, max_concurrency=4) as client:
        assert client.score(prompts, responses) == [float(i) for i in range(40)]
    assert len(server.seen) == 14
    assert server.max_in_flight == 4


def test_submit_returns_before_the_scores_and_calls_overlap(make_server) -> None:
    server = make_server()
    server.delay_for = lambda body: 0.4
    with RewardClient(server.url, chunk_size=4, max_concurrency=4) as client:
        start = time.monotonic()
        first = client.submit(["a"] * 4, ["x"] * 4)
        second = client.submit(["b"] * 4, ["yy"] * 4)
        assert not first.done() and not second.done()
        # The caller is free meanwhile (this is where the trainer generates the next chunk).
        assert second.result() == [2.0] * 4
        assert first.result() == [1.0] * 4
        elapsed = time.monotonic() - start
    assert server.max_in_flight == 2
    assert elapsed < 0.8


def test_ascore_from_another_event_loop(make_server) -> None:
    server = make_server()

    async def main() -> list[float]:
        async with RewardClient(server.url) as client:
            return await client.ascore(["p", "q"], ["a", "bcd"])

    assert asyncio.run(main()) == [1.0, 3.0]


def test_empty_batch_makes_no_request_and_closed_client_refuses(make_server) -> None:
    server = make_server()
    client = RewardClient(server.url)
    assert client.score([], []) == []
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.score(["p"], ["r"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        RewardClient(server.url).submit(["a", "b"], ["r"])
    assert server.seen == []


# -- as a TRL reward function -------------------------------------------------------------------


def test_trl_reward_function_signature(make_server) -> None:
    server = make_server()
    with RewardClient(server.url, model="tiny") as client:
        params = inspect.signature(client).parameters
        assert list(params)[:2] == ["prompts", "completions"]
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        assert client.__name__ == "reward_service_tiny"
        # GRPO passes keyword arguments, extra dataset columns included.
        rewards = client(
            prompts=["Tell me", "Say"],
            completions=["a joke", "hi"],
            completion_ids=[[1, 2], [3]],
            ground_truth=["x", "y"],
            trainer_state=None,
        )
    assert rewards == [6.0, 2.0]


def test_trl_conversational_prompts_and_completions(make_server) -> None:
    server = make_server()
    prompts = [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello?"}]]
    completions = [[{"role": "assistant", "content": "Hi there"}]]
    with RewardClient(server.url) as client:
        assert client(prompts=prompts, completions=completions) == [8.0]
    assert server.seen[0].body["inputs"] == [{"prompt": "Be kind.\nHello?", "response": "Hi there"}]


def test_module_imports_no_torch() -> None:
    code = "import sys, ppo_client.reward_client; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
