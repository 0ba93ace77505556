"""Rollout: prompts → left-padded queries → sampled responses → per-token logprobs and values.

The details that make PPO on language models learn (DESIGN.md, "PPO client"):

- **Left padding with position ids from the mask**: every prompt ends at the same column, so the
  response starts at the same column for all; positions count real tokens only, so a padded
  prompt sees the same positions as an unpadded one.
- **Temperature in every forward**: the rollout samples from softmax(logits / T); the reference
  and training forwards divide by the same T, otherwise the importance ratio is not 1 before
  the first update and the KL is measured between the wrong distributions.
- **Truncation after the stop token**: everything after the first stop token becomes PAD and is
  masked out of logprobs, values, KL and losses.
- **Logprobs from a full forward, not from the sampler**: the old logprobs come from the same
  function the training step calls, so with a learning rate of 0 the ratio is exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ppo_client.ppo_math import entropy_from_logits


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions that count only real tokens: left padding does not shift them."""
    return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def disable_dropout(model: nn.Module) -> None:
    """Dropout makes two forwards of the same weights disagree: no ratio of 1, no KL of 0."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int
) -> tuple[Tensor, Tensor]:
    """Left-padded (B, P) ids and mask; a long prompt keeps its last ``max_tokens`` tokens."""
    ids = [x[-max_tokens:] for x in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    ids = [x if x else [tokenizer.eos_token_id] for x in ids]  # an empty prompt starts a document
    width = max(len(x) for x in ids)
    query = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        query[i, width - len(x) :] = torch.tensor(x)
        mask[i, width - len(x) :] = 1
    return query, mask


@torch.no_grad()
def sample(
    lm: PreTrainedModel,
    query: Tensor,
    query_mask: Tensor,
    max_new_tokens: int,
    temperature: float,
    stop_id: int,
    pad_id: int,
    generator: torch.Generator,
) -> Tensor:
    """Ancestral sampling with a KV cache; (B, P) → (B, max_new_tokens), PAD after the stop."""
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
        done |= next_token == stop_id
        if bool(done.all()) or t + 1 == max_new_tokens:
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
    response: Tensor, stop_id: int, pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """PAD everything after the first stop token.

    Returns ``(response, mask, has_stop)``: the mask keeps the stop token itself (its logprob is
    part of the action sequence and the score lands on it), ``has_stop`` is (B,) bool.
    """
    is_stop = response == stop_id
    after_stop = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0
    mask = (~after_stop).long()
    return response.masked_fill(after_stop, pad_id), mask, is_stop.any(dim=1)


def decode_responses(
    tokenizer: PreTrainedTokenizerBase, response: Tensor, mask: Tensor, stop_id: int
) -> list[str]:
    """Text of each response without the stop token or padding: what the reward model reads."""
    texts = []
    for ids, m in zip(response.tolist(), mask.tolist(), strict=True):
        kept = [t for t, keep in zip(ids, m, strict=True) if keep and t != stop_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


def response_logits(
    lm: PreTrainedModel,
    query: Tensor,
    query_mask: Tensor,
    response: Tensor,
    response_mask: Tensor,
    temperature: float,
    hidden: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Tempered logits that predict each response token, (B, R, V), and optionally the hidden
    states at the same positions, (B, R, H)."""
    input_ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    out = lm(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        output_hidden_states=hidden,
    )
    P = query.shape[1]
    logits = out.logits[:, P - 1 : -1].float() / temperature  # position p predicts token p+1
    states = out.hidden_states[-1][:, P - 1 : -1] if hidden else None
    return logits, states


def gather_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


class PolicyWithValueHead(nn.Module):
    """The policy and its critic on one shared trunk.

    The value head is a linear layer on the LM's last hidden state, initialised at zero so the
    first values are 0. Sharing the trunk halves the forward cost on a CPU; the price is that
    value gradients also move the policy's features, which the small ``vf_coef`` keeps in check.
    """

    def __init__(self, lm: PreTrainedModel) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        query: Tensor,
        query_mask: Tensor,
        response: Tensor,
        response_mask: Tensor,
        temperature: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(logprobs, values, entropy), each (B, R)."""
        logits, states = response_logits(
            self.lm, query, query_mask, response, response_mask, temperature, hidden=True
        )
        assert states is not None
        values = self.value_head(states.float()).squeeze(-1)
        return gather_logprobs(logits, response), values, entropy_from_logits(logits)


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
    costs: Tensor | None = None  # (B,) cost-model scores, when a cost model constrains the run
