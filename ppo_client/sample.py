"""Sample completions from a policy: how users and tests compare a policy before and after PPO.

Each line of the output is one completion: ``prompt``, ``response``, the response's ``logprob``
under the policy at the sampling temperature, ``reward`` when a reward URL is given, and ``kl``
(log π − log π_ref summed over the response, a k1 estimate of the sequence KL) when a reference
policy is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ppo_client.rollout import (
    decode_responses,
    disable_dropout,
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


def _load(folder: str) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    disable_dropout(model)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def sample_policy(cfg: SampleConfig) -> list[dict[str, object]]:
    """``n`` completions per prompt, in prompt order; rewards are added by the caller."""
    lm, tokenizer = _load(cfg.policy)
    ref = _load(cfg.reference)[0] if cfg.reference else None
    stop_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad_id is None or pad_id == stop_id:
        raise ValueError(f"{cfg.policy}: the tokenizer needs a PAD token distinct from EOS")
    generator = torch.Generator().manual_seed(cfg.seed)
    prompts = [p for p in cfg.prompts for _ in range(cfg.n)]
    rows: list[dict[str, object]] = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]
        query, query_mask = encode_prompts(tokenizer, batch, cfg.prompt_max_tokens)
        raw = sample(
            lm, query, query_mask, cfg.response_length, cfg.temperature, stop_id, pad_id, generator
        )
        response, mask, has_stop = truncate_after_stop(raw, stop_id, pad_id)
        logits, _ = response_logits(lm, query, query_mask, response, mask, cfg.temperature)
        logprob = (gather_logprobs(logits, response) * mask).sum(1)
        kl = None
        if ref is not None:
            ref_logits, _ = response_logits(ref, query, query_mask, response, mask, cfg.temperature)
            kl = logprob - (gather_logprobs(ref_logits, response) * mask).sum(1)
        texts = decode_responses(tokenizer, response, mask, stop_id)
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
