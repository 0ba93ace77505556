"""RewardClient against the real ``reward-service serve`` on the tiny exported model."""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import operator
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from service_process import running_server

from ppo_client.reward_client import RewardClient, RewardServiceError
from reward_service.scorer import LoadedModel


@pytest.fixture(scope="module")
def service_url(tiny_model_repo: Path, tmp_path_factory) -> Iterator[str]:
    # fp32 ONNX Runtime, as LoadedModel.open uses below: scores comparable to 1e-4.
    tmp = tmp_path_factory.mktemp("client-service")
    with running_server(tiny_model_repo, tmp, "--backend", "onnxruntime") as server:
        yield server.url


def texts(n: int) -> tuple[list[str], list[str]]:
    moods = ["wonderful and kind", "terrible and cruel", "bright", "gloomy and bitter", "lovely"]
    prompts = [f"Tell me about day {i}." for i in range(n)]
    responses = [f"Day {i} is {moods[i % len(moods)]}." for i in range(n)]
    return prompts, responses


def test_scores_match_the_model_in_process_across_chunks(service_url, tiny_model_dir) -> None:
    prompts, responses = texts(37)
    with RewardClient(service_url, chunk_size=5, max_concurrency=3) as client:
        served = client.score(prompts, responses)
    with RewardClient(service_url, normalize=True) as client:
        normalized = client.score(prompts, responses)
    local = LoadedModel.open(tiny_model_dir)
    expected = local.score(list(zip(prompts, responses, strict=True)))
    np.testing.assert_allclose(served, expected, atol=1e-4)
    np.testing.assert_allclose(normalized, local.normalize(expected), atol=1e-4)
    # The trained model tells the moods apart, so a mix-up of the order would show.
    assert np.std(served) > 1e-3


def test_trl_callable_against_the_service(service_url) -> None:
    prompts, responses = texts(4)
    with RewardClient(service_url, model="tiny") as client:
        conversational = client(
            prompts=[[{"role": "user", "content": p}] for p in prompts],
            completions=[[{"role": "assistant", "content": r}] for r in responses],
        )
        assert conversational == client.score(prompts, responses)


def test_service_errors_surface_as_reward_service_errors(service_url) -> None:
    client = RewardClient(service_url, model="no-such-model")
    with client, pytest.raises(RewardServiceError) as info:
        client.score(["p"], ["r"])
    assert info.value.status == 404
    assert "no-such-model" in str(info.value)


def test_pickled_client_scores_from_a_spawned_process(service_url) -> None:
    """TRL's async GRPO pickles its reward functions into a spawned worker process, after the
    trainer may already have used them: the copy must open its own loop and connections."""
    prompts, responses = texts(6)
    with RewardClient(service_url, model="tiny", chunk_size=4) as client:
        expected = client.score(prompts, responses)  # its loop, thread and pool exist now
        as_trl_calls = operator.methodcaller(
            "__call__", prompts=prompts, completions=responses, prompt=prompts[0]
        )
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            in_child = pool.submit(as_trl_calls, client).result(timeout=300)
    assert in_child == expected
    # A copy carries the settings, not the state: even a closed client's copy is a working one.
    revived = pickle.loads(pickle.dumps(client))
    twin = copy.deepcopy(revived)
    with revived, twin:
        assert (revived.model, revived.chunk_size, revived.__name__) == ("tiny", 4, client.__name__)
        assert revived.score(prompts, responses) == expected
        assert twin.score(prompts, responses) == expected
