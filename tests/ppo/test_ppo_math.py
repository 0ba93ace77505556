"""Every PPO helper against a naive per-element loop written from the paper's formula."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ppo_client import ppo_math as pm
from ppo_client.config import PPOConfig


def ragged(B: int = 5, T: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random values and a mask whose rows end at different lengths (≥ 1 token each)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    return x, mask


def kept(x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    return [float(v) for v, m in zip(x.flatten(), mask.flatten(), strict=True) if m]


def test_masked_mean_and_var_match_a_loop_over_real_tokens() -> None:
    x, mask = ragged()
    values = kept(x, mask)
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    assert pm.masked_mean(x, mask).item() == pytest.approx(mean, rel=1e-12)
    assert pm.masked_var(x, mask).item() == pytest.approx(var, rel=1e-12)


def test_masked_mean_along_a_dimension_is_per_row() -> None:
    x, mask = ragged()
    rows = pm.masked_mean(x, mask, dim=1)
    for b in range(x.shape[0]):
        real = kept(x[b], mask[b])
        assert rows[b].item() == pytest.approx(sum(real) / len(real), rel=1e-12)


def test_padding_values_do_not_leak_into_statistics() -> None:
    x, mask = ragged()
    poisoned = torch.where(mask.bool(), x, torch.full_like(x, 1e6))
    assert torch.allclose(pm.masked_whiten(poisoned, mask) * mask, pm.masked_whiten(x, mask) * mask)


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_a_loop(shift_mean: bool) -> None:
    x, mask = ragged(seed=3)
    values = kept(x, mask)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) + 1e-8)
    out = pm.masked_whiten(x, mask, shift_mean=shift_mean)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if mask[b, t]:
                expected = (x[b, t].item() - mean) / std + (0.0 if shift_mean else mean)
                assert out[b, t].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    whitened = kept(pm.masked_whiten(x, mask, shift_mean=True), mask)
    assert sum(whitened) / len(whitened) == pytest.approx(0.0, abs=1e-12)


def test_reward_whitening_that_keeps_the_mean_is_a_per_token_length_bonus() -> None:
    """Why ``whiten_rewards`` is off by default: x/s + m(1 − 1/s) adds m(1 − 1/s) to every token,
    so two responses with the same score and no KL get returns that differ with their length."""
    scores = torch.tensor([1.0, 1.0, 3.0, 3.0], dtype=torch.float64)
    rows = [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    mask = torch.tensor(rows, dtype=torch.float64)
    rewards, _ = pm.shaped_rewards(scores, torch.zeros_like(mask), mask, beta=0.1)
    whitened = pm.masked_whiten(rewards, mask, shift_mean=False)
    values = kept(rewards, mask)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) + 1e-8)
    per_token = mean * (1 - 1 / std)
    returns = (whitened * mask).sum(1)
    for b, length in enumerate(mask.sum(1).tolist()):
        assert returns[b].item() == pytest.approx(scores[b].item() / std + length * per_token)
    assert returns[0].item() != pytest.approx(returns[1].item())  # same score, other length
    assert (rewards * mask).sum(1).tolist() == scores.tolist()  # unwhitened: the score, exactly


def test_reward_whitening_is_off_by_default() -> None:
    assert PPOConfig().whiten_rewards is False


def test_kl_estimators_match_their_formulas() -> None:
    logp, ref = ragged(seed=1)[0], ragged(seed=2)[0]
    k1 = pm.kl_penalty(logp, ref, "k1")
    k3 = pm.kl_penalty(logp, ref, "k3")
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            log_r = ref[b, t].item() - logp[b, t].item()  # log(π_ref / π)
            assert k1[b, t].item() == pytest.approx(-log_r, rel=1e-12)
            assert k3[b, t].item() == pytest.approx(math.exp(log_r) - 1 - log_r, rel=1e-9)
    assert (k3 >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        pm.kl_penalty(logp, ref, "k2")  # type: ignore[arg-type]


def test_k1_and_k3_both_estimate_the_true_kl() -> None:
    """Sampled from π, both estimators average to KL(π ‖ π_ref) computed exactly."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    exact = (p * (p / q).log()).sum().item()
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[tokens], q.log()[tokens]
    for estimator in ("k1", "k3"):
        assert pm.kl_penalty(logp, logq, estimator).mean().item() == pytest.approx(exact, rel=0.03)


def test_approx_kl_estimates_kl_from_the_old_policy_to_the_new() -> None:
    """Tokens come from the old policy (the rollout); approx_kl must average to KL(old ‖ new)."""
    g = torch.Generator().manual_seed(1)
    old = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64) * 1.5, 0)
    new = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64) * 1.5, 0)
    exact = (old * (old / new).log()).sum().item()
    tokens = torch.multinomial(old, 200_000, replacement=True, generator=g)
    logp_old, logp_new = old.log()[tokens], new.log()[tokens]
    ones = torch.ones_like(logp_old)
    _, stats = pm.policy_loss(logp_new, logp_old, ones, ones, cliprange=0.2)
    assert stats["approx_kl"].item() == pytest.approx(exact, rel=0.03)


def test_shaped_rewards_put_the_score_on_the_last_real_token() -> None:
    kl, mask = ragged(seed=4)
    scores = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0], dtype=torch.float64)
    beta = 0.1
    rewards, non_score = pm.shaped_rewards(scores, kl, mask, beta)
    for b in range(kl.shape[0]):
        last = int(mask[b].sum().item()) - 1
        for t in range(kl.shape[1]):
            expected = -beta * kl[b, t].item() if mask[b, t] else 0.0
            if t == last:
                expected += scores[b].item()
            assert rewards[b, t].item() == pytest.approx(expected, abs=1e-12)
            assert non_score[b, t].item() == pytest.approx(
                -beta * kl[b, t].item() * mask[b, t].item(), abs=1e-12
            )


def naive_gae(rewards, values, length, gamma, lam):
    """One sequence, straight from Schulman et al.: δ_t = r_t + γV_{t+1} − V_t, A_t = Σ (γλ)^l δ."""
    deltas = []
    for t in range(length):
        next_v = values[t + 1] if t + 1 < length else 0.0
        deltas.append(rewards[t] + gamma * next_v - values[t])
    adv = []
    for t in range(length):
        adv.append(sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, length)))
    return adv, [a + v for a, v in zip(adv, values[:length], strict=True)]


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_the_naive_sum(gamma: float, lam: float) -> None:
    rewards, mask = ragged(seed=5)
    values = ragged(seed=6)[0]
    adv, ret = pm.gae(rewards, values, mask, gamma, lam)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum().item())
        exp_adv, exp_ret = naive_gae(rewards[b].tolist(), values[b].tolist(), n, gamma, lam)
        assert adv[b, :n].tolist() == pytest.approx(exp_adv, rel=1e-9, abs=1e-12)
        assert ret[b, :n].tolist() == pytest.approx(exp_ret, rel=1e-9, abs=1e-12)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()


def test_policy_loss_matches_a_loop_and_reports_clipping() -> None:
    old, mask = ragged(seed=7)
    new = old + 0.3 * ragged(seed=8)[0]
    adv = ragged(seed=9)[0]
    eps = 0.2
    loss, stats = pm.policy_loss(new, old, adv, mask, eps)
    terms, clipped = [], []
    for b in range(old.shape[0]):
        for t in range(old.shape[1]):
            if not mask[b, t]:
                continue
            ratio = math.exp(new[b, t].item() - old[b, t].item())
            a = adv[b, t].item()
            unclipped, clip = -a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps)
            terms.append(max(unclipped, clip))
            clipped.append(float(clip > unclipped))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    assert stats["clipfrac"].item() == pytest.approx(sum(clipped) / len(clipped), rel=1e-9)
    assert 0 < stats["clipfrac"].item() < 1


def test_policy_loss_at_ratio_one_is_minus_mean_advantage_and_never_clips() -> None:
    logp, mask = ragged(seed=10)
    adv = ragged(seed=11)[0]
    loss, stats = pm.policy_loss(logp, logp.clone(), adv, mask, 0.2)
    assert loss.item() == pytest.approx(-pm.masked_mean(adv, mask).item(), rel=1e-12)
    assert stats["clipfrac"].item() == 0.0
    assert stats["approx_kl"].item() == 0.0
    assert stats["ratio"].item() == 1.0


def test_value_loss_matches_a_loop() -> None:
    old, mask = ragged(seed=12)
    new = old + ragged(seed=13)[0]
    returns = ragged(seed=14)[0]
    c = 0.2
    loss, clipfrac = pm.value_loss(new, old, returns, mask, c)
    terms, clipped = [], []
    for b in range(old.shape[0]):
        for t in range(old.shape[1]):
            if not mask[b, t]:
                continue
            v, v_old, r = new[b, t].item(), old[b, t].item(), returns[b, t].item()
            v_clip = v_old + min(max(v - v_old, -c), c)
            terms.append(0.5 * max((v - r) ** 2, (v_clip - r) ** 2))
            clipped.append(float((v_clip - r) ** 2 > (v - r) ** 2))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    assert clipfrac.item() == pytest.approx(sum(clipped) / len(clipped), rel=1e-9)


def test_entropy_of_uniform_and_one_hot() -> None:
    V = 16
    assert pm.entropy_from_logits(torch.zeros(V)).item() == pytest.approx(math.log(V))
    one_hot = torch.full((V,), -1e4)
    one_hot[3] = 0
    assert pm.entropy_from_logits(one_hot).item() == pytest.approx(0.0, abs=1e-6)


def test_explained_variance_bounds() -> None:
    returns, mask = ragged(seed=15)
    assert pm.explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    constant = torch.full_like(returns, pm.masked_mean(returns, mask).item())
    assert pm.explained_variance(constant, returns, mask).item() == pytest.approx(0.0, abs=1e-9)


def test_adapted_kl_coef_is_a_clipped_proportional_step_in_log_space() -> None:
    assert pm.adapted_kl_coef(0.1, 12.0, 6.0, 64, 64, 0.1) == pytest.approx(0.1 * math.exp(0.2))
    assert pm.adapted_kl_coef(0.4, 5.4, 6.0, 64, 64, 0.1) == pytest.approx(0.4 * math.exp(-0.1))
    assert pm.adapted_kl_coef(0.4, 5.4, 6.0, 32, 64, 0.1) == pytest.approx(0.4 * math.exp(-0.05))
    up = pm.adapted_kl_coef(0.4, 6.6, 6.0, 64, 64, 0.1)
    assert pm.adapted_kl_coef(up, 5.4, 6.0, 64, 64, 0.1) == pytest.approx(0.4)  # log space


def test_beta_never_falls_below_its_floor() -> None:
    beta = 1.0
    for _ in range(100):
        beta = pm.adapted_kl_coef(beta, 0.0, 3.0, 64, 64, floor=0.1)
    assert beta == 0.1


def test_the_default_controller_doubles_beta_within_four_steps_above_target() -> None:
    """The demo's overshoot came from a β that could rise 3.3 % a step: at 1.5× the target the
    default horizon (one step's samples) must double it in 4 steps."""
    ctl = pm.AdaptiveKLController(0.1, 3.0, horizon=64, floor=0.1)
    for _ in range(4):
        ctl.update(current_kl=4.5, n_steps=64)
    assert ctl.value > 0.2
    restored = pm.AdaptiveKLController(1.0, 3.0, horizon=64, floor=0.1)
    restored.load_state_dict(ctl.state_dict())
    assert restored == ctl


def test_default_kl_horizon_is_sized_to_the_run() -> None:
    assert PPOConfig().kl_horizon is None


def test_fixed_kl_controller_never_moves() -> None:
    ctl = pm.FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=1000)
    assert ctl.value == 0.05


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_factor_warms_up_then_follows_its_schedule(schedule: str) -> None:
    warmup, total = 4, 20
    factors = [pm.lr_factor(s, warmup, total, schedule) for s in range(total)]
    assert factors[:warmup] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    after = factors[warmup:]
    if schedule == "constant":
        assert after == [1.0] * len(after)
    else:
        assert after[0] == 1.0 and all(a > b for a, b in itertools.pairwise(after))
        assert after[-1] == pytest.approx(
            1 / 16 if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * 15 / 16))
        )
    assert pm.lr_factor(0, 0, total, "linear") == 1.0
