"""Sample completions from a policy: how users and tests compare a policy before and after PPO.

Each line of the output is one completion: ``prompt``, ``response``, the response's ``logprob``
under the policy at the sampling temperature, ``stopped`` and ``tokens``, ``reward`` when a
reward URL is given, and ``kl`` (log π − log π_ref summed over the response, a k1 estimate of the
sequence KL) when a reference policy is given. Prompts go through the chat template when the
tokenizer has one, as in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ppo_client.models import load_causal_lm, load_tokenizer, stop_and_pad_ids
from ppo_client.rollout import (
    decode_responses,
    encode_prompts,
    gather_logprobs,
    response_logits,
    sample,
    truncate_after_stop,
)


@dataclass
class SampleConfig:
    policy: str
    prompts: list[str]
    n: int = 1
    temperature: float = 0.7
    response_length: int = 32
    prompt_max_tokens: int = 32
    batch_size: int = 32
    seed: int = 1
    reference: str | None = None
    chat_template: bool = True


@torch.no_grad()
def sample_policy(cfg: SampleConfig) -> list[dict[str, object]]:
    """``n`` completions per prompt, in prompt order; rewards are added by the caller."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lm = load_causal_lm(cfg.policy).to(device)
    tokenizer = load_tokenizer(cfg.policy)
    ref = load_causal_lm(cfg.reference).to(device) if cfg.reference else None
    stop, pad_id = stop_and_pad_ids(tokenizer, lm, "eos")
    stop_ids = torch.tensor(stop, device=device)
    chat_template = cfg.chat_template and tokenizer.chat_template is not None
    generator = torch.Generator(device).manual_seed(cfg.seed)
    prompts = [p for p in cfg.prompts for _ in range(cfg.n)]
    rows: list[dict[str, object]] = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]
        query, query_mask = encode_prompts(
            tokenizer, batch, cfg.prompt_max_tokens, pad_id, chat_template=chat_template
        )
        query, query_mask = query.to(device), query_mask.to(device)
        raw = sample(
            lm, query, query_mask, cfg.response_length, cfg.temperature, stop_ids, pad_id, generator
        )
        response, mask, has_stop = truncate_after_stop(raw, stop_ids, pad_id)
        logits, _ = response_logits(lm, query, query_mask, response, mask, cfg.temperature)
        logprob = (gather_logprobs(logits, response) * mask).sum(1)
        kl = None
        if ref is not None:
            ref_logits, _ = response_logits(ref, query, query_mask, response, mask, cfg.temperature)
            kl = logprob - (gather_logprobs(ref_logits, response) * mask).sum(1)
        texts = decode_responses(tokenizer, response.cpu(), mask.cpu(), has_stop.cpu())
        for i, (prompt, text) in enumerate(zip(batch, texts, strict=True)):
            row: dict[str, object] = {
                "prompt": prompt,
                "response": text,
                "logprob": float(logprob[i]),
                "stopped": bool(has_stop[i]),
                "tokens": int(mask[i].sum()),
            }
            if kl is not None:
                row["kl"] = float(kl[i])
            rows.append(row)
    return rows


def write_jsonl(rows: list[dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
