"""PPO-Lagrangian (Safe RLHF): maximize reward subject to expected P(unsafe) ≤ a threshold D.

The constrained problem max E[r] s.t. E[p] ≤ D becomes min over λ ≥ 0 of max over the policy of
E[r] − λ·(E[p] − D). The policy's side is ordinary PPO on the per-sequence score r − λ·p (the
KL term is added per token as without a constraint); λ's side is projected gradient ascent on
the constraint violation, once per step, from the batch's mean:

    λ ← max(0, λ + η · (mean p − D))

Here p = σ(c) is the cost model's probability that a response is unsafe (its sign loss is a
logistic fit of the labels), not the raw cost c that Safe RLHF penalizes. With the raw cost,
−λ·c is a bonus for every response the model finds "safer still" (c far below 0), unbounded
and largest for degenerate text: a fixed λ drove the demo's policy to empty or one-word
responses. σ(c) bounds that bonus by how unsafe typical safe text already looks (about 0.1 in
the demo), keeps a smooth pull on responses near the boundary (max(c, 0) gives none below 0),
and puts D in probability units, bounded and comparable across cost models' scales.
docs/safety.md has the measurements behind the choice.

λ grows while the policy's responses are too unsafe and shrinks back to exactly 0 once they are
safe enough, so a satisfied constraint stops costing reward. Safe RLHF itself steps log λ with
Adam; stepping λ directly can reach 0 (log λ only approaches it) and responds to a violation
whatever λ's size (a log-λ step from a small λ is tiny), so a run that becomes unsafe late is
checked at once.

With η = 0, λ stays at its initial value: PPO on a fixed penalty r − λ·p. The math is small pure
functions over floats (λ is one number per run), and the module imports no torch, so TRL users
get the same combination as a reward function (:class:`ConstrainedReward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def unsafe_probability(cost: float) -> float:
    """p = σ(c), written with tanh so that no cost overflows ``exp``."""
    return 0.5 * (1.0 + math.tanh(0.5 * cost))


def penalized_scores(rewards: Sequence[float], probs: Sequence[float], lam: float) -> list[float]:
    """Per-sequence r − λ·p: the score PPO maximizes for a given multiplier."""
    if len(rewards) != len(probs):
        raise ValueError(f"{len(rewards)} rewards but {len(probs)} costs")
    return [r - lam * p for r, p in zip(rewards, probs, strict=True)]


def unsafe_share(costs: Sequence[float]) -> float:
    """Share of responses the cost model calls unsafe (raw cost > 0, i.e. p > ½)."""
    return sum(c > 0 for c in costs) / len(costs) if costs else float("nan")


def lagrange_step(lam: float, mean_cost: float, threshold: float, lr: float) -> float:
    """One projected gradient-ascent step of λ on the violation ``mean_cost − threshold``."""
    return max(0.0, lam + lr * (mean_cost - threshold))


class LagrangeMultiplier:
    """λ of one run: updated once per PPO step, saved in checkpoints so a resume is exact.

    Kept beside the KL controllers' shape (``value``, ``update``, ``state_dict``).
    """

    def __init__(self, init: float, lr: float, threshold: float) -> None:
        if not (init >= 0 and math.isfinite(init)):
            raise ValueError(f"lambda_init must be a finite number >= 0, got {init}")
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"lambda_lr must be a finite number >= 0, got {lr}")
        if not 0 <= threshold < 1:
            raise ValueError(f"cost_threshold is a mean P(unsafe), in [0, 1); got {threshold}")
        self.value = float(init)
        self.lr = float(lr)
        self.threshold = float(threshold)

    def update(self, mean_prob: float) -> None:
        self.value = lagrange_step(self.value, mean_prob, self.threshold, self.lr)

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


ScoreFn = Callable[..., list[float]]


class ConstrainedReward:
    """A TRL ``reward_funcs`` entry scoring r − λ·σ(c), with λ learned across calls.

    ``reward`` and ``cost`` are reward functions of TRL's signature, typically two
    :class:`~ppo_client.reward_client.RewardClient` objects naming a reward model (normalized)
    and a cost model (raw: its sign means safe or unsafe). After each call, λ steps on that
    batch's mean P(unsafe); ``lambda_lr=0`` keeps a fixed penalty. When TRL passes
    ``log_metric`` (GRPO/RLOO do), λ, the mean P(unsafe) and the unsafe share are logged under
    ``safety/``.
    """

    def __init__(
        self,
        reward: ScoreFn,
        cost: ScoreFn,
        *,
        cost_threshold: float = 0.1,
        lambda_init: float = 1.0,
        lambda_lr: float = 0.0,
    ) -> None:
        self.reward = reward
        self.cost = cost
        self.multiplier = LagrangeMultiplier(lambda_init, lambda_lr, cost_threshold)
        # TRL names a reward function by ``__name__`` in its logs ("rewards/<name>/mean").
        self.__name__ = "reward_minus_lambda_cost"

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = self.reward(prompts, completions, **kwargs)
        costs = self.cost(prompts, completions, **kwargs)
        probs = [unsafe_probability(c) for c in costs]
        lam = self.multiplier.value
        scores = penalized_scores(rewards, probs, lam)
        mean_prob = sum(probs) / len(probs) if probs else 0.0
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("safety/lambda", lam)
            log_metric("safety/cost", mean_prob)
            log_metric("safety/unsafe_share", unsafe_share(costs))
        if probs:
            self.multiplier.update(mean_prob)
        return scores
