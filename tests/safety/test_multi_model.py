"""Several models in one /v1/score request equal separate calls: over HTTP and the client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from service_process import Server, running_server

from ppo_client.reward_client import RewardClient, RewardServiceError
from reward_service.scorer import LoadedModel
from reward_service.serve.registry import ServedModel
from reward_service.serve.scoring import tokenization_key

INPUTS = [
    {"prompt": "Say something about the sea.", "response": "the sea is lovely and bright."},
    {"prompt": "Say something about the sea.", "response": "the sea is stupid, you moron."},
    {"prompt": "Tell me about the day.", "response": "the day is " + "very " * 80 + "sad."},
    "a plain text is scored too",
]


@pytest.fixture(scope="module")
def server(safety_model_repo, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("multi")
    with running_server(
        safety_model_repo, tmp, "--backend", "onnxruntime", "--default-model", "tiny"
    ) as srv:
        yield srv


def test_each_result_equals_a_separate_call(server):
    body = {"inputs": INPUTS, "models": ["tiny-cost", "tiny@1"], "normalize": [False, True]}
    reply = server.post("/v1/score", body)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [(r["model"], r["version"]) for r in results] == [("tiny-cost", 1), ("tiny", 1)]
    for result, name, normalize in zip(results, ["tiny-cost", "tiny"], [False, True], strict=True):
        alone = server.post(
            "/v1/score", {"inputs": INPUTS, "model": name, "normalize": normalize}
        ).json()
        assert result["scores"] == alone["scores"]
        assert result["tokens"] == alone["tokens"] and result["truncated"] == alone["truncated"]
        assert result["normalized"] is normalize
    assert results[0]["scores"] != results[1]["scores"]
    assert any(results[0]["truncated"])  # the long input was cut, as it is alone


def test_one_normalize_flag_applies_to_every_model(server):
    body = {"inputs": INPUTS[:2], "models": ["tiny", "tiny-cost"], "normalize": True}
    results = server.post("/v1/score", body).json()["results"]
    assert [r["normalized"] for r in results] == [True, True]
    alone = server.post(
        "/v1/score", {"inputs": INPUTS[:2], "model": "tiny-cost", "normalize": True}
    ).json()
    assert results[1]["scores"] == alone["scores"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"models": ["tiny"], "model": "tiny"}, 422, "not both"),
        ({"models": ["tiny", "tiny"]}, 422, "names a model twice"),
        ({"models": []}, 422, "models"),
        ({"models": ["tiny"], "normalize": [True, False]}, 422, "2 normalize flags for 1 models"),
        ({"normalize": [True]}, 422, "needs a list of models"),
        ({"models": ["tiny", "nope"]}, 404, "nope"),
        ({"models": [f"m{i}" for i in range(9)]}, 422, "models"),
    ],
)
def test_bad_model_lists_are_clear_errors(server, body, status, message):
    reply = server.post("/v1/score", {"inputs": INPUTS[:1], **body})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error["message"] and error["code"]


def test_client_scores_several_models_like_separate_clients(server):
    prompts = [i["prompt"] for i in INPUTS[:3]]
    responses = [i["response"] for i in INPUTS[:3]]
    with RewardClient(server.url, chunk_size=2, normalize=True) as client:
        both = client.score_models(prompts, responses, ["tiny", "tiny-cost"], [True, False])
        with pytest.raises(ValueError, match="distinct"):
            client.score_models(prompts, responses, ["tiny", "tiny"])
        with pytest.raises(RewardServiceError, match="404"):
            client.score_models(prompts, responses, ["tiny", "missing"])
    with RewardClient(server.url, "tiny", normalize=True) as reward:
        assert both["tiny"] == reward.score(prompts, responses)
    with RewardClient(server.url, "tiny-cost") as cost:
        assert both["tiny-cost"] == cost.score(prompts, responses)
    assert list(both) == ["tiny", "tiny-cost"]


def test_models_from_one_backbone_share_one_tokenization(safety_model_repo):
    """Both fixtures were fine-tuned from one base: the same tokenizer file and template, so
    a request naming both encodes its items once. A changed template makes them differ."""

    def served(folder, name):
        return ServedModel(name, 1, model=LoadedModel.open(folder))

    reward = served(safety_model_repo / "tiny" / "1", "tiny")
    cost = served(safety_model_repo / "tiny-cost" / "1", "tiny-cost")
    assert tokenization_key(reward) == tokenization_key(cost)

    manifest = cost.model.manifest
    short = manifest.model_copy(
        update={"template": manifest.template.model_copy(update={"max_length": 16})}
    )
    other = ServedModel("short", 1, model=dataclasses.replace(cost.model, manifest=short))
    assert tokenization_key(other) != tokenization_key(cost)
