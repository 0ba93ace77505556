"""OpenRLHF's own request function (openrlhf_remote_rm.py, their code) against a live server:
its default whole-rollout batch at default settings, a key carried in the URL, and queries
split back into the (prompt, response) pairs the reward model was trained on."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import requests
from openrlhf_remote_rm import remote_rm_fn, request_api_wrapper
from service_process import Server, running_server

from reward_service.scorer import LoadedModel
from reward_service.serve.chat import split_query

KEY = "openrlhf-key-0123456789abcdef"
SYSTEM = "You are a helpful assistant."


def chatml(turns: list[tuple[str, str]], generation_prompt: bool = True) -> str:
    """What Qwen's chat template renders (ChatML)."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def llama3(turns: list[tuple[str, str]]) -> str:
    """What Llama 3's chat template renders, generation prompt included."""
    body = "".join(
        f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
        for role, content in turns
    )
    return "<|begin_of_text|>" + body + "<|start_header_id|>assistant<|end_header_id|>\n\n"


PAIRS = [
    ("Tell me about the day.", "the day is wonderful and lovely."),
    ("Tell me about the day.", "the day is awful and gloomy."),
    ("Tell me about our trip.", "our trip is happy and bright."),
    ("Tell me about that song.", "that song is cruel and nasty."),
]


def rollout(render: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(queries, prompts, pairs) as OpenRLHF sends them: the prompt rendered by the policy's
    template, the query that prompt plus the response and its end-of-turn token, decoded."""
    queries, prompts = [], []
    for prompt, response in PAIRS:
        if render == "chatml":
            rendered = chatml([("system", SYSTEM), ("user", prompt)])
            query = rendered + response + "<|im_end|>"
        elif render == "llama3":
            rendered = llama3([("system", SYSTEM), ("user", prompt)])
            query = "<|begin_of_text|>" + rendered + response + "<|eot_id|>"  # BOS decoded twice
        else:
            rendered, query = prompt + " ", prompt + " " + response
        prompts.append(rendered)
        queries.append(query)
    return queries, prompts, PAIRS


@pytest.fixture(scope="module")
def reference(tiny_model_dir) -> LoadedModel:
    return LoadedModel.open(tiny_model_dir, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def keyed_server(tiny_model_repo, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("openrlhf-keys")
    keys = tmp / "keys"
    keys.write_text(f"# the trainers' key\n{KEY}\n")
    with running_server(tiny_model_repo, tmp, "--api-keys-file", str(keys)) as srv:
        yield srv


def with_credentials(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@") + "/get_reward"


def test_default_whole_rollout_at_default_settings(ort_server, reference):
    """OpenRLHF <= 0.9.0 posts rollout_batch_size (1024) x n_samples_per_prompt (1) queries in
    one request; the default settings take it."""
    queries, prompts, pairs = rollout("chatml")
    n = 1024
    reply = remote_rm_fn(
        ort_server.url + "/get_reward",
        queries=[queries[i % 4] for i in range(n)],
        prompts=[prompts[i % 4] for i in range(n)],
        labels=[""] * n,
    )
    assert len(reply["rewards"]) == n and reply["scores"] == reply["rewards"]
    expected = reference.score(pairs)
    np.testing.assert_allclose(reply["rewards"], [expected[i % 4] for i in range(n)], atol=1e-5)


@pytest.mark.parametrize("userinfo", [f"openrlhf:{KEY}", f"{KEY}:"])
def test_a_key_in_the_url_is_accepted(keyed_server, reference, userinfo):
    queries, prompts, pairs = rollout("chatml")
    url = with_credentials(keyed_server.url, userinfo)
    reply = remote_rm_fn(url, queries=queries, prompts=prompts, labels=[""] * 4)
    np.testing.assert_allclose(reply["rewards"], reference.score(pairs), atol=1e-5)


def test_without_the_key_openrlhf_is_refused(keyed_server):
    url = keyed_server.url + "/get_reward"
    assert requests.post(url, json={"query": ["x"]}, timeout=30).status_code == 401
    wrong = with_credentials(keyed_server.url, "openrlhf:not-the-key-0123456789")
    with pytest.raises(Exception, match="Request error for 1 times"):
        request_api_wrapper(wrong, {"query": ["x"]}, try_max_times=1)


@pytest.mark.parametrize("render", ["chatml", "llama3", "plain"])
def test_queries_are_split_and_scored_as_pairs(ort_server, reference, render):
    queries, prompts, pairs = rollout(render)
    reply = remote_rm_fn(
        ort_server.url + "/get_reward", queries=queries, prompts=prompts, labels=[""] * 4
    )
    np.testing.assert_allclose(reply["rewards"], reference.score(pairs), atol=1e-5)
    whole = remote_rm_fn(ort_server.url + "/get_reward", queries, None, None)
    assert not np.allclose(whole["rewards"], reply["rewards"], atol=1e-3)  # it did matter


def test_markup_named_in_the_url(ort_server, reference):
    queries, prompts, pairs = rollout("chatml")
    url = ort_server.url + "/get_reward?chat_markup=chatml"
    reply = remote_rm_fn(url, queries=queries, prompts=prompts, labels=[""] * 4)
    np.testing.assert_allclose(reply["rewards"], reference.score(pairs), atol=1e-5)
    off = remote_rm_fn(ort_server.url + "/get_reward?chat_markup=none", queries, prompts, None)
    assert not np.allclose(off["rewards"], reply["rewards"], atol=1e-3)


@pytest.mark.parametrize(
    ("query", "prompt", "expected"),
    [
        (chatml([("user", "Hi")]) + "Hello!<|im_end|><|endoftext|>", chatml([("user", "Hi")]),
         ("Hi", "Hello!")),
        (llama3([("user", "Hi")]) + "Hello!<|eot_id|>", llama3([("user", "Hi")]),
         ("Hi", "Hello!")),
        # decoding changed the prompt's text: cut at the last assistant turn instead
        (chatml([("user", "Hi  there")]) + "Hello!<|im_end|>", chatml([("user", "Hi there")]),
         ("Hi  there", "Hello!")),
        (chatml([("system", "Be kind."), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2")])
         + "A2<|im_end|>",
         chatml([("system", "Be kind."), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]),
         ("\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant:", "A2")),
        ("Question: why? Because.</s>", "Question: why?", ("Question: why?", "Because.")),
        ("no prompt inside", "something else", None),
    ],
)  # fmt: skip
def test_split_query(query, prompt, expected):
    assert split_query(query, prompt) == expected
