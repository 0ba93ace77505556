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

That integral alone swings: λ keeps rising while the batch is over D and keeps falling while
it is under, so it overshoots in both directions (the demo's λ fell by half over 30 steps in
which the policy sat just under D, and the policy drifted back over). Stooke, Achiam & Abbeel
(2020, "Responsive Safety in RL by PID Lagrangian Methods") damp it with a proportional and a
one-sided derivative term on the same error e = mean p − D:

    I ← max(0, I + K_I·e)        λ = max(0, K_P·e + I + K_D·max(0, e − e_prev))

K_I = η and I starts at λ's initial value, so K_P = K_D = 0 is the plain dual ascent above.
K_P answers a violation at once instead of after it has accumulated, and takes λ back down as
soon as the batch is safe again, without unwinding the integral; K_D reacts to a rising cost
before it crosses D and never lowers λ (a falling cost is left to the other two terms).

With η = 0, λ stays at its initial value: PPO on a fixed penalty r − λ·p (K_P and K_D then act
on nothing to damp and are not applied). The math is small pure functions over floats (λ is
one number per run), and the module imports no torch, so TRL users get the same combination
as a reward function (:class:`ConstrainedReward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

# The PID gains' defaults, chosen on the safety demo (docs/safety.md, "Choosing the gains").
LAMBDA_KP = 40.0
LAMBDA_KD = 20.0


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


def pid_lambda(
    integral: float,
    error: float,
    prev_error: float | None,
    *,
    kp: float,
    ki: float,
    kd: float,
) -> tuple[float, float]:
    """One PID-Lagrangian step on the violation ``error``: the new (λ, integral).

    The integral is the dual ascent of :func:`lagrange_step` (projected, so a long safe stretch
    cannot bank credit below 0); the derivative is one-sided and absent on the first step.
    """
    integral = lagrange_step(integral, error, 0.0, ki)
    rise = 0.0 if prev_error is None else max(0.0, error - prev_error)
    return max(0.0, kp * error + integral + kd * rise), integral


class LagrangeMultiplier:
    """λ of one run: updated once per PPO step, saved in checkpoints so a resume is exact.

    Kept beside the KL controllers' shape (``value``, ``update``, ``state_dict``).
    """

    def __init__(
        self,
        init: float,
        lr: float,
        threshold: float,
        kp: float = 0.0,
        kd: float = 0.0,
    ) -> None:
        for name, x in (
            ("lambda_init", init),
            ("lambda_lr", lr),
            ("lambda_kp", kp),
            ("lambda_kd", kd),
        ):
            if not (x >= 0 and math.isfinite(x)):
                raise ValueError(f"{name} must be a finite number >= 0, got {x}")
        if not 0 <= threshold < 1:
            raise ValueError(f"cost_threshold is a mean P(unsafe), in [0, 1); got {threshold}")
        self.value = float(init)
        self.integral = float(init)
        self.prev_error: float | None = None
        self.lr = float(lr)
        # A fixed penalty (η = 0) stays fixed: damping terms without an integral would only
        # jitter it around lambda_init.
        self.kp, self.kd = (float(kp), float(kd)) if lr > 0 else (0.0, 0.0)
        self.threshold = float(threshold)

    def update(self, mean_prob: float) -> None:
        error = mean_prob - self.threshold
        self.value, self.integral = pid_lambda(
            self.integral, error, self.prev_error, kp=self.kp, ki=self.lr, kd=self.kd
        )
        self.prev_error = error

    def state_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "integral": self.integral, "prev_error": self.prev_error}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.value = float(state["value"])  # type: ignore[arg-type]
        # Checkpoints from before the PID terms hold λ alone, which was then the integral.
        self.integral = float(state.get("integral", self.value))  # type: ignore[arg-type]
        prev = state.get("prev_error")
        self.prev_error = None if prev is None else float(prev)


ScoreFn = Callable[..., list[float]]


class ConstrainedReward:
    """A TRL ``reward_funcs`` entry scoring r − λ·σ(c), with λ learned across calls.

    ``reward`` and ``cost`` are reward functions of TRL's signature, typically two
    :class:`~ppo_client.reward_client.RewardClient` objects naming a reward model (normalized)
    and a cost model (raw: its sign means safe or unsafe). After each call, λ steps on that
    batch's mean P(unsafe), damped by ``lambda_kp`` and ``lambda_kd``; ``lambda_lr=0`` keeps a
    fixed penalty. When TRL passes ``log_metric`` (GRPO/RLOO do), λ, the mean P(unsafe) and the
    unsafe share are logged under ``safety/``.
    """

    def __init__(
        self,
        reward: ScoreFn,
        cost: ScoreFn,
        *,
        cost_threshold: float = 0.1,
        lambda_init: float = 1.0,
        lambda_lr: float = 0.0,
        lambda_kp: float = LAMBDA_KP,
        lambda_kd: float = LAMBDA_KD,
    ) -> None:
        self.reward = reward
        self.cost = cost
        self.multiplier = LagrangeMultiplier(
            lambda_init, lambda_lr, cost_threshold, lambda_kp, lambda_kd
        )
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
