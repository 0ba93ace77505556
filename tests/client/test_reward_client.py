"""RewardClient against a real loopback HTTP server that misbehaves on purpose.

Backoff values are milliseconds here and retry budgets a second or less, so the retry paths run
quickly; the CLI run across a real service restart is in test_outage.py.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import inspect
import logging
import multiprocessing
import random
import subprocess
import sys
import time
from email.utils import formatdate

import pytest
from scripted_server import Drop, Late, Raw, Reply, ScriptedServer

from ppo_client import reward_client
from ppo_client.reward_client import (
    SERVER_ERROR_RETRIES,
    RewardClient,
    RewardServiceError,
    as_text,
    backoff_delay,
    checked_texts,
    chunked,
    format_duration,
    parse_retry_after,
    redact_url,
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


def test_format_duration_reads_like_a_person_would_write_it() -> None:
    assert format_duration(0.04) == "0.0 s"
    assert format_duration(4.25) == "4.2 s"
    assert format_duration(45.4) == "45 s"
    assert format_duration(300) == "5 min"
    assert format_duration(150.2) == "2 min 30 s"


def test_redact_url_hides_a_password_and_nothing_else() -> None:
    assert redact_url("http://rm:8000") == "http://rm:8000"
    assert redact_url("http://user:k3y@rm:8000/x") == "http://user:***@rm:8000/x"
    assert redact_url("https://user:k3y@[::1]/") == "https://user:***@[::1]/"


def test_checked_texts_names_the_bad_input() -> None:
    assert checked_texts("prompts", ("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match=r"responses\[1\] is NoneType"):
        checked_texts("responses", ["ok", None])
    with pytest.raises(ValueError, match=r"prompts\[0\] cannot be sent as UTF-8"):
        checked_texts("prompts", ["lone \ud800 surrogate"])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("http://127.0.0.1:1",), {"chunk_size": 0}, "chunk_size"),
        (("http://127.0.0.1:1",), {"max_concurrency": 0}, "max_concurrency"),
        (("http://127.0.0.1:1",), {"retry_budget": -1}, "retry_budget"),
        (("http://127.0.0.1:1",), {"retry_budget": float("inf")}, "retry_budget"),
        (("http://127.0.0.1:1",), {"backoff_max": float("nan")}, "backoff_max"),
        (("http://127.0.0.1:1",), {"timeout": 0}, "timeout"),
        (("http://127.0.0.1:1",), {"api_key": "two words"}, "api_key"),
        (("http://127.0.0.1:1",), {"api_key": "line\nbreak"}, "api_key"),
        (("127.0.0.1:8000",), {}, "must look like http://host:port"),
        (("ftp://rm:21",), {}, "must look like http://host:port"),
        (("http://rm:8000/get_reward",), {}, "base URL"),
        (([],), {}, "at least one"),
    ],
)
def test_invalid_settings_are_refused_at_construction(args, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RewardClient(*args, **kwargs)


def test_a_key_in_the_url_never_reaches_an_error_message() -> None:
    with pytest.raises(ValueError) as info:
        RewardClient("ftp://user:s3cret@rm:21")
    assert "s3cret" not in str(info.value)


# -- retries against a real server --------------------------------------------------------------


def test_429_retry_after_503_and_dropped_connection_then_success(make_server) -> None:
    server: ScriptedServer = make_server()
    server.script.extend(
        [Reply(429, {"error": {"code": "overloaded"}}, {"Retry-After": "0.3"}), Reply(503), Drop()]
    )
    prompts, responses = responses_of_lengths(3)
    # backoff_max caps Retry-After too, so it is set above the 0.3 s asked for.
    with RewardClient(server.url, retry_budget=10, backoff_base=0.01, backoff_max=0.5) as client:
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
    with RewardClient(server.url, retry_budget=10, backoff_base=0.01, backoff_max=5.0) as client:
        assert client.score(["p"], ["abc"]) == [3.0]
    # The date has one-second resolution, so the wait is at least one full second.
    assert server.seen[1].at - server.seen[0].at >= 0.9


def test_an_outage_shorter_than_the_budget_is_waited_out(make_server) -> None:
    """The budget is a duration: 40 failures in a row are fine if they fit in it."""
    server = make_server()
    server.script.extend([Reply(503, {"error": {"code": "not_ready"}})] * 40)
    with RewardClient(server.url, retry_budget=30, backoff_base=0.005, backoff_max=0.02) as client:
        assert client.score(["p"], ["four"]) == [4.0]
    assert len(server.seen) == 41


def test_budget_exhausted_raises_with_last_status(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(503, {"error": {"code": "draining", "message": "bye"}})] * 1000)
    start = time.monotonic()
    with (
        RewardClient(server.url, retry_budget=0.4, **FAST) as client,
        pytest.raises(
            RewardServiceError, match=r"retry budget of 0.4 s; last: HTTP 503.*bye"
        ) as info,
    ):
        client.score(["p"], ["r"])
    elapsed = time.monotonic() - start
    assert info.value.status == 503
    assert elapsed >= 0.4
    attempts = len(server.seen)
    assert attempts >= 3
    assert f"({attempts} attempts)" in str(info.value)


def test_zero_budget_means_no_retry(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(503)] * 10)
    with RewardClient(server.url, retry_budget=0) as client, pytest.raises(RewardServiceError):
        client.score(["p"], ["r"])
    assert len(server.seen) == 1


def test_dropped_connections_exhaust_the_budget(make_server) -> None:
    server = make_server()
    server.script.extend([Drop()] * 1000)
    with (
        RewardClient(server.url, retry_budget=0.3, **FAST) as client,
        pytest.raises(RewardServiceError, match="RemoteProtocolError") as info,
    ):
        client.score(["p"], ["r"])
    assert info.value.status is None
    assert len(server.seen) >= 2


def test_timeout_is_retried_then_reported(make_server) -> None:
    server = make_server()
    server.script.extend([Late(1.0), Late(1.0), Late(1.0)])
    with (
        RewardClient(server.url, timeout=0.2, retry_budget=0.3, **FAST) as client,
        pytest.raises(RewardServiceError, match="ReadTimeout"),
    ):
        client.score(["p"], ["r"])
    assert len(server.seen) >= 2


def test_retry_after_beyond_the_budget_does_not_overstay_it(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(429, headers={"Retry-After": "60"})] * 10)
    start = time.monotonic()
    with (
        RewardClient(server.url, retry_budget=0.5, backoff_max=60) as client,
        pytest.raises(RewardServiceError, match="HTTP 429"),
    ):
        client.score(["p"], ["r"])
    # One wait, cut to the budget, one last try, then the error: not the minute asked for.
    assert time.monotonic() - start < 30
    assert len(server.seen) == 2


def test_server_errors_get_a_few_retries_not_the_whole_budget(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(500, {"error": {"code": "internal", "message": "bug"}})] * 10)
    with (
        RewardClient(server.url, retry_budget=300, **FAST) as client,
        pytest.raises(RewardServiceError, match=r"HTTP 500.*bug") as info,
    ):
        client.score(["p"], ["r"])
    assert info.value.status == 500
    assert len(server.seen) == SERVER_ERROR_RETRIES + 1


def test_a_server_error_that_passes_on_retry_is_absorbed(make_server) -> None:
    server = make_server()
    server.script.append(Reply(500))
    with RewardClient(server.url, **FAST) as client:
        assert client.score(["p"], ["abc"]) == [3.0]
    assert len(server.seen) == 2


def test_one_log_line_per_outage_not_per_attempt(make_server, caplog, monkeypatch) -> None:
    server = make_server()
    caplog.set_level(logging.INFO, logger="ppo_client.reward_client")
    monkeypatch.setattr(reward_client, "OUTAGE_LOG_AFTER_S", 0.0)
    with RewardClient(server.url, retry_budget=30, backoff_base=0.005, backoff_max=0.02) as client:
        for _ in range(2):  # two separate outages
            server.script.extend([Reply(503)] * 15 + [Drop()] * 15)
            assert client.score(["p"], ["ab"]) == [2.0]
        assert client.score(["p"], ["abc"]) == [3.0]  # no outage, no line
    lines = [r.getMessage() for r in caplog.records if r.name == "ppo_client.reward_client"]
    assert len(lines) == 4, lines
    assert all("reward service unavailable for 0.0 s (HTTP 503" in line for line in lines[::2])
    assert all("up to 30 s" in line for line in lines[::2])
    assert all("answering again" in line and "30 failed attempts" in line for line in lines[1::2])


def test_a_brief_blip_of_backpressure_logs_nothing(make_server, caplog) -> None:
    server = make_server()
    caplog.set_level(logging.INFO, logger="ppo_client.reward_client")
    server.script.extend([Reply(429, headers={"Retry-After": "0.01"})] * 3)
    with RewardClient(server.url, backoff_base=0.005, backoff_max=0.02) as client:
        assert client.score(["p"], ["ab"]) == [2.0]
    assert len(server.seen) == 4
    assert [r for r in caplog.records if r.name == "ppo_client.reward_client"] == []


def test_oversized_chunk_is_split_until_the_service_takes_it(make_server) -> None:
    server = make_server()
    server.max_items = 3
    prompts, responses = responses_of_lengths(10)
    with RewardClient(server.url, chunk_size=10) as client:
        assert client.score(prompts, responses) == [float(i) for i in range(10)]
    sizes = [len(seen.body["inputs"]) for seen in server.seen]
    assert sizes[0] == 10 and max(sizes[1:]) <= 5
    assert sum(size for size in sizes if size <= 3) == 10


def test_one_input_too_large_for_the_service_is_a_clear_error(make_server) -> None:
    server = make_server()
    server.script.append(Reply(413, {"error": {"code": "too_long", "message": "text too long"}}))
    with (
        RewardClient(server.url) as client,
        pytest.raises(RewardServiceError, match=r"single input as too large.*text too long"),
    ):
        client.score(["p"], ["r"])
    assert len(server.seen) == 1


def test_client_error_fails_at_once_with_server_message(make_server) -> None:
    server = make_server()
    error = {"error": {"code": "model_not_found", "message": "no model named 'nope'"}}
    server.script.append(Reply(404, error))
    with (
        RewardClient(server.url, model="nope", **FAST) as client,
        pytest.raises(RewardServiceError, match="no model named 'nope'") as info,
    ):
        client.score(["p"], ["r"])
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, {"scores": [1.0]}), "1 scores for 2 inputs"),
        (Reply(200, {"scores": [1.0, 2.0, 3.0]}), "3 scores for 2 inputs"),
        (Reply(200, {"scores": [1.0, "high"]}), "'high' as the score of input 1"),
        (Reply(200, {"scores": [None, 1.0]}), "None as the score of input 0.*NaN or infinity"),
        (Reply(200, {"scores": [1.0, True]}), "True as the score"),
        (Reply(200, {"scores": {"a": 1}}), "dict scores"),
        (Reply(200, {"results": [1.0, 2.0]}), "without a 'scores' list"),
        (Raw(200, b'{"scores": [1.0, NaN]}'), "nan as the score of input 1"),
        (Raw(200, b'{"scores": [1e999, 1.0]}'), "inf as the score"),
        (Raw(200, b'{"scores": [1' + b"0" * 400 + b", 1.0]}"), "as the score of input 0"),
        (Raw(200, b"<html>upstream says hi</html>"), "without a 'scores' list.*upstream"),
        (Raw(200, b"\xff\xfe not utf-8"), "without a 'scores' list"),
        (Raw(200, b"[1.0, 2.0]"), "without a 'scores' list"),
    ],
)
def test_a_200_without_one_finite_score_per_input_is_an_error(make_server, reply, message) -> None:
    server = make_server()
    server.script.append(reply)
    with (
        RewardClient(server.url, **FAST) as client,
        pytest.raises(RewardServiceError, match=message) as info,
    ):
        client.score(["a", "b"], ["r", "s"])
    assert info.value.status == 200
    assert len(server.seen) == 1  # a broken answer is not retried into a different one


def test_non_json_error_bodies_are_reported_as_text(make_server) -> None:
    server = make_server()
    server.script.extend(
        [Raw(401, b"<html>401 Authorization Required</html>"), Reply(403, {"error": "nope"})]
    )
    with RewardClient(server.url, **FAST) as client:
        with pytest.raises(RewardServiceError, match=r"HTTP 401.*Authorization Required"):
            client.score(["p"], ["r"])
        with pytest.raises(RewardServiceError, match=r"HTTP 403 .*: nope") as info:
            client.score(["p"], ["r"])
    assert info.value.code is None


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


def test_credentials_in_the_url_go_as_basic_auth_and_stay_out_of_errors(make_server) -> None:
    server = make_server()
    url = server.url.replace("http://", "http://trainer:s3cret@")
    server.script.append(Reply(401, {"error": {"code": "unauthorized", "message": "bad key"}}))
    with RewardClient(url) as client:
        with pytest.raises(RewardServiceError) as info:
            client.score(["p"], ["r"])
        assert "s3cret" not in str(info.value) and "trainer:***@" in str(info.value)
        assert client.score(["p"], ["r"]) == [1.0]
    expected = "Basic " + base64.b64encode(b"trainer:s3cret").decode()
    assert server.seen[-1].headers["authorization"] == expected


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
    with RewardClient([dead_url, live.url], chunk_size=3, **slow) as client:
        start = time.monotonic()
        assert client.score(prompts, responses) == [float(i) for i in range(12)]
        assert time.monotonic() - start < 5.0
    assert len(live.seen) == 4


def test_a_replica_going_and_coming_back_logs_one_line_each_way(
    make_server, dead_url, caplog, monkeypatch
) -> None:
    live = make_server()
    caplog.set_level(logging.INFO, logger="ppo_client.reward_client")
    monkeypatch.setattr(reward_client, "REPLICA_COOLDOWN_S", 0.0)  # try the dead one every time
    port = int(dead_url.rsplit(":", 1)[1])
    with RewardClient([dead_url, live.url], chunk_size=1, max_concurrency=1) as client:
        prompts, responses = responses_of_lengths(6)
        assert client.score(prompts, responses) == [float(i) for i in range(6)]
        revived = ScriptedServer().start(port=port)
        try:
            assert client.score(prompts, responses) == [float(i) for i in range(6)]
        finally:
            revived.stop()
    assert len(live.seen) >= 6 and len(revived.seen) >= 1
    lines = [r.getMessage() for r in caplog.records if r.name == "ppo_client.reward_client"]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"reward service replica {dead_url} is unreachable")
    assert lines[1] == f"reward service replica {dead_url} is answering again"


def test_failing_replica_hands_the_retry_to_the_next_one(make_server) -> None:
    sick, healthy = make_server(), make_server()
    sick.script.extend([Reply(503)] * 10)
    with RewardClient([sick.url, healthy.url], **FAST) as client:
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


def test_service_that_appears_after_the_first_call_is_waited_for(dead_url) -> None:
    """A job that starts before its reward service (both deployed at once) waits, not fails."""
    port = int(dead_url.rsplit(":", 1)[1])
    with RewardClient(dead_url, backoff_base=0.05, backoff_max=0.2) as client:
        future = client.submit(["p"], ["abcd"])
        time.sleep(0.5)
        assert not future.done()
        late = ScriptedServer().start(port=port)
        try:
            assert future.result(timeout=30) == [4.0]
        finally:
            late.stop()


def test_a_name_that_does_not_resolve_is_reported_by_name() -> None:
    """RFC 6761: ``.invalid`` never resolves. Retried like any unreachable service (a k8s Service
    name may resolve only once its pods exist), then reported with the resolver's words."""
    with (
        RewardClient("http://reward.invalid:8000", retry_budget=0) as client,
        pytest.raises(RewardServiceError, match=r"Connect\w+ from http://reward.invalid:8000"),
    ):
        client.score(["p"], ["r"])


def test_many_threads_share_one_client(make_server) -> None:
    server = make_server()
    server.delay_for = lambda body: 0.01
    with RewardClient(server.url, chunk_size=3, max_concurrency=3) as client:

        def call(i: int) -> list[float]:
            return client.score([f"p{i}"] * 5, ["x" * (i + k) for k in range(5)])

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(48)))
    assert results == [[float(i + k) for k in range(5)] for i in range(48)]
    assert server.max_in_flight <= 3
    assert len(server.seen) == 48 * 2


# -- lifecycle: cancellation, shutdown, other event loops, fork ----------------------------------


def test_cancelling_a_submitted_call_stops_its_retries(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(503)] * 10_000)
    with RewardClient(server.url, retry_budget=300, backoff_base=0.01, backoff_max=0.02) as client:
        future = client.submit(["p"], ["r"])
        while len(server.seen) < 3:
            time.sleep(0.01)
        assert future.cancel()
        time.sleep(0.1)
        seen = len(server.seen)
        time.sleep(0.3)
        assert len(server.seen) == seen
        server.script.clear()
        assert client.score(["p"], ["ok"]) == [2.0]  # the client itself carries on
    assert future.cancelled()


def test_cancelling_an_awaited_ascore_cancels_the_requests(make_server) -> None:
    server = make_server()
    server.script.extend([Reply(503)] * 10_000)

    async def main() -> None:
        async with RewardClient(server.url, backoff_base=0.01, backoff_max=0.02) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.ascore(["p"], ["r"]), timeout=0.3)
            seen = len(server.seen)
            await asyncio.sleep(0.3)
            assert len(server.seen) <= seen + 1

    asyncio.run(main())


def test_score_works_from_inside_a_running_event_loop(make_server) -> None:
    """A blocking reward function called from async code, and TRL's async GRPO way of calling a
    sync reward function (``asyncio.to_thread``), both reach the client's own loop."""
    server = make_server()

    async def main(client: RewardClient) -> tuple[list[float], list[float]]:
        inline = client.score(["p"], ["ab"])
        threaded = await asyncio.to_thread(client, prompts=["p"], completions=["abc"], prompt="p")
        return inline, threaded

    with RewardClient(server.url) as client:
        assert asyncio.run(main(client)) == ([2.0], [3.0])


SHUTDOWN_SCRIPT = """
import sys, time
from ppo_client.reward_client import RewardClient
client = RewardClient(sys.argv[1], chunk_size=1, max_concurrency=2)
futures = [client.submit(["p"] * 3, ["r"] * 3) for _ in range(2)]
time.sleep(0.5)
if sys.argv[2] == "close":
    client.close()
    assert all(f.cancelled() for f in futures)
print("exiting", flush=True)
"""


@pytest.mark.parametrize("how", ["close", "exit-without-close"])
def test_shutdown_with_requests_in_flight_is_clean(make_server, how) -> None:
    """The bug of a stopped PPO run: requests still running when the client goes away must be
    cancelled and their connections closed, with no "Task was destroyed" on stderr."""
    server = make_server()
    server.delay_for = lambda body: 3600.0  # the process must not wait for these answers
    proc = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_SCRIPT, server.url, how],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "exiting\n"
    assert proc.stderr == ""
    assert server.max_in_flight == 2
    deadline = time.monotonic() + 10
    while server.hung_up < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.hung_up == 2  # the server saw both connections close


def score_in_fork_child(client: RewardClient, results: multiprocessing.Queue) -> None:
    results.put(client.score(["p"], ["forked"]))
    client.close()


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_a_forked_child_gets_its_own_loop(make_server) -> None:
    server = make_server()
    with RewardClient(server.url) as client:
        assert client.score(["p"], ["parent"]) == [6.0]  # the parent's loop is running now
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=score_in_fork_child, args=(client, results))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert results.get(timeout=5) == [6.0]
        assert client.score(["p"], ["parent again"]) == [12.0]  # the parent's loop is intact


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
