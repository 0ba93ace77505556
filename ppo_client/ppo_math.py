"""PPO-for-language-models math as small pure functions, each tested against a naive loop.

Shapes: ``B`` sequences in a rollout, ``T`` response tokens. Every per-token tensor comes with a
``mask`` of the same shape (1 for real response tokens up to and including the stop token, 0 for
padding after it), and every statistic is taken over the masked tokens only: counting the padding
after EOS would bias means, variances and losses towards whatever the padding holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k3"]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over masked entries; unbiased (Bessel) by default, as the reference PPO code."""
    mean = masked_mean(x, mask)
    mask = mask.to(x.dtype)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Scale to unit variance over masked entries.

    ``shift_mean=False`` keeps the mean (rewards: centring them would erase the KL penalty's
    sign), ``shift_mean=True`` centres too (advantages: half of them should push down).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from tokens sampled from π.

    k1 = log π − log π_ref is unbiased but can be negative per token; k3 = (r − 1) − log r with
    r = π_ref / π is unbiased and never negative (Schulman, "Approximating KL divergence").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def shaped_rewards(scores: Tensor, kl: Tensor, mask: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Per-token reward −β·KL, plus the sequence score on the last real token.

    Returns ``(rewards, non_score_reward)``; both (B, T) and zero past the stop token.
    """
    non_score = -beta * kl * mask
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # index of the last real token, (B,)
    rewards = non_score.clone()
    rewards[torch.arange(scores.shape[0]), last] += scores
    return rewards * mask, non_score


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens (Schulman et al. 2016).

    The value after the last real token is 0 (the episode ends at the stop token), which the
    mask gives for free because padded values and rewards are zeroed. Returns (advantages,
    returns), both (B, T).
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate objective; also the ratio statistics that tell whether PPO is sane.

    ``approx_kl`` is k3 for KL(π_old ‖ π_new) with r = π_new / π_old: the tokens were sampled
    from π_old, so E_old[r] = 1 and (r − 1) − log r averages to the KL (Schulman,
    "Approximating KL divergence"). The reversed ratio has no such guarantee.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
            "ratio_var": masked_var(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss ½·max((v − R)², (v_clip − R)²); returns (loss, clip fraction)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_sq = (values - returns) ** 2
    clipped_sq = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_sq, clipped_sq), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_sq > unclipped_sq).to(values.dtype), mask)
    return loss, clipfrac


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical over the last dimension, (…, V) → (…)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var(R − v)/Var(R): 1 is a perfect critic, ≤ 0 one no better than a constant."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)


def adapted_kl_coef(
    beta: float, kl: float, target: float, n_samples: int, horizon: float, floor: float
) -> float:
    """β after a step whose rollout of ``n_samples`` measured sequence KL ``kl``.

    Ziegler et al.'s proportional error, clipped to ±0.2, scaled by n/horizon, applied in log
    space (β·exp(·), so a rise and a fall of the same error cancel) and never below ``floor``.
    The floor (the starting β) keeps β from winding down while the policy has not yet moved:
    in the demo it fell from 0.10 to 0.054 during the first 14 steps, and the KL then ran to
    8 nats before a slow rise could catch it. With the default horizon of one step's samples,
    β can change by e^±0.2 (+22 % / −18 %) a step: it doubles in 4 steps at 1.2× the target.
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return max(floor, beta * math.exp(error * n_samples / horizon))


@dataclass
class AdaptiveKLController:
    """Holds the measured KL near ``target`` by moving β (``adapted_kl_coef``)."""

    value: float
    target: float
    horizon: float
    floor: float

    def update(self, current_kl: float, n_steps: int) -> None:
        self.value = adapted_kl_coef(
            self.value, current_kl, self.target, n_steps, self.horizon, self.floor
        )

    def state_dict(self) -> dict[str, float]:
        """β only: target, horizon and floor are settings, so a resumed run (the labeling loop
        continues one with more steps) follows its own configuration."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at PPO step ``step`` (0-based).

    Linear warm-up from 1/warmup over ``warmup`` steps, then constant or decaying (linearly or
    along a cosine) to 0 after the last of ``total`` steps.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "linear":
        return max(1.0 - progress, 0.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"unknown lr schedule {schedule!r}")


@dataclass
class FixedKLController:
    """A constant β, with the same interface as the adaptive one."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]
