"""The one configuration of a PPO run: a typed dataclass, every field documented.

Values come from, in rising priority: the defaults below (from the PPO-for-LLM reproductions, see
DESIGN.md "Defaults worth knowing"), a config file (``--config``, TOML or JSON with these field
names), and command-line flags (``--field-name``). :meth:`PPOConfig.validate` runs before any
model loads, so a bad value fails in a second with one line, not after minutes of work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ppo_client.safety import LAMBDA_KD, LAMBDA_KP


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class PPOConfig:
    # --- what to train, against what --------------------------------------------------------
    policy: str = _doc(
        "Causal LM to start from (also the frozen reference): a Hugging Face directory, or a hub "
        "id already in the local cache.",
        default="",
    )
    critic: str = _doc(
        "Critic: '' for a value head on the policy's own trunk, 'policy' for a separate trunk "
        "initialised from the policy, or another model directory / cached hub id.",
        default="",
    )
    prompts: str = _doc(
        "Prompts: JSONL with a 'prompt' field per line, or plain text lines.", default=""
    )
    eval_prompts: str = _doc(
        "Held-out prompts (same formats as prompts) for evaluation and the before/after "
        "samples; unset, the last num_eval_samples prompts of the prompts file are held out of "
        "training instead.",
        default="",
    )
    output: str = _doc(
        "Output directory: final policy, log.jsonl, TensorBoard events, plot, samples, "
        "checkpoints.",
        default="",
    )
    reward_url: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward service URL(s); several replicas are used round-robin."},
    )
    reward_model: str | None = _doc(
        "Model name sent to the service (None: its default).", default=None
    )
    reward_api_key: str | None = _doc("Bearer key for the service, if it wants one.", default=None)
    reward_normalize: bool = _doc(
        "Ask the service for scores normalised by the manifest's mean/std, so the missing-EOS "
        "score and β live on a known scale.",
        default=True,
    )
    reward_timeout: float = _doc("Seconds per scoring request before a retry.", default=30.0)
    reward_retry_budget: float = _doc(
        "Seconds a failing scoring request keeps retrying (service restarting, overloaded or "
        "unreachable) before the run checkpoints and stops; rides out a pod restart.",
        default=300.0,
    )
    # --- schedule ------------------------------------------------------------------------------
    steps: int = _doc("PPO steps (one rollout + its updates each).", default=100)
    rollout_batch_size: int = _doc(
        "Completions per step over all ranks (prompts × samples_per_prompt).", default=64
    )
    samples_per_prompt: int = _doc("Completions sampled for each prompt of a step.", default=1)
    num_minibatches: int = _doc("Minibatches per PPO epoch (per rank).", default=4)
    ppo_epochs: int = _doc("Passes over each rollout.", default=4)
    target_approx_kl: float | None = _doc(
        "Stop a step's remaining PPO epochs once an epoch's mean approx KL(old ‖ new) exceeds "
        "this (None: always run ppo_epochs).",
        default=None,
    )
    micro_batch_size: int = _doc(
        "Sequences per forward/backward (0: a whole minibatch): rollout forwards run in chunks of "
        "this size and minibatches accumulate gradients over them, so memory follows this "
        "setting, not the rollout size.",
        default=0,
    )
    score_chunk_size: int = _doc(
        "Completions generated and sent for scoring together; chunk k is scored while chunk "
        "k+1 generates.",
        default=16,
    )
    overlap_scoring: bool = _doc(
        "Score chunks in the background while the next one generates (off: generate all, then "
        "wait for all scores; for measuring the overlap).",
        default=True,
    )
    # --- optimisation --------------------------------------------------------------------------
    learning_rate: float = _doc("AdamW peak learning rate.", default=3e-5)
    lr_schedule: Literal["constant", "linear", "cosine"] = _doc(
        "Learning rate after warm-up, per PPO step: constant, or decaying to 0 at the last step.",
        default="constant",
    )
    lr_warmup_steps: int = _doc("PPO steps of linear warm-up from 0.", default=0)
    adam_eps: float = _doc("AdamW epsilon.", default=1e-5)
    weight_decay: float = _doc("AdamW weight decay.", default=0.0)
    max_grad_norm: float = _doc("Gradient-norm clip (0 turns it off).", default=1.0)
    entropy_coef: float = _doc(
        "Weight of an entropy bonus in the loss (0: none, as the reference implementations).",
        default=0.0,
    )
    lora_rank: int = _doc(
        "LoRA rank on every linear layer (0: full fine-tuning). The reference is the policy with "
        "its adapters disabled: no second copy of the weights.",
        default=0,
    )
    lora_alpha: float | None = _doc("LoRA alpha (None: 2 × lora_rank).", default=None)
    precision: Literal["fp32", "bf16", "fp16"] = _doc(
        "Compute precision: bf16/fp16 autocast over fp32 master weights (fp16 with loss "
        "scaling); with LoRA the frozen base weights are stored in that dtype.",
        default="fp32",
    )
    gradient_checkpointing: bool = _doc(
        "Recompute activations in the backward pass instead of keeping them.", default=False
    )
    distributed: Literal["ddp", "fsdp"] = _doc(
        "Under torchrun: DDP (every rank holds the whole model) or FSDP (torch's fully_shard: "
        "weights, gradients and optimizer state sharded over ranks).",
        default="ddp",
    )
    # --- generation ----------------------------------------------------------------------------
    temperature: float = _doc(
        "Sampling temperature, applied to the logits in the rollout, reference and training "
        "forwards alike (otherwise the ratio is off before any update).",
        default=0.7,
    )
    response_length: int = _doc("Most tokens generated per response.", default=32)
    prompt_max_tokens: int = _doc(
        "Prompts keep their last this-many content tokens (the chat template comes on top).",
        default=32,
    )
    chat_template: bool = _doc(
        "Format prompts with the tokenizer's chat template when it has one (--no-chat-template: "
        "plain text with the tokenizer's own special tokens).",
        default=True,
    )
    stop_token: str = _doc(
        "Token that ends a response: 'eos' for any EOS id of the tokenizer and the model's "
        "generation config, or a single-token string.",
        default="eos",
    )
    missing_eos_score: float | None = _doc(
        "Score given to responses that never emit the stop token (None: keep the RM score). "
        "Off by default, as TRL: with −1 a run learns to stop early before anything else (the "
        "demo's policy halved its length in 5 steps); set it when responses must end within "
        "response_length.",
        default=None,
    )
    # --- KL penalty ----------------------------------------------------------------------------
    kl_estimator: Literal["k1", "k3"] = _doc("Per-token KL estimator in the reward.", default="k1")
    kl_coef: float = _doc(
        "β: the constant (fixed) KL coefficient, or the adaptive one's start and floor (β "
        "never falls below it, so it cannot wind down before the policy has moved).",
        default=0.1,
    )
    adaptive_kl: bool = _doc(
        "Adapt β towards kl_target (Ziegler et al. 2019): the KL a run reaches is then a "
        "setting, not a consequence of the reward's scale and the learning rate.",
        default=True,
    )
    kl_target: float = _doc(
        "Target sequence KL (nats) of the adaptive controller. 4 nats is about as far as "
        "best-of-150 sampling moves from the starting policy (log n − (n−1)/n): a budget within "
        "which the responses stay ones the starting policy could have written; at 3 nats the "
        "β needed to hold it made short answers cheap (docs/ppo.md).",
        default=4.0,
    )
    kl_horizon: float | None = _doc(
        "Horizon (samples) of the adaptive controller: β changes by exp(clip(KL/target − 1, "
        "±0.2)·n/horizon) after a step of n samples. None: one step's samples, so β can rise "
        "22 % a step and double in 4 steps over target (a slower β let the demo's KL run to "
        "8 nats).",
        default=None,
    )
    # --- safety constraint: PPO-Lagrangian (Safe RLHF, docs/safety.md) -----------------------
    cost_model: str | None = _doc(
        "Cost model on the reward service (cost > 0: unsafe). Set: each sequence scores "
        "r − λ·σ(cost) and λ keeps the batch mean σ(cost), the cost model's P(unsafe), at or "
        "below cost_threshold. None: no constraint.",
        default=None,
    )
    cost_threshold: float = _doc(
        "D: the mean P(unsafe) = σ(cost) per response the constraint allows, in [0, 1). "
        "Measure it on a policy whose safety you accept (docs/safety.md); 0.1 is about what "
        "the safety demo's cost model reads on its start policy (gold unsafe rate 0.04).",
        default=0.1,
    )
    lambda_init: float = _doc("λ, the Lagrange multiplier, at step 0 (>= 0).", default=1.0)
    lambda_lr: float = _doc(
        "η = K_I, λ's integral step per PPO step on (mean P(unsafe) − D), kept >= 0 (0: a "
        "fixed penalty λ = lambda_init). P(unsafe) moves in hundredths, so η is large: at 5, "
        "a batch 0.05 over D raises λ by 0.25.",
        default=5.0,
    )
    lambda_kp: float = _doc(
        "K_P, λ's proportional gain on (mean P(unsafe) − D): damps the swing of the integral "
        "(lambda_lr is its K_I; PID Lagrangian, docs/safety.md). 0 with lambda_kd 0: plain "
        "dual ascent. Not applied when lambda_lr is 0.",
        default=LAMBDA_KP,
    )
    lambda_kd: float = _doc(
        "K_D, λ's gain on a rise of (mean P(unsafe) − D) since the last step (never lowers λ). "
        "Not applied when lambda_lr is 0.",
        default=LAMBDA_KD,
    )
    # --- advantages and losses ---------------------------------------------------------------
    gamma: float = _doc("Discount γ.", default=1.0)
    lam: float = _doc("GAE λ.", default=0.95)
    cliprange: float = _doc("Policy-ratio clip ε.", default=0.2)
    cliprange_value: float = _doc("Value clip around the rollout values.", default=0.2)
    vf_coef: float = _doc("Weight of the value loss.", default=0.1)
    whiten_rewards: bool = _doc(
        "Whiten per-token rewards over the batch, keeping their mean (TRL's whiten_rewards). "
        "Off by default: x/s + m(1 - 1/s) adds the same constant to every token, a length bonus "
        "or penalty whose sign follows the batch mean.",
        default=False,
    )
    whiten_advantages: bool = _doc("Whiten advantages over the batch, with centring.", default=True)
    # --- evaluation and bookkeeping -----------------------------------------------------------
    eval_every: int = _doc(
        "Evaluate on the held-out prompts every this-many steps (reward, KL, length, distinct-n; "
        "0: only before and after training).",
        default=0,
    )
    num_eval_samples: int = _doc(
        "Held-out prompts of the before/after sample table written at the end (0: none).",
        default=8,
    )
    seed: int = _doc("Seed of sampling, prompt order and minibatch order.", default=1)
    checkpoint_every: int = _doc("Steps between checkpoints (also written on stop).", default=10)
    resume: bool = _doc("Continue from output/checkpoint exactly where it stopped.", default=False)
    tensorboard: bool = _doc(
        "Also write the per-step metrics as TensorBoard events in output/tensorboard.",
        default=True,
    )
    torch_threads: int = _doc("torch intra-op threads (0: torch's default).", default=0)
    progress: bool = _doc("Show a progress bar on the console.", default=True)

    def validate(self) -> PPOConfig:
        """Fail fast with a one-line message naming the field."""
        for name in ("policy", "prompts", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required")
        resolve_model(self.policy, "policy")
        if self.critic and self.critic != "policy":
            resolve_model(self.critic, "critic")
        if not Path(self.prompts).is_file():
            raise ConfigError(f"prompts file {self.prompts} not found")
        if self.eval_prompts and not Path(self.eval_prompts).is_file():
            raise ConfigError(f"eval_prompts file {self.eval_prompts} not found")
        positive = (
            "steps rollout_batch_size samples_per_prompt num_minibatches ppo_epochs "
            "score_chunk_size response_length prompt_max_tokens checkpoint_every temperature "
            "kl_target"
        )
        for name in positive.split():
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.reward_timeout > 0:
            raise ConfigError(f"reward_timeout must be > 0, got {self.reward_timeout}")
        if not 0 <= self.reward_retry_budget < float("inf"):
            raise ConfigError(f"reward_retry_budget must be >= 0, got {self.reward_retry_budget}")
        for name in ("kl_horizon", "target_approx_kl", "lora_alpha"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        non_negative = (
            "learning_rate kl_coef cliprange cliprange_value vf_coef entropy_coef lora_rank "
            "micro_batch_size lr_warmup_steps eval_every num_eval_samples"
        )
        for name in non_negative.split():
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lambda_init", "lambda_lr", "lambda_kp", "lambda_kd"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 <= self.cost_threshold < 1:
            raise ConfigError(
                f"cost_threshold is a mean P(unsafe), in [0, 1); got {self.cost_threshold}"
            )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ConfigError("gamma and lam must lie in [0, 1]")
        for name in ("kl_estimator", "precision", "distributed", "lr_schedule"):
            choices = typing.get_args(typing.get_type_hints(PPOConfig)[name])
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{name} must be one of {', '.join(map(repr, choices))}, "
                    f"got {getattr(self, name)!r}"
                )
        if self.rollout_batch_size % self.samples_per_prompt:
            raise ConfigError("rollout_batch_size must be a multiple of samples_per_prompt")
        if self.rollout_batch_size % self.num_minibatches:
            raise ConfigError("rollout_batch_size must be a multiple of num_minibatches")
        if self.distributed == "fsdp" and self.lora_rank:
            raise ConfigError(
                "distributed='fsdp' with lora_rank > 0 is not supported: LoRA keeps one copy of "
                "the weights, frozen; use DDP for it"
            )
        for url in self.reward_url:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"reward_url {url!r} must start with http:// or https://")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """Field values from a TOML or JSON file; unknown keys are an error, not a silent typo."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".toml":
                import tomllib  # Python ≥ 3.11; JSON works everywhere

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except (ValueError, ModuleNotFoundError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config file {path}: unknown field(s) {', '.join(unknown)}")
        if isinstance(data.get("reward_url"), str):
            data["reward_url"] = [data["reward_url"]]
        return data


def resolve_model(name: str, field_name: str = "policy") -> str:
    """A model directory: ``name`` itself, or the snapshot of a hub id in the local Hugging Face
    cache. Nothing is downloaded: a training run must not depend on the network."""
    if Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:
        raise ConfigError(
            f"{field_name} {name!r} is neither a directory nor a model in the local Hugging Face "
            "cache (download it first, e.g. `hf download ID`)"
        ) from None


def _base_type(tp: Any) -> Any:
    """``float | None`` → float; ``list[str]`` → list; ``Literal[...]`` → Literal."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _parse_optional(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per field. An untyped flag leaves no attribute at all (``SUPPRESS``), so a
    typed ``none`` can still clear a value the config file set."""
    parser.add_argument("--config", help="TOML or JSON file of config fields (flags win).")
    hints = typing.get_type_hints(PPOConfig)
    for f in dataclasses.fields(PPOConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        base = _base_type(tp)
        optional = base is not tp
        help_text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        unset = argparse.SUPPRESS
        if base is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=unset, help=help_text
            )
        elif typing.get_origin(base) is list:
            parser.add_argument(flag, nargs="+", default=unset, help=help_text)
        elif typing.get_origin(base) is Literal:
            parser.add_argument(flag, choices=typing.get_args(base), default=unset, help=help_text)
        else:
            convert = _parse_optional(base) if optional else base
            parser.add_argument(flag, type=convert, default=unset, help=help_text)


def from_args(args: argparse.Namespace) -> PPOConfig:
    values: dict[str, Any] = PPOConfig.from_file(args.config) if args.config else {}
    typed = vars(args)
    for f in dataclasses.fields(PPOConfig):
        if f.name in typed:
            values[f.name] = typed[f.name]
    try:
        return PPOConfig(**values).validate()
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
