"""Rollout: prompts → left-padded queries → sampled responses → per-token logprobs and values.

The details that make PPO on language models learn (DESIGN.md, "PPO client"):

- **Prompts as the model was trained to see them**: a chat model's prompt goes through its chat
  template (with the generation prompt); a plain prompt gets the special tokens the tokenizer
  adds itself (Llama's BOS, nothing for GPT-2). A long prompt loses its oldest *content*
  tokens, never the template around them.
- **Left padding with position ids from the mask**: every prompt ends at the same column, so the
  response starts at the same column for all; positions count real tokens only, so a padded
  prompt sees the same positions as an unpadded one.
- **Masks from positions, not token ids**: a response ends at its first stop token (any of the
  model's EOS ids); everything after it becomes PAD and is masked out of logprobs, values, KL
  and losses. Nothing compares ids with PAD, so tokenizers whose PAD is their EOS (Llama 3,
  Qwen) work.
- **Temperature in every forward**: the rollout samples from softmax(logits / T); the reference
  and training forwards divide by the same T, otherwise the importance ratio is not 1 before
  the first update and the KL is measured between the wrong distributions.
- **Logits for response tokens only**: the LM head runs on the positions that predict response
  tokens (``logits_to_keep``), not on the prompt: (B, R, V) instead of (B, P + R, V).
- **Logprobs from a full forward, not from the sampler**: the old logprobs come from the same
  function the training step calls, so with a learning rate of 0 the ratio is exactly 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions that count only real tokens: left padding does not shift them."""
    return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int, chat_template: bool
) -> list[list[int]]:
    """Token ids of each prompt as the model expects it; content beyond ``max_tokens`` is cut
    from the left before the template or special tokens are added."""
    ids = []
    for prompt in prompts:
        content = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(content) > max_tokens:
            prompt = tokenizer.decode(content[-max_tokens:])
        if chat_template:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            # The template writes its own BOS where it wants one; do not add another.
            x = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            x = tokenizer(prompt)["input_ids"]
        if not x:  # an empty plain prompt starts a document
            x = [
                tokenizer.bos_token_id
                if tokenizer.bos_token_id is not None
                else tokenizer.eos_token_id
            ]
        ids.append(x)
    return ids


def left_pad(ids: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(B, P) ids and mask, each row right-aligned."""
    width = max(len(x) for x in ids)
    query = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        query[i, width - len(x) :] = torch.tensor(x)
        mask[i, width - len(x) :] = 1
    return query, mask


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_tokens: int,
    pad_id: int | None = None,
    chat_template: bool = False,
) -> tuple[Tensor, Tensor]:
    """Left-padded (B, P) ids and mask of the prompts (see :func:`prompt_token_ids`)."""
    ids = prompt_token_ids(tokenizer, prompts, max_tokens, chat_template)
    return left_pad(ids, tokenizer.pad_token_id if pad_id is None else pad_id)


def all_done_here(done: Tensor) -> bool:
    return bool(done.all())


@torch.no_grad()
def sample(
    lm: PreTrainedModel,
    query: Tensor,
    query_mask: Tensor,
    max_new_tokens: int,
    temperature: float,
    stop_ids: Tensor,
    pad_id: int,
    generator: torch.Generator,
    all_done: Callable[[Tensor], bool] = all_done_here,
) -> Tensor:
    """Ancestral sampling with a KV cache; (B, P) → (B, max_new_tokens), PAD after a stop.

    ``generator`` must live on the model's device. ``all_done`` decides when to stop early;
    sharded models pass one that asks every rank, since each forward is a collective there.
    """
    B = query.shape[0]
    mask = query_mask
    out = lm(
        input_ids=query,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=True,
        logits_to_keep=1,  # the prompt's other positions need no (B, P, V) logits
    )
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=query.device)
    done = torch.zeros(B, dtype=torch.bool, device=query.device)
    for t in range(max_new_tokens):
        probs = torch.softmax(out.logits[:, -1].float() / temperature, dim=-1)  # (B, V)
        next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        next_token = torch.where(done, pad_id, next_token)
        tokens[:, t] = next_token
        done |= torch.isin(next_token, stop_ids)
        if t + 1 == max_new_tokens or all_done(done):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = lm(
            input_ids=next_token[:, None],
            attention_mask=mask,
            position_ids=mask.sum(dim=1, keepdim=True) - 1,
            cache=out.cache,
            use_cache=True,
        )
    return tokens


def truncate_after_stop(
    response: Tensor, stop_ids: Tensor, pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """PAD everything after the first stop token.

    Returns ``(response, mask, has_stop)``: the mask keeps the stop token itself (its logprob is
    part of the action sequence and the score lands on it), ``has_stop`` is (B,) bool. The mask
    comes from positions only, so a PAD id equal to a stop id is harmless.
    """
    is_stop = torch.isin(response, stop_ids.to(response.device)).long()
    after_stop = (is_stop.cumsum(dim=1) - is_stop) > 0
    mask = (~after_stop).long()
    return response.masked_fill(after_stop, pad_id), mask, is_stop.bool().any(dim=1)


def decode_responses(
    tokenizer: PreTrainedTokenizerBase, response: Tensor, mask: Tensor, has_stop: Tensor
) -> list[str]:
    """Text of each response without its stop token or padding: what the reward model reads."""
    lengths = (mask.sum(dim=1) - has_stop.long()).tolist()
    return [
        tokenizer.decode(ids[:n], skip_special_tokens=True)
        for ids, n in zip(response.tolist(), lengths, strict=True)
    ]


def trim_padding(
    query: Tensor, query_mask: Tensor, response: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Drop the columns no row of this (micro-)batch uses: leading query padding, trailing
    response padding. Masked columns change nothing but cost a full forward each."""
    first = int(query_mask.any(dim=0).long().argmax())
    width = max(int(response_mask.sum(dim=1).max()), 1)
    return query[:, first:], query_mask[:, first:], response[:, :width], response_mask[:, :width]


def pad_to(x: Tensor, width: int) -> Tensor:
    """Right-pad the response dimension (dim 1) of a (B, w) tensor back to ``width`` with 0."""
    return F.pad(x, (0, width - x.shape[1]))


def response_logits(
    lm: PreTrainedModel,
    query: Tensor,
    query_mask: Tensor,
    response: Tensor,
    response_mask: Tensor,
    temperature: float,
    hidden: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Tempered fp32 logits that predict each response token, (B, R, V), and optionally the
    last hidden states at the same positions, (B, R, H)."""
    input_ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    R = response.shape[1]
    out = lm(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
        output_hidden_states=hidden,
        logits_to_keep=R + 1,  # position p predicts token p + 1: the last prompt position on
    )
    logits = out.logits[:, :-1].float() / temperature
    states = out.hidden_states[-1][:, -R - 1 : -1] if hidden else None
    return logits, states


def response_hidden_states(
    trunk: PreTrainedModel,
    query: Tensor,
    query_mask: Tensor,
    response: Tensor,
    response_mask: Tensor,
) -> Tensor:
    """A trunk's (``AutoModel``'s) last hidden states at the positions that predict each
    response token, (B, R, H): what a separate critic's value head reads."""
    input_ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    out = trunk(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
    )
    return out.last_hidden_state[:, query.shape[1] - 1 : -1]


def gather_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


@dataclass
class Rollout:
    """One rank's share of a step: everything the PPO epochs need, (B, ·) tensors."""

    query: Tensor
    query_mask: Tensor
    response: Tensor
    response_mask: Tensor
    has_stop: Tensor
    logprobs: Tensor
    ref_logprobs: Tensor
    values: Tensor
    entropy: Tensor
    prompts: list[str]
    texts: list[str]
