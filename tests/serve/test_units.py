"""Pure pieces of the service: batch planning, settings, auth helpers, the proto contract."""

from __future__ import annotations

import argparse
import base64
import itertools
from pathlib import Path

import numpy as np
import pytest

from reward_service import schemas
from reward_service.serve.auth import KeyFileError, key_matches, parse_keys, presented_key
from reward_service.serve.batcher import padded_tokens, plan_batches
from reward_service.serve.cli import add_arguments, settings_from
from reward_service.serve.guard import Refusals
from reward_service.serve.registry import backend_options, batch_limits, load_one
from reward_service.serve.settings import Settings

PROTO = Path(__file__).resolve().parents[2] / "proto"


def brute_force_cost(lengths: list[int], split_cost: int) -> float:
    """Every way to cut a sorted list into contiguous runs: the naive reference."""
    n = len(lengths)
    best = float("inf")
    for mask in itertools.product([False, True], repeat=n - 1):
        cuts = [0] + [i + 1 for i, cut in enumerate(mask) if cut] + [n]
        cost = sum(split_cost + (b - a) * lengths[b - 1] for a, b in itertools.pairwise(cuts))
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_plan_batches_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(4, 200, size=rng.integers(1, 11)))
    split_cost = int(rng.integers(0, 300))
    runs = plan_batches(lengths, split_cost)
    assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(runs))
    cost = len(runs) * split_cost + padded_tokens(lengths, runs)
    assert cost == pytest.approx(brute_force_cost(lengths.tolist(), split_cost))


def test_plan_batches_extremes():
    lengths = np.array([10, 10, 10, 500])
    assert plan_batches(lengths, 10**9) == [(0, 4)]  # runs are dear: one batch
    assert plan_batches(lengths, 0)[-1] == (3, 4)  # runs are free: the long item alone
    assert padded_tokens(lengths, plan_batches(lengths, 0)) == 530
    assert plan_batches(np.array([], dtype=np.int64), 64) == []


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("REWARD_SERVICE_PORT", "9001")
    monkeypatch.setenv("REWARD_SERVICE_MAX_ITEMS", "12")
    monkeypatch.setenv("REWARD_SERVICE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from(parser.parse_args(["--port", "9002", "--no-warmup"]))
    assert settings.port == 9002 and settings.max_items == 12 and settings.warmup is False
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert Settings().backend == "auto" and Settings().host == "127.0.0.1"


def test_every_setting_is_documented():
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_cuda_first_providers_fall_back_to_cpu_here(tiny_model_dir):
    """The provider list reaches ONNX Runtime; without a GPU the session lands on CPU."""
    settings = Settings(
        backend="onnxruntime",
        providers="CUDAExecutionProvider,CPUExecutionProvider",
        warmup=False,
        threads=1,
    )
    assert backend_options(settings)["providers"][0] == "CUDAExecutionProvider"
    served = load_one(tiny_model_dir, settings)
    assert served.available and served.model is not None
    assert served.model.backend.device == "CPUExecutionProvider"


def test_presented_key_bearer_and_basic():
    assert presented_key("Bearer abc") == b"abc" and presented_key("bearer  abc ") == b"abc"
    assert presented_key(None) is None and presented_key("Bearer ") is None
    assert presented_key("Digest abc") is None
    basic = base64.b64encode(b"openrlhf:the-key").decode()
    assert presented_key(f"Basic {basic}") == b"the-key"  # the key as password
    assert presented_key("Basic " + base64.b64encode(b"the-key:").decode()) == b"the-key"
    assert presented_key("Basic not*base64") is None
    assert presented_key("Basic " + base64.b64encode(b":").decode()) is None
    keys = (b"one", b"two")
    assert key_matches(b"two", keys) and not key_matches(b"tw", keys)


KEY = "k" * 16


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        (f"{KEY}\n", (KEY,)),
        (f"# operators\n\n  {KEY}  \n\t# indented comment\n{KEY}-2\n", (KEY, f"{KEY}-2")),
        (f"   #{KEY}\n{KEY}\n", (KEY,)),  # an indented '#' line is a comment, never a key
        (f"{KEY}\r\n", (KEY,)),
    ],
)
def test_key_file_comments_and_whitespace(text, keys):
    assert parse_keys(text, "keys") == tuple(k.encode() for k in keys)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n   # and another\n",
        f"{KEY} # trailing comment\n",  # a space inside: not a key
        "short\n",  # under 16 characters
        f"{KEY}\u00e9\n",  # not ASCII
        "x" * 513 + "\n",
    ],
)
def test_key_file_refuses_anything_else(text):
    with pytest.raises(KeyFileError) as caught:
        parse_keys(text, "keys")
    assert KEY not in str(caught.value)  # the message names the line, never its content


def test_proto_matches_the_code():
    """proto/ is generated; regenerate with `reward-service schemas` after changing the API."""
    assert schemas.stale(PROTO) == []


def test_every_setting_is_in_the_serving_docs():
    table = (PROTO.parent / "docs" / "serving.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in table, name


def test_batch_limits_follow_the_device():
    """Small batches where the device is a CPU, big ones on a GPU; the queue holds four."""
    for cpu in ("CPUExecutionProvider", "CPU"):  # ONNX Runtime, OpenVINO
        limits = batch_limits(Settings(), cpu)
        assert limits.max_batch_tokens == 512 and limits.max_queue_tokens == 4 * 512
    gpu = batch_limits(Settings(), "CUDAExecutionProvider")
    assert gpu.max_batch_tokens == 16384 and gpu.max_queue_tokens == 4 * 16384
    chosen = batch_limits(Settings(max_batch_tokens=4096, max_queue_tokens=0), "CPU")
    assert chosen.max_batch_tokens == 4096 and chosen.max_queue_tokens == 0
    assert chosen.max_queue_delay_s == 0


def test_settings_refuse_a_queue_smaller_than_a_request():
    with pytest.raises(ValueError, match="max_queue"):
        Settings(max_items=64, max_queue=32)
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        Settings(max_request_bytes=1 << 20, max_inflight_bytes=1 << 19)


def test_refusals_pause_only_a_connection_that_came_back_before_its_retry_after():
    refusals = Refusals()
    patient, eager = ("10.0.0.1", 4000), ("10.0.0.1", 4001)
    assert not refusals.came_back_early(eager)
    refusals.remember(eager, retry_after=60)
    refusals.remember(patient, retry_after=0)
    assert refusals.came_back_early(eager)
    assert not refusals.came_back_early(patient)
    assert not refusals.came_back_early(None)
    assert not refusals.came_back_early(eager), "each 429 is remembered once"
