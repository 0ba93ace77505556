"""PPO-Lagrangian in the trainer: λ per step, exact resume, the real service, and no change
without a cost model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ppo.conftest import make_config
from service_process import running_server

from ppo_client.cli import main as ppo_client
from ppo_client.safety import pid_lambda
from ppo_client.trainer import PPOTrainer


def letter_reward(prompts: list[str], responses: list[str]) -> list[float]:
    return [r.count("a") / 4 - 0.5 for r in responses]


def letter_cost(prompts: list[str], responses: list[str]) -> list[float]:
    """Deterministic: 'unsafe' (cost > 0) when a response holds more than two e's."""
    return [r.count("e") / 2 - 1.0 for r in responses]


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def untimed(stats: dict) -> dict:
    """The step's statistics less those measured with a clock (time/*, eps: samples per s)."""
    return {k: v for k, v in stats.items() if not k.startswith("time/") and k != "eps"}


def test_without_a_cost_model_nothing_changes(tiny_policy, prompts_file, tmp_path) -> None:
    """No safety keys, no cost client; and a cost model at λ ≡ 0 trains the very same policy."""
    plain_cfg = make_config(tiny_policy, prompts_file, tmp_path / "plain", steps=2)
    with PPOTrainer(plain_cfg, reward_fn=letter_reward) as trainer:
        assert trainer.cost_scorer is None and trainer.lagrange is None
        plain = trainer.train()
        plain_weights = trainer.policy.state_dict()
    assert not any(k.startswith("safety/") for s in plain for k in s)

    zero_cfg = make_config(
        tiny_policy, prompts_file, tmp_path / "zero", steps=2, lambda_init=0.0, lambda_lr=0.0
    )
    with PPOTrainer(zero_cfg, reward_fn=letter_reward, cost_fn=letter_cost) as trainer:
        zero = trainer.train()
        zero_weights = trainer.policy.state_dict()
    assert all(s["safety/lambda"] == 0.0 for s in zero)
    for a, b in zip(plain, zero, strict=True):
        assert untimed(a) == {k: v for k, v in untimed(b).items() if not k.startswith("safety/")}
    assert all(torch.equal(plain_weights[k], zero_weights[k]) for k in plain_weights)


@pytest.mark.parametrize(("kp", "kd"), [(0.0, 0.0), (2.0, 1.5)])
def test_lambda_steps_on_each_batch_mean_cost(tiny_policy, prompts_file, tmp_path, kp, kd) -> None:
    """K_P = K_D = 0: dual ascent on the batch mean; otherwise its PID form, step by step."""
    cfg = make_config(
        tiny_policy,
        prompts_file,
        tmp_path / "run",
        steps=4,
        cost_threshold=0.3,
        lambda_init=0.5,
        lambda_lr=0.3,
        lambda_kp=kp,
        lambda_kd=kd,
        missing_eos_score=None,
    )
    with PPOTrainer(cfg, reward_fn=letter_reward, cost_fn=letter_cost) as trainer:
        history = trainer.train()
        final = trainer.lagrange.value
    assert history == [{**s, "step": s["step"]} for s in read_log(tmp_path / "run")]
    lam, integral, prev = 0.5, 0.5, None
    for stats in history:
        assert stats["safety/lambda"] == pytest.approx(lam, abs=1e-6)
        assert 0.0 <= stats["safety/unsafe_share"] <= 1.0
        # PPO's score is r − λ·σ(c) (every response kept its score: missing_eos_score is None).
        penalized = stats["reward/raw"] - lam * stats["safety/cost"]
        assert stats["objective/scores"] == pytest.approx(penalized, abs=1e-5)
        error = stats["safety/cost"] - 0.3
        lam, integral = pid_lambda(integral, error, prev, kp=kp, ki=0.3, kd=kd)
        prev = error
        assert stats["safety/lambda_integral"] == pytest.approx(integral, abs=1e-6)
    assert final == pytest.approx(lam, abs=1e-6)
    assert len({round(s["safety/lambda"], 6) for s in history}) > 1  # λ moved


def test_resume_restores_lambda_exactly(tiny_policy, prompts_file, tmp_path) -> None:
    """4 steps straight == 2 steps, stop, resume 2 more: same λ, logs and weights, bitwise."""
    common = dict(
        steps=4,
        checkpoint_every=2,
        learning_rate=1e-2,
        cost_threshold=0.2,
        lambda_init=0.25,
        lambda_lr=0.7,
        lambda_kp=2.0,
        lambda_kd=1.0,
    )
    straight = make_config(tiny_policy, prompts_file, tmp_path / "a", **common)
    with PPOTrainer(straight, reward_fn=letter_reward, cost_fn=letter_cost) as trainer:
        trainer.train()
        expected_weights = trainer.policy.state_dict()
        expected_lambda = trainer.lagrange.value

    first = make_config(tiny_policy, prompts_file, tmp_path / "b", **{**common, "steps": 2})
    with PPOTrainer(first, reward_fn=letter_reward, cost_fn=letter_cost) as trainer:
        trainer.train()
        state_at_stop = trainer.lagrange.state_dict()
    second = make_config(tiny_policy, prompts_file, tmp_path / "b", **common, resume=True)
    with PPOTrainer(second, reward_fn=letter_reward, cost_fn=letter_cost) as trainer:
        assert trainer.step == 2
        assert trainer.lagrange.state_dict() == state_at_stop
        assert trainer.lagrange.value == state_at_stop["value"] != 0.25
        trainer.train()
        resumed_weights = trainer.policy.state_dict()
        assert trainer.lagrange.value == expected_lambda

    assert [untimed(s) for s in read_log(tmp_path / "b")] == [
        untimed(s) for s in read_log(tmp_path / "a")
    ]
    for key in expected_weights:
        assert torch.equal(expected_weights[key], resumed_weights[key]), key


def test_cost_model_from_the_service_through_the_cli(
    tiny_policy, prompts_file, safety_model_repo, tmp_path
) -> None:
    """`ppo-client train --cost-model NAME --cost-threshold D` against a real server serving a
    reward model and a cost model; the cost arrives raw (normalizing would move its sign)."""
    out = tmp_path / "run"
    # Every response keeps its score, so PPO's score is exactly r − λ·σ(c) (a flag cannot say None).
    config = tmp_path / "ppo.json"
    config.write_text(json.dumps({"missing_eos_score": None}))
    with running_server(
        safety_model_repo, tmp_path, "--backend", "onnxruntime", "--default-model", "tiny"
    ) as server:
        code = ppo_client(
            [
                "train",
                *("--policy", str(tiny_policy), "--prompts", str(prompts_file)),
                *("--output", str(out), "--reward-url", server.url, "--reward-model", "tiny"),
                *("--cost-model", "tiny-cost", "--cost-threshold", "0.5"),
                *("--lambda-init", "2.0", "--lambda-lr", "0.0", "--config", str(config)),
                *("--lambda-kp", "20", "--lambda-kd", "10"),  # nothing to damp in a fixed λ
                *("--steps", "2", "--rollout-batch-size", "8", "--num-minibatches", "2"),
                *("--ppo-epochs", "1", "--score-chunk-size", "4", "--response-length", "8"),
                *("--num-eval-samples", "0", "--no-progress"),
            ]
        )
    assert code == 0
    log = read_log(out)
    assert [s["step"] for s in log] == [1, 2]
    for stats in log:
        assert stats["safety/lambda"] == 2.0  # lambda_lr 0: a fixed penalty
        assert stats["objective/scores"] == pytest.approx(
            stats["reward/raw"] - 2.0 * stats["safety/cost"], abs=1e-5
        )
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["lagrange"]["value"] == state["lagrange"]["integral"] == 2.0
    assert state["lagrange"]["prev_error"] == pytest.approx(log[-1]["safety/cost"] - 0.5)


def test_config_refuses_a_negative_multiplier(tiny_policy, prompts_file, tmp_path) -> None:
    from ppo_client.config import ConfigError

    with pytest.raises(ConfigError, match="lambda_init must be a finite number >= 0"):
        make_config(tiny_policy, prompts_file, tmp_path, lambda_init=-1.0).validate()
    with pytest.raises(ConfigError, match="lambda_lr"):
        make_config(tiny_policy, prompts_file, tmp_path, lambda_lr=float("nan")).validate()
    with pytest.raises(ConfigError, match="lambda_kp must be a finite number >= 0"):
        make_config(tiny_policy, prompts_file, tmp_path, lambda_kp=-2.0).validate()
    with pytest.raises(ConfigError, match="lambda_kd"):
        make_config(tiny_policy, prompts_file, tmp_path, lambda_kd=float("inf")).validate()


@pytest.mark.parametrize("threshold", [-0.1, 1.0, float("nan")])
def test_config_refuses_a_threshold_that_is_no_probability(
    tiny_policy, prompts_file, tmp_path, threshold
) -> None:
    from ppo_client.config import ConfigError

    with pytest.raises(ConfigError, match=r"cost_threshold is a mean P\(unsafe\), in \[0, 1\)"):
        make_config(tiny_policy, prompts_file, tmp_path, cost_threshold=threshold).validate()
