"""Small helpers the serving tests share: metrics read off a live server, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

WAIT_LIMIT_S = 120.0  # a backstop for a condition that never comes, not a speed target


def metric_total(server, name: str) -> float:
    families = text_string_to_metric_families(server.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def queue_depth(server) -> float:
    return metric_total(server, "reward_queue_depth")


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` from async code; fail the test if it never holds."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.02)


SLOW_MODEL_FLAGS = ("--backend", "onnxruntime", "--max-batch-tokens", "64")
"""For ``slow@1``: ONNX Runtime, whose float32 products take the time the tests rely on, and a
small batch budget, so that its warm-up at the largest batch stays short."""
