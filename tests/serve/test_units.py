"""Pure pieces of the service: batch planning, settings, auth helpers, the proto contract."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pytest

from reward_service import schemas
from reward_service.serve.auth import bearer_token, key_matches
from reward_service.serve.batcher import padded_tokens, plan_batches
from reward_service.serve.cli import add_arguments, settings_from
from reward_service.serve.registry import backend_options, load_one
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


def test_bearer_parsing_and_constant_time_match():
    assert bearer_token("Bearer abc") == b"abc" and bearer_token("bearer  abc ") == b"abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None
    assert bearer_token("Bearer ") is None
    keys = (b"one", b"two")
    assert key_matches(b"two", keys) and not key_matches(b"tw", keys)


def test_proto_matches_the_code():
    """proto/ is generated; regenerate with `reward-service schemas` after changing the API."""
    assert schemas.stale(PROTO) == []


def test_every_setting_is_in_the_serving_docs():
    table = (PROTO.parent / "docs" / "serving.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in table, name
