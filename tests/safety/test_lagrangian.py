"""λ's math against a naive loop, and the TRL reward function built on it."""

from __future__ import annotations

import math
import random

import pytest

from ppo_client.safety import (
    LAMBDA_KP,
    ConstrainedReward,
    LagrangeMultiplier,
    lagrange_step,
    penalized_scores,
    pid_lambda,
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


def naive_pid(mean_costs, init, kp, ki, kd, threshold):
    """Stooke et al.'s Algorithm 2 written out: the λ each step uses, then the final state."""
    integral, prev, lam, used = init, None, init, []
    for cost in mean_costs:
        used.append(lam)
        error = cost - threshold
        integral += ki * error
        if integral < 0:
            integral = 0.0
        derivative = 0.0
        if prev is not None and error > prev:
            derivative = error - prev
        lam = kp * error + integral + kd * derivative
        if lam < 0:
            lam = 0.0
        prev = error
    return used, lam, integral, prev


def mean_costs(seed, steps=60):
    """A batch mean that climbs over the threshold, then falls under it, with noise."""
    rng = random.Random(seed)
    return [0.1 + 0.08 * math.sin(step / 6) + rng.gauss(0, 0.03) for step in range(steps)]


@pytest.mark.parametrize(("kp", "kd"), [(20.0, 10.0), (7.5, 0.0), (0.0, 30.0)])
def test_pid_multiplier_follows_the_naive_loop(kp, kd):
    costs = mean_costs(seed=int(kp + kd))
    used, final, integral, prev = naive_pid(costs, init=1.0, kp=kp, ki=5.0, kd=kd, threshold=0.1)
    multiplier = LagrangeMultiplier(init=1.0, lr=5.0, threshold=0.1, kp=kp, kd=kd)
    seen = []
    for cost in costs:
        seen.append(multiplier.value)
        multiplier.update(cost)
    assert seen == pytest.approx(used, abs=1e-12)
    assert (multiplier.value, multiplier.integral) == pytest.approx((final, integral), abs=1e-12)
    assert multiplier.prev_error == pytest.approx(prev, abs=1e-15)
    assert max(seen) > 2.0 and len(set(seen)) == len(seen)  # λ rose and moved every step


def test_pid_without_proportional_and_derivative_is_the_plain_dual_ascent():
    """K_P = K_D = 0 is today's update, bit for bit, step by step."""
    costs = mean_costs(seed=3)
    pid = LagrangeMultiplier(init=1.0, lr=5.0, threshold=0.1, kp=0.0, kd=0.0)
    lam = 1.0
    for cost in costs:
        pid.update(cost)
        lam = lagrange_step(lam, cost, 0.1, 5.0)
        assert pid.value == lam == pid.integral


def test_pid_terms_damp_the_swing():
    """Each term does its job on one violation: P answers at once, D only to a rise."""
    lam, integral = pid_lambda(1.0, 0.05, None, kp=20.0, ki=5.0, kd=10.0)
    assert integral == pytest.approx(1.25) and lam == pytest.approx(1.25 + 20 * 0.05)
    lam, _ = pid_lambda(1.0, 0.05, 0.01, kp=0.0, ki=5.0, kd=10.0)
    assert lam == pytest.approx(1.25 + 10 * 0.04)
    lam, _ = pid_lambda(1.0, 0.05, 0.09, kp=0.0, ki=5.0, kd=10.0)  # a falling cost: no D term
    assert lam == pytest.approx(1.25)
    lam, integral = pid_lambda(0.1, -0.05, None, kp=20.0, ki=5.0, kd=10.0)
    assert (lam, integral) == (0.0, 0.0)  # both projections


def test_a_fixed_penalty_stays_fixed_whatever_the_gains():
    fixed = LagrangeMultiplier(init=2.0, lr=0.0, threshold=0.1, kp=20.0, kd=10.0)
    for cost in mean_costs(seed=5):
        fixed.update(cost)
        assert fixed.value == 2.0


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


@pytest.mark.parametrize(("kp", "kd"), [(-1.0, 0.0), (0.0, -0.5), (math.nan, 0.0), (0.0, math.inf)])
def test_multiplier_refuses_impossible_gains(kp, kd):
    with pytest.raises(ValueError, match="lambda_k"):
        LagrangeMultiplier(1.0, 5.0, 0.1, kp=kp, kd=kd)


def test_multiplier_state_round_trips_exactly():
    a = LagrangeMultiplier(0.7, 0.13, 0.2, kp=3.0, kd=2.0)
    for cost in (0.9, 0.4, 0.7):
        a.update(cost)
    b = LagrangeMultiplier(0.0, 0.13, 0.2, kp=3.0, kd=2.0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    for cost in (0.33, 0.5, 0.1):
        a.update(cost)
        b.update(cost)
        assert a.value == b.value and a.integral == b.integral


def test_a_checkpoint_from_before_the_pid_terms_resumes_as_dual_ascent():
    """It held λ alone, which was the integral: the next step continues from it."""
    old = LagrangeMultiplier(0.0, 0.5, 0.2)
    old.load_state_dict({"value": 1.5})
    old.update(0.4)
    assert old.value == pytest.approx(1.5 + 0.5 * 0.2) == old.integral


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
    # The default gains apply: integral 1 + 0.5·0.3, plus K_P·0.3 (no rise yet on a first step).
    assert fn.multiplier.value == pytest.approx(1.0 + 0.5 * 0.3 + LAMBDA_KP * 0.3)
    assert fn.multiplier.integral == pytest.approx(1.0 + 0.5 * 0.3)
    assert fn.__name__ == "reward_minus_lambda_cost"

    fixed = ConstrainedReward(reward, cost, lambda_init=2.0)  # lambda_lr 0: a fixed penalty
    fixed(["p"], ["no!"])
    assert fixed.multiplier.value == 2.0
