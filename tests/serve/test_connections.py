"""Clients that stall, leave, or are still waiting when the pod is told to stop, each against a
real server on raw sockets: nothing is held forever, and no answer is silently lost."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import SLOW_MODEL_FLAGS, metric_total, queue_depth, until


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=60)


RESET = b"<reset>"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout is a
    backstop for a server that never would). A server that closes a connection with unread
    request bytes makes the kernel send a reset, which can discard its answer on our side:
    that reads as ``RESET``."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks) or RESET
    return b"".join(chunks)


def test_slow_headers_are_cut_off_while_the_service_keeps_answering(launcher, tiny_model_repo,
                                                                    tmp_path):  # fmt: skip
    with launcher.running(
        tiny_model_repo, tmp_path, "--header-timeout-seconds", "1"
    ) as srv:  # fmt: skip
        stalled = [connect(srv) for _ in range(100)]
        for sock in stalled:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Le")
        dribbler = connect(srv)
        stop = threading.Event()

        def dribble() -> None:  # one byte at a time, never finishing the headers
            for byte in b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * 1000:
                if stop.is_set():
                    return
                try:
                    dribbler.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.1)

        thread = threading.Thread(target=dribble)
        thread.start()
        assert srv.get("/healthz").status_code == 200  # the loop is not blocked meanwhile
        assert srv.post("/v1/score", {"inputs": ["still served"]}).status_code == 200
        answers = [read_until_closed(sock) for sock in [*stalled, dribbler]]
        stop.set()
        thread.join()
        for sock in [*stalled, dribbler]:
            sock.close()
        # Every connection was closed; the server counted all 101 as header timeouts (below).
        assert all(a.startswith(b"HTTP/1.1 408") or a == RESET for a in answers)
        assert any(a.startswith(b"HTTP/1.1 408") for a in answers)
        timeouts = text_string_to_metric_families(srv.get("/metrics").text)
        closed = {
            s.labels["phase"]: s.value
            for f in timeouts
            for s in f.samples
            if s.name == "reward_timeouts_total"
        }
        assert closed["headers"] == 101


def test_a_slow_body_gets_408_and_a_closed_connection(launcher, tiny_model_repo, tmp_path):
    with launcher.running(tiny_model_repo, tmp_path, "--body-timeout-seconds", "1") as srv:
        sock = connect(srv)
        sock.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"inputs": ["only the first'
        )
        answer = read_until_closed(sock)
        sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert json.loads(body)["error"]["code"] == "request_timeout"
        chunked = connect(srv)  # a chunked body that stops arriving: the guard's own read
        chunked.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"inp\r\n'
        )
        assert read_until_closed(chunked).startswith(b"HTTP/1.1 408")
        chunked.close()
        assert srv.post("/v1/score", {"inputs": ["fine"]}).status_code == 200


def test_a_client_that_disconnects_has_its_queued_items_dropped(launcher, slow_repo, tmp_path):
    """A long request holds the model; a second one queues behind it and its client leaves: its
    items are never scored, and the first request is unaffected."""
    flags = (*SLOW_MODEL_FLAGS, "--max-queue-tokens", "0")
    with launcher.running(slow_repo, tmp_path, *flags) as srv:
        first = [f"first request item {i}" for i in range(30)]
        second = [f"second request item {i}" for i in range(20)]

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(base_url=srv.url, timeout=300) as client:
                holder = asyncio.create_task(client.post("/v1/score", json={"inputs": first}))
                await until(lambda: queue_depth(srv) >= 20, "the first request queued")
                sock = connect(srv)
                body = json.dumps({"inputs": second}).encode()
                sock.sendall(
                    b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body
                )
                await until(lambda: queue_depth(srv) >= 35, "both requests queued")
                sock.close()
                return await holder

        response = asyncio.run(scenario())
        assert response.status_code == 200 and len(response.json()["scores"]) == 30
        asyncio.run(until(lambda: queue_depth(srv) == 0, "the queue drained"))
        assert metric_total(srv, "reward_cancelled_items_total") == 20
        assert metric_total(srv, "reward_batch_size_sum") == 30


def test_sigterm_exits_within_drain_seconds_and_answers_everyone(launcher, slow_repo, tmp_path):
    """Work for minutes is queued when SIGTERM lands; the drain budget is 3 s. The process is
    gone soon after it (not after twice it), and every client got an answer: scores, or a 503
    to retry elsewhere, never a dropped connection."""
    flags = (*SLOW_MODEL_FLAGS, "--max-queue-tokens", "0", "--drain-seconds", "3")
    with launcher.running(slow_repo, tmp_path, *flags) as srv:

        async def scenario() -> tuple[list[int], float]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=limits) as client:
                tasks = [
                    asyncio.create_task(
                        client.post(
                            "/v1/score", json={"inputs": [f"item {i} {j}" for j in range(8)]}
                        )
                    )
                    for i in range(40)
                ]
                await until(lambda: queue_depth(srv) >= 200, "a backlog")
                srv.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                responses = await asyncio.gather(*tasks)
                srv.process.wait(timeout=60)
                exited = time.monotonic() - signalled
            return [r.status_code for r in responses], exited

        statuses, exited = asyncio.run(scenario())
        assert srv.process.returncode == 0
        assert set(statuses) <= {200, 503} and 503 in statuses
        # 3 s of drain, plus a shutdown bounded by one batch and a second of grace; the queued
        # work alone would take well over a minute.
        assert exited < 3 + 6, exited
        assert "drain deadline:" in srv.logs()
