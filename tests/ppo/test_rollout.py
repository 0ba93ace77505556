"""Rollout plumbing: padding, positions, temperature, truncation after the stop token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ppo_client.models import PolicyWithValueHead
from ppo_client.rollout import (
    decode_responses,
    encode_prompts,
    gather_logprobs,
    position_ids_from_mask,
    response_logits,
    sample,
    truncate_after_stop,
)


@pytest.fixture(scope="module")
def lm_and_tok(tiny_policy: Path):
    lm = AutoModelForCausalLM.from_pretrained(tiny_policy).eval()
    return lm, AutoTokenizer.from_pretrained(tiny_policy)


def test_tokenizer_has_pad_distinct_from_eos_and_round_trips(lm_and_tok) -> None:
    _, tok = lm_and_tok
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    text = "Hello,  World!  ünïcode ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_position_ids_ignore_left_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_left_padding_does_not_change_response_logprobs(lm_and_tok) -> None:
    """The same prompt alone and padded in a batch with a longer one gives the same logprobs."""
    lm, tok = lm_and_tok
    short, long = "the day", "the night is cold and cruel , a storm"
    query, qmask = encode_prompts(tok, [short, long], max_tokens=32)
    assert qmask[0, 0] == 0 and qmask[1].all()  # the short prompt is left-padded
    alone, amask = encode_prompts(tok, [short], max_tokens=32)
    response = torch.tensor([tok(" is kind", add_special_tokens=False)["input_ids"]] * 2)
    rmask = torch.ones_like(response)
    batch_lp = gather_logprobs(response_logits(lm, query, qmask, response, rmask, 0.7)[0], response)
    alone_lp = gather_logprobs(
        response_logits(lm, alone, amask, response[:1], rmask[:1], 0.7)[0], response[:1]
    )
    torch.testing.assert_close(batch_lp[0], alone_lp[0], atol=1e-5, rtol=1e-5)


def test_long_prompts_keep_their_last_tokens(lm_and_tok) -> None:
    _, tok = lm_and_tok
    query, mask = encode_prompts(tok, ["a b c d e f g h i j k l m n o p"], max_tokens=4)
    assert query.shape == (1, 4) and mask.all()
    assert tok.decode(query[0]).endswith("p")


def test_temperature_is_applied_in_the_training_forward(lm_and_tok) -> None:
    lm, tok = lm_and_tok
    query, qmask = encode_prompts(tok, ["the day"], max_tokens=8)
    response = torch.tensor([tok(" is", add_special_tokens=False)["input_ids"]])
    rmask = torch.ones_like(response)
    hot, _ = response_logits(lm, query, qmask, response, rmask, temperature=2.0)
    cold, _ = response_logits(lm, query, qmask, response, rmask, temperature=0.5)
    torch.testing.assert_close(hot * 2.0, cold * 0.5)


def test_truncate_after_stop_pads_everything_after_the_first_stop() -> None:
    stops, pad = torch.tensor([0, 3]), 9
    response = torch.tensor([[5, 0, 6, 0], [5, 6, 7, 8], [3, 5, 5, 5], [5, 3, 0, 5]])
    out, mask, has_stop = truncate_after_stop(response, stops, pad)
    assert out.tolist() == [[5, 0, 9, 9], [5, 6, 7, 8], [3, 9, 9, 9], [5, 3, 9, 9]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert has_stop.tolist() == [True, False, True, True]


def test_pad_equal_to_the_stop_token_is_masked_by_position() -> None:
    """Llama 3 / Qwen: PAD is EOS. The mask must come from positions, not from PAD's id."""
    eos = 0
    response = torch.tensor([[5, 6, eos, eos, eos], [5, 6, 7, 8, 9]])
    out, mask, has_stop = truncate_after_stop(response, torch.tensor([eos]), pad_id=eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert has_stop.tolist() == [True, False]
    assert out.tolist() == response.tolist()


def test_sampling_stops_at_eos_and_pads_after_it(lm_and_tok) -> None:
    lm, tok = lm_and_tok
    query, qmask = encode_prompts(tok, ["the day", "a storm", "kind", "news"] * 4, 8)
    g = torch.Generator().manual_seed(0)
    stops = torch.tensor([tok.eos_token_id])
    raw = sample(lm, query, qmask, 24, 1.0, stops, tok.pad_token_id, g)
    assert raw.shape == (16, 24)
    for row in raw.tolist():
        if tok.eos_token_id in row:
            after = row[row.index(tok.eos_token_id) + 1 :]
            assert all(t == tok.pad_token_id for t in after)
        else:
            assert tok.pad_token_id not in row
    response, mask, has_stop = truncate_after_stop(raw, stops, tok.pad_token_id)
    texts = decode_responses(tok, response, mask, has_stop)
    assert all("<|" not in t for t in texts)  # neither EOS nor PAD leaks into the text


def test_sampling_is_reproducible_from_the_generator(lm_and_tok) -> None:
    lm, tok = lm_and_tok
    query, qmask = encode_prompts(tok, ["the day", "a storm"], 8)
    runs = [
        sample(
            lm,
            query,
            qmask,
            12,
            0.7,
            torch.tensor([tok.eos_token_id]),
            tok.pad_token_id,
            torch.Generator().manual_seed(3),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_value_head_starts_at_zero_and_logprobs_match_the_plain_lm(lm_and_tok) -> None:
    lm, tok = lm_and_tok
    policy = PolicyWithValueHead(lm)
    query, qmask = encode_prompts(tok, ["the day", "a storm"], 8)
    response = torch.tensor([tok(" is kind", add_special_tokens=False)["input_ids"]] * 2)
    rmask = torch.ones_like(response)
    logprobs, values, entropy = policy(query, qmask, response, rmask, 0.7)
    plain = gather_logprobs(response_logits(lm, query, qmask, response, rmask, 0.7)[0], response)
    assert torch.equal(logprobs, plain)
    assert (values == 0).all()
    assert (entropy > 0).all()
