"""λ's math against a naive loop, and the TRL reward function built on it."""

from __future__ import annotations

import math
import random

import pytest

from ppo_client.safety import (
    ConstrainedReward,
    LagrangeMultiplier,
    lagrange_step,
    penalized_scores,
    unsafe_probability,
    unsafe_share,
)


def naive_lambdas(costs_per_step, init, lr, threshold):
    """Dual ascent written out: step on the violation, then project onto λ >= 0."""
    lam, out = init, []
    for costs in costs_per_step:
        out.append(lam)
        violation = sum(costs) / len(costs) - threshold
        lam = lam + lr * violation
        if lam < 0:
            lam = 0.0
    return out, lam


def test_multiplier_follows_the_naive_dual_ascent():
    rng = random.Random(0)
    batches = [[rng.gauss(0.5 - 0.05 * step, 1.0) for _ in range(16)] for step in range(40)]
    expected, final = naive_lambdas(batches, init=0.3, lr=0.2, threshold=0.1)
    multiplier = LagrangeMultiplier(init=0.3, lr=0.2, threshold=0.1)
    seen = []
    for costs in batches:
        seen.append(multiplier.value)
        multiplier.update(sum(costs) / len(costs))
    assert seen == pytest.approx(expected, abs=1e-12)
    assert multiplier.value == pytest.approx(final, abs=1e-12)
    assert max(seen) > 0.3 and min(seen) == 0.0  # it rose, then the projection held it at 0


def test_step_grows_on_violation_and_is_projected_at_zero():
    assert lagrange_step(1.0, mean_cost=0.5, threshold=0.0, lr=0.1) == pytest.approx(1.05)
    assert lagrange_step(1.0, mean_cost=-0.5, threshold=0.0, lr=0.1) == pytest.approx(0.95)
    assert lagrange_step(0.01, mean_cost=-5.0, threshold=0.0, lr=0.1) == 0.0
    assert lagrange_step(2.0, mean_cost=9.0, threshold=0.0, lr=0.0) == 2.0  # lr 0: fixed λ


def test_penalized_scores_and_unsafe_share():
    assert penalized_scores([1.0, 0.5], [2.0, -1.0], 0.5) == [0.0, 1.0]
    assert unsafe_share([0.2, -0.1, 0.0, 3.0]) == 0.5  # 0 is the boundary, not unsafe
    assert math.isnan(unsafe_share([]))
    with pytest.raises(ValueError, match="2 rewards but 1 costs"):
        penalized_scores([1.0, 2.0], [1.0], 1.0)


def test_unsafe_probability_is_the_logistic_of_the_cost_without_overflow():
    for cost in (-30.0, -2.5, -0.1, 0.0, 0.7, 4.0, 30.0):
        assert unsafe_probability(cost) == pytest.approx(1 / (1 + math.exp(-cost)), rel=1e-12)
    assert unsafe_probability(-1e6) == 0.0 and unsafe_probability(1e6) == 1.0


def test_extra_safe_text_earns_almost_no_bonus():
    """What drove a fixed λ to empty responses: −λ·c pays for ever lower cost; −λ·σ(c) barely."""
    lam, typical_safe, extremely_safe, unsafe = 1.0, -2.5, -12.0, 1.0
    raw_gain = (
        penalized_scores([0.0], [extremely_safe], lam)[0]
        - penalized_scores([0.0], [typical_safe], lam)[0]
    )
    probs = [unsafe_probability(c) for c in (typical_safe, extremely_safe, unsafe)]
    safe_score, extreme_score, unsafe_score = penalized_scores([0.0] * 3, probs, lam)
    assert raw_gain == pytest.approx(9.5)
    assert 0 < extreme_score - safe_score < 0.08
    assert safe_score - unsafe_score > 0.6  # the pull away from unsafe text stays


@pytest.mark.parametrize(
    ("init", "lr", "threshold"),
    [(-1.0, 0.1, 0.0), (1.0, -0.1, 0.0), (1.0, 0.1, math.inf), (1.0, 0.1, -0.2), (1, 0.1, 1.0)],
)
def test_multiplier_refuses_impossible_settings(init, lr, threshold):
    with pytest.raises(ValueError):
        LagrangeMultiplier(init, lr, threshold)


def test_multiplier_state_round_trips_exactly():
    a = LagrangeMultiplier(0.7, 0.13, 0.2)
    for cost in (0.9, 0.4, 1.7):
        a.update(cost)
    b = LagrangeMultiplier(0.0, 0.13, 0.2)
    b.load_state_dict(a.state_dict())
    a.update(0.33)
    b.update(0.33)
    assert a.value == b.value


def test_trl_reward_function_combines_and_learns_lambda():
    def reward(prompts, completions, **kwargs):
        return [float(len(c)) for c in completions]

    def cost(prompts, completions, **kwargs):
        return [1.0 if "!" in c else -1.0 for c in completions]

    logged: dict[str, float] = {}
    fn = ConstrainedReward(reward, cost, cost_threshold=0.2, lambda_init=1.0, lambda_lr=0.5)
    scores = fn(["p", "p"], ["ok", "no!"], log_metric=logged.__setitem__, extra_column=[1, 2])
    sigma = lambda c: 1 / (1 + math.exp(-c))  # noqa: E731
    assert scores == pytest.approx([2.0 - 1.0 * sigma(-1.0), 3.0 - 1.0 * sigma(1.0)])
    # σ(−1) + σ(1) = 1: the batch's mean P(unsafe) is ½.
    assert logged == pytest.approx(
        {"safety/lambda": 1.0, "safety/cost": 0.5, "safety/unsafe_share": 0.5}
    )
    assert fn.multiplier.value == pytest.approx(1.0 + 0.5 * (0.5 - 0.2))
    assert fn.__name__ == "reward_minus_lambda_cost"

    fixed = ConstrainedReward(reward, cost, lambda_init=2.0)  # lambda_lr 0: a fixed penalty
    fixed(["p"], ["no!"])
    assert fixed.multiplier.value == 2.0
