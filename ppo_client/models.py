"""The networks of a PPO run: policy (+ LoRA), critic, reference; loading and saving them.

- **Any causal LM** transformers loads, from a directory or a hub id already in the local cache.
  Dropout is turned off everywhere (two forwards of the same weights must agree, or the ratio is
  not 1 and the KL not 0 at step 0).
- **LoRA** (peft): the policy trains low-rank adapters on every linear layer; the reference is
  the same network with its adapters disabled, so there is no second copy of the weights. With
  ``bf16``/``fp16`` the frozen base weights are stored in that dtype, the adapters in fp32.
- **Full fine-tuning** keeps fp32 master weights (mixed precision is autocast) and a frozen fp32
  reference copy, so both compute the very same numbers until the first update.
- **Critic**: a value head on the policy's own last hidden state (shared trunk, the default), or
  on a separate trunk (``AutoModel``) initialised from the policy or another checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ppo_client.config import ConfigError, PPOConfig, resolve_model
from ppo_client.ppo_math import entropy_from_logits
from ppo_client.rollout import (
    gather_logprobs,
    pad_to,
    response_hidden_states,
    response_logits,
    trim_padding,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ADAPTER = "adapter"
CRITIC = "critic"
VALUE_HEAD = "value_head.pt"


def disable_dropout(model: nn.Module) -> None:
    """Dropout makes two forwards of the same weights disagree: no ratio of 1, no KL of 0.

    Attention dropout in Llama-style models is a float on the attention module, not a module.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name))


def stop_and_pad_ids(
    tokenizer: PreTrainedTokenizerBase, lm: PreTrainedModel, stop_token: str
) -> tuple[list[int], int]:
    """(ids that end a response, PAD id).

    ``stop_token="eos"`` stops on the tokenizer's EOS and on every EOS id of the model's
    generation config (chat models end a turn with their own token, e.g. ``<|im_end|>``).
    Without a PAD token, EOS pads: masks come from positions, so the two may share an id.
    """
    if stop_token == "eos":
        configured = getattr(lm.generation_config, "eos_token_id", None)
        candidates = [tokenizer.eos_token_id]
        candidates += configured if isinstance(configured, list) else [configured]
        stop_ids = sorted({i for i in candidates if i is not None})
        if not stop_ids:
            raise ConfigError("the policy has no EOS token; set stop_token")
    else:
        ids = tokenizer(stop_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"stop_token {stop_token!r} is {len(ids)} tokens, not one")
        stop_ids = ids
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    return stop_ids, pad_id


def load_causal_lm(name: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=dtype)
    disable_dropout(lm)
    return lm.eval()


def _load_trunk(name: str, dtype: torch.dtype) -> PreTrainedModel:
    from transformers import AutoModel

    trunk = AutoModel.from_pretrained(resolve_model(name), dtype=dtype)
    disable_dropout(trunk)
    return trunk.eval()


class PolicyWithValueHead(nn.Module):
    """The policy and its critic: one forward gives logprobs, values and entropy.

    The value head is a linear layer initialised at zero (the first values are 0) on the last
    hidden state of the policy (``critic=None``: a shared trunk; on a CPU this halves the forward
    cost, and the small ``vf_coef`` keeps value gradients from dominating the policy's features)
    or of a separate trunk.
    """

    def __init__(self, lm: PreTrainedModel, critic: PreTrainedModel | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.critic = critic
        self.value_head = nn.Linear((critic or lm).config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        query: Tensor,
        query_mask: Tensor,
        response: Tensor,
        response_mask: Tensor,
        temperature: float,
        entropy_grad: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(logprobs, values, entropy), each (B, R); zero past the longest response.

        The entropy keeps its graph only with ``entropy_grad`` (an entropy bonus): otherwise a
        second (B, R, V) softmax would stay in memory until the backward pass for nothing.
        """
        R = response.shape[1]
        q, qm, r, rm = trim_padding(query, query_mask, response, response_mask)
        shared = self.critic is None
        logits, states = response_logits(self.lm, q, qm, r, rm, temperature, hidden=shared)
        if not shared:
            states = response_hidden_states(self.critic, q, qm, r, rm)
        assert states is not None
        values = self.value_head(states.float()).squeeze(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
        out = (gather_logprobs(logits, r), values, entropy)
        return tuple(pad_to(x, R) for x in out)  # type: ignore[return-value]


@dataclass
class Networks:
    """What a run trains and compares against; ``adapters`` holds the peft wrappers (LoRA)."""

    policy: PolicyWithValueHead
    reference: PreTrainedModel | None  # None with LoRA: the policy with its adapters disabled
    tokenizer: PreTrainedTokenizerBase
    adapters: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[PreTrainedModel]:
        """The reference LM for the duration of the block."""
        if self.reference is not None:
            yield self.reference
            return
        with self.adapters["policy"].disable_adapter():
            yield self.policy.lm

    def reference_logprobs(
        self,
        query: Tensor,
        query_mask: Tensor,
        response: Tensor,
        response_mask: Tensor,
        temperature: float,
    ) -> Tensor:
        R = response.shape[1]
        q, qm, r, rm = trim_padding(query, query_mask, response, response_mask)
        with self.as_reference() as ref:
            logits, _ = response_logits(ref, q, qm, r, rm, temperature)
        return pad_to(gather_logprobs(logits, r), R)


def _add_lora(model: PreTrainedModel, cfg: PPOConfig, task_type: str | None) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type=task_type,
    )
    return get_peft_model(model, lora)


def _load_adapter(model: PreTrainedModel, folder: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, folder, is_trainable=True)


def _enable_checkpointing(model: PreTrainedModel) -> None:
    # Non-reentrant: frozen embeddings (LoRA) give checkpointed blocks no input that needs grad.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_networks(cfg: PPOConfig, resume_from: Path | None = None) -> Networks:
    """Policy, critic and reference as ``cfg`` asks; trained weights from ``resume_from``
    (a checkpoint's ``policy`` folder) when resuming."""
    lora = cfg.lora_rank > 0
    base_dtype = DTYPES[cfg.precision] if lora else torch.float32
    tokenizer = load_tokenizer(cfg.policy)
    adapters: dict[str, Any] = {}

    full_weights = resume_from if resume_from is not None and not lora else None
    lm = load_causal_lm(str(full_weights or cfg.policy), base_dtype)
    if cfg.gradient_checkpointing:
        _enable_checkpointing(lm)
    if lora:
        if resume_from is not None:
            adapters["policy"] = _load_adapter(lm, resume_from / ADAPTER)
        else:
            adapters["policy"] = _add_lora(lm, cfg, "CAUSAL_LM")
        lm = adapters["policy"].get_base_model()

    critic = None
    if cfg.critic:
        source = cfg.policy if cfg.critic == "policy" else cfg.critic
        critic = _load_trunk(
            str(resume_from / CRITIC if full_weights is not None else source), base_dtype
        )
        if cfg.gradient_checkpointing:
            _enable_checkpointing(critic)
        if lora:
            adapters[CRITIC] = (
                _load_adapter(critic, resume_from / f"{CRITIC}_{ADAPTER}")
                if resume_from is not None
                else _add_lora(critic, cfg, None)
            )
            critic = adapters[CRITIC].get_base_model()

    policy = PolicyWithValueHead(lm, critic)
    if resume_from is not None:
        policy.value_head.load_state_dict(torch.load(resume_from / VALUE_HEAD, weights_only=True))
    reference = None
    if not lora:
        reference = load_causal_lm(cfg.policy, torch.float32).requires_grad_(False)
    return Networks(policy, reference, tokenizer, adapters)


def save_networks(
    nets: Networks, folder: Path, state: dict[str, Tensor] | None = None, merged: bool = False
) -> None:
    """What a run keeps of its networks, in ``folder``.

    Full fine-tuning: the policy as a Hugging Face directory (``state``, when given, is its
    gathered full state dict, e.g. from FSDP), the critic trunk in ``critic/``. LoRA: the adapters
    (``adapter/``, ``critic_adapter/``) and, with ``merged``, the merged policy as a plain
    Hugging Face directory beside them, which is the end of training (peft merges in place).
    Always the tokenizer and the value head.
    """
    folder.mkdir(parents=True, exist_ok=True)
    policy = nets.policy

    def part(prefix: str) -> dict[str, Tensor] | None:
        if state is None:
            return None
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    if nets.adapters:
        nets.adapters["policy"].save_pretrained(folder / ADAPTER)
        if CRITIC in nets.adapters:
            nets.adapters[CRITIC].save_pretrained(folder / f"{CRITIC}_{ADAPTER}")
        if merged:
            nets.adapters["policy"].merge_and_unload().save_pretrained(folder)
    else:
        policy.lm.save_pretrained(folder, state_dict=part("lm."))
        if policy.critic is not None:
            policy.critic.save_pretrained(folder / CRITIC, state_dict=part("critic."))
    nets.tokenizer.save_pretrained(folder)
    torch.save(part("value_head.") or policy.value_head.state_dict(), folder / VALUE_HEAD)
