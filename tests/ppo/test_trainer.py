"""The PPO trainer: invariants, exact resume, and end-to-end runs against the real service."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ppo_client.config import ConfigError
from ppo_client.trainer import PPOTrainer, RunStopped, prompt_indices

from .conftest import make_config, start_service


def letter_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Deterministic and cheap: exact-equality tests need the same reward for the same text."""
    return [r.count("a") / 4 - 0.5 for r in responses]


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def test_lr_zero_keeps_ratio_at_one_and_nothing_clips(tiny_policy, prompts_file, tmp_path) -> None:
    cfg = make_config(tiny_policy, prompts_file, tmp_path / "run", steps=2, learning_rate=0.0)
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        # Sampling draws on the model's device (a CPU generator crashes a CUDA run).
        assert trainer.generator.device == next(trainer.policy.parameters()).device
        before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        history = trainer.train()
        after = trainer.policy.state_dict()
    for stats in history:
        assert stats["val/ratio"] == pytest.approx(1.0, abs=1e-6)
        assert stats["policy/clipfrac_avg"] == 0.0
        assert stats["policy/approxkl_avg"] == pytest.approx(0.0, abs=1e-9)
        assert stats["objective/kl"] == 0.0  # the policy never moves away from the reference
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_kl_is_zero_at_step_zero_and_training_moves_the_policy(
    tiny_policy, prompts_file, tmp_path
) -> None:
    cfg = make_config(tiny_policy, prompts_file, tmp_path / "run", steps=2, learning_rate=1e-2)
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        history = trainer.train()
    assert history[0]["objective/kl"] == 0.0
    assert history[1]["objective/kl"] != 0.0
    assert history[0]["policy/approxkl_avg"] > 0.0
    for key in ("reward/raw", "policy/entropy_avg", "loss/value_avg", "time/train", "lr"):
        assert all(key in s for s in history)


@pytest.mark.slow
def test_resume_continues_exactly(tiny_policy, prompts_file, tmp_path) -> None:
    """4 steps straight == 2 steps, stop, resume 2 more: same logs, same weights, bitwise."""
    common = dict(
        steps=4,
        checkpoint_every=2,
        adaptive_kl=True,
        kl_coef=0.2,
        kl_target=0.01,
        kl_horizon=100.0,
        learning_rate=1e-2,
    )
    straight = make_config(tiny_policy, prompts_file, tmp_path / "a", **common)
    with PPOTrainer(straight, reward_fn=letter_reward) as trainer:
        trainer.train()
        expected = trainer.policy.state_dict()

    first = make_config(tiny_policy, prompts_file, tmp_path / "b", **{**common, "steps": 2})
    with PPOTrainer(first, reward_fn=letter_reward) as trainer:
        trainer.train()
    second = make_config(tiny_policy, prompts_file, tmp_path / "b", **common, resume=True)
    with PPOTrainer(second, reward_fn=letter_reward) as trainer:
        assert trainer.step == 2
        trainer.train()
        resumed = trainer.policy.state_dict()

    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    drop_timing = [
        {k: v for k, v in s.items() if not k.startswith("time/") and k != "eps"}
        for s in read_log(tmp_path / "a")
    ]
    assert [
        {k: v for k, v in s.items() if not k.startswith("time/") and k != "eps"}
        for s in read_log(tmp_path / "b")
    ] == drop_timing
    assert (
        drop_timing[-1]["objective/kl_coef"] != 0.2
    )  # the adaptive β moved, and resumed with its state


def test_a_finished_run_continues_for_more_steps_from_its_state(
    tiny_policy, prompts_file, tmp_path
) -> None:
    """The labeling loop (issue 14) trains a round, retrains the reward model, then continues
    the same run with ``--resume --steps`` more: weights, step and β carry over, while the KL
    target and the horizon follow the new configuration (not the first round's)."""
    out = tmp_path / "run"
    adaptive = dict(adaptive_kl=True, kl_coef=0.2, kl_target=0.01, learning_rate=1e-2)
    with PPOTrainer(
        make_config(tiny_policy, prompts_file, out, **adaptive), reward_fn=letter_reward
    ) as trainer:
        trainer.train()
        weights = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        beta = trainer.kl_ctl.value
    assert beta != 0.2

    def new_reward(prompts: list[str], responses: list[str]) -> list[float]:
        return [r.count("e") / 4 - 0.5 for r in responses]

    more = make_config(
        tiny_policy, prompts_file, out, **{**adaptive, "kl_target": 3.0}, steps=200, resume=True
    )
    with PPOTrainer(more, reward_fn=new_reward) as trainer:
        assert trainer.step == 2
        assert trainer.kl_ctl.value == beta
        assert trainer.kl_ctl.target == 3.0
        assert trainer.kl_ctl.horizon == more.rollout_batch_size
        resumed = trainer.policy.state_dict()
        assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_prompt_order_is_a_pure_function_of_the_step() -> None:
    first = [prompt_indices(10, s, 4, seed=1) for s in range(5)]
    assert first == [prompt_indices(10, s, 4, seed=1) for s in range(5)]
    flat = [i for step in first for i in step]
    assert sorted(flat[:10]) == list(range(10))  # each pass covers every prompt once
    assert flat[:10] != flat[10:20]  # and reshuffles between passes


def test_end_to_end_against_the_real_reward_service(
    tiny_policy, prompts_file, reward_url, tmp_path
) -> None:
    out = tmp_path / "run"
    cfg = make_config(
        tiny_policy, prompts_file, out, reward_url=[reward_url], steps=3, num_eval_samples=4
    )
    with PPOTrainer(cfg) as trainer:
        history = trainer.train()
    log = read_log(out)
    assert [s["step"] for s in log] == [0, 1, 2, 3]  # step 0: held-out evaluation before PPO
    for record in (log[0], log[-1]):
        assert 0 < record["eval/distinct_1"] <= 1 and record["eval/response_length"] > 0
    assert log[0]["eval/kl"] == 0.0 and log[-1]["eval/kl"] != 0.0
    assert all(s["reward/raw_std"] > 0 for s in history)  # real, varying scores came back
    assert all(s["time/reward_wait"] >= 0 for s in history)
    assert (out / "plot.png").stat().st_size > 10_000
    table = (out / "samples.md").read_text()
    assert table.count("\n") == 2 + 4
    trained = AutoModelForCausalLM.from_pretrained(out)  # the output is a plain HF directory
    assert trained.config.n_layer == 2


@pytest.mark.slow
def test_before_after_samples_use_held_out_prompts(tiny_policy, prompts_file, tmp_path) -> None:
    out = tmp_path / "run"
    file_prompts = [json.loads(line)["prompt"] for line in prompts_file.read_text().splitlines()]
    cfg = make_config(tiny_policy, prompts_file, out, steps=1, num_eval_samples=2)
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        trainer.train()
        trained_on = set(trainer.prompts)
    shown = [json.loads(line)["prompt"] for line in (out / "samples_before.jsonl").open()]
    assert shown == file_prompts[-2:] and not trained_on & set(shown)

    held_out = tmp_path / "held_out.txt"
    held_out.write_text("a lovely storm\nthe sad friend\nnews of the night\n")
    cfg = make_config(
        tiny_policy,
        prompts_file,
        tmp_path / "b",
        steps=1,
        num_eval_samples=2,
        eval_prompts=str(held_out),
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        trainer.train()
        assert trainer.prompts == file_prompts  # with a held-out file, training keeps them all
    shown = [json.loads(line)["prompt"] for line in (tmp_path / "b" / "samples_after.jsonl").open()]
    assert shown == ["a lovely storm", "the sad friend"]


@pytest.mark.slow
def test_service_going_away_loses_no_completed_step(
    tiny_policy, prompts_file, tiny_model_repo, reward_url, tmp_path
) -> None:
    out = tmp_path / "run"
    with start_service(tiny_model_repo, tmp_path) as (doomed_url, proc):
        cfg = make_config(
            tiny_policy,
            prompts_file,
            out,
            reward_url=[doomed_url],
            steps=6,
            checkpoint_every=100,
            reward_retry_budget=1.0,
            reward_timeout=2.0,
        )

        def kill_after_first_step() -> None:
            while not (out / "log.jsonl").exists():
                time.sleep(0.05)
            proc.kill()

        threading.Thread(target=kill_after_first_step, daemon=True).start()
        with PPOTrainer(cfg) as trainer, pytest.raises(RunStopped, match="--resume"):
            trainer.train()
    done = len(read_log(out))
    assert 1 <= done < 6
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == done  # checkpoint_every=100, yet the stop saved the last step

    resumed = make_config(
        tiny_policy, prompts_file, out, reward_url=[reward_url], steps=6, resume=True
    )
    with PPOTrainer(resumed) as trainer:
        trainer.train()
    assert [s["step"] for s in read_log(out)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rollout_batch_size": 7}, "multiple of num_minibatches"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"reward_url": ["localhost:8000"]}, "http://"),
        ({"kl_estimator": "k2"}, "kl_estimator"),
        ({"policy": "/nonexistent"}, "neither a directory"),
    ],
)
def test_bad_config_fails_fast_with_the_field_name(
    tiny_policy, prompts_file, tmp_path, overrides, message
) -> None:
    cfg = dataclasses.replace(make_config(tiny_policy, prompts_file, tmp_path), **overrides)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_resume_without_checkpoint_is_a_clear_error(tiny_policy, prompts_file, tmp_path) -> None:
    cfg = make_config(tiny_policy, prompts_file, tmp_path / "empty", resume=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        PPOTrainer(cfg, reward_fn=letter_reward)


def test_early_stop_entropy_bonus_and_samples_per_prompt(
    tiny_policy, prompts_file, tmp_path
) -> None:
    cfg = make_config(
        tiny_policy,
        prompts_file,
        tmp_path / "run",
        steps=1,
        ppo_epochs=4,
        target_approx_kl=1e-12,  # any update exceeds it: one epoch, then stop
        learning_rate=1e-2,
        entropy_coef=0.01,
        samples_per_prompt=2,
        lr_schedule="linear",
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        rollout, _, _ = trainer.collect(0)
        (stats,) = trainer.train()
    assert stats["policy/epochs"] == 1
    assert stats["lr"] == pytest.approx(1e-2)  # the lr this step used; the schedule then decays
    assert rollout.prompts[0::2] == rollout.prompts[1::2]  # each prompt sampled twice
    assert len(set(rollout.prompts)) == 4


def test_entropy_keeps_its_graph_only_for_an_entropy_bonus(tiny_policy) -> None:
    from ppo_client.models import PolicyWithValueHead, load_causal_lm, load_tokenizer
    from ppo_client.rollout import encode_prompts

    policy = PolicyWithValueHead(load_causal_lm(str(tiny_policy)))
    query, qmask = encode_prompts(load_tokenizer(str(tiny_policy)), ["the day"], 8)
    response = torch.tensor([[5, 6, 7]])
    rmask = torch.ones_like(response)
    assert not policy(query, qmask, response, rmask, 0.7)[2].requires_grad
    assert policy(query, qmask, response, rmask, 0.7, entropy_grad=True)[2].requires_grad


def test_eval_every_logs_held_out_metrics_to_jsonl_and_tensorboard(
    tiny_policy, prompts_file, tmp_path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text('{"prompt": "a lovely day"}\n{"prompt": "cold news"}\n{"prompt": "a"}\n')
    cfg = make_config(
        tiny_policy,
        prompts_file,
        out,
        steps=3,
        eval_every=2,
        eval_prompts=str(held_out),
        tensorboard=True,
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        trainer.train()
    log = read_log(out)
    assert [r["step"] for r in log if "eval/reward" in r] == [0, 2, 3]  # before, every 2, end
    assert all(0 <= r["eval/distinct_2"] <= 1 for r in log if "eval/distinct_2" in r)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("objective/kl", "objective/scores", "policy/approxkl_avg", "eval/reward", "lr"):
        assert tag in tags
    assert [e.step for e in events.Scalars("eval/kl")] == [0, 2, 3]
