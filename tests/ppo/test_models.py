"""Real models: tiny random Qwen2, Llama and GPT-2 with chat templates and PAD == EOS, LoRA,
bf16 autocast, micro-batches, a separate critic, and the CLI end to end against the service."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ppo_client.cli import main
from ppo_client.models import load_causal_lm, stop_and_pad_ids
from ppo_client.rollout import encode_prompts
from ppo_client.trainer import PPOTrainer

from .conftest import TINY_ARCHS, make_config
from .test_trainer import letter_reward, read_log

ARCHS = sorted(TINY_ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompts_follow_the_chat_template_with_one_bos(tiny_chat_models, arch) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_chat_models[arch])
    _, bos, _, _, _ = TINY_ARCHS[arch]
    chat, chat_mask = encode_prompts(tok, ["the day", "a kind friend"], 8, chat_template=True)
    plain, plain_mask = encode_prompts(tok, ["the day"], 8, chat_template=False)
    text = tok.decode(chat[0][chat_mask[0].bool()])
    assert text == tok.apply_chat_template(
        [{"role": "user", "content": "the day"}], add_generation_prompt=True, tokenize=False
    )
    assert tok.decode(plain[0][plain_mask[0].bool()]) == (bos or "") + "the day"
    if bos:  # the template writes BOS, the tokenizer must not add a second one
        assert chat[0].tolist().count(tok.bos_token_id) == 1
        assert plain[0].tolist().count(tok.bos_token_id) == 1


def test_a_long_prompt_loses_its_oldest_words_not_the_template(tiny_chat_models) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_chat_models["qwen2"])
    long = "the night is cold and cruel , a storm brings sad news"
    query, mask = encode_prompts(tok, [long], 4, chat_template=True)
    text = tok.decode(query[0][mask[0].bool()])
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert "sad news" in text and "cold" not in text


@pytest.mark.parametrize("arch", ARCHS)
def test_every_eos_of_the_generation_config_stops_and_pad_may_equal_eos(
    tiny_chat_models, arch
) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_chat_models[arch])
    _, _, eos, turn_end, _ = TINY_ARCHS[arch]
    stops, pad = stop_and_pad_ids(tok, load_causal_lm(str(tiny_chat_models[arch])), "eos")
    assert stops == sorted({tok.convert_tokens_to_ids(eos), tok.convert_tokens_to_ids(turn_end)})
    assert pad == tok.pad_token_id == tok.eos_token_id


@pytest.mark.parametrize("lora", [0, 4], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_trains_two_steps_through_the_cli(
    tiny_chat_models, prompts_file, reward_url, tmp_path, arch, lora
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--policy",
            str(tiny_chat_models[arch]),
            "--prompts",
            str(prompts_file),
            "--reward-url",
            reward_url,
            "--output",
            str(out),
            "--steps",
            "2",
            "--rollout-batch-size",
            "4",
            "--num-minibatches",
            "2",
            "--ppo-epochs",
            "1",
            "--score-chunk-size",
            "2",
            "--response-length",
            "6",
            "--num-eval-samples",
            "2",
            "--learning-rate",
            "1e-2",
            "--lora-rank",
            str(lora),
            "--no-progress",
        ]
    )
    assert code == 0
    log = read_log(out)
    assert [r["step"] for r in log] == [0, 1, 2]
    assert log[1]["objective/kl"] == 0.0  # the first rollout: policy == reference
    assert log[2]["objective/kl"] != 0.0
    assert (out / "samples.md").is_file() and (out / "tensorboard").is_dir()
    start = AutoModelForCausalLM.from_pretrained(tiny_chat_models[arch])
    trained = AutoModelForCausalLM.from_pretrained(out)  # merged when LoRA: a plain directory
    moved = [
        not torch.equal(a, b)
        for a, b in zip(start.state_dict().values(), trained.state_dict().values(), strict=True)
    ]
    assert any(moved)
    assert (out / "adapter" / "adapter_config.json").is_file() == bool(lora)


def test_lora_reference_is_the_policy_with_adapters_disabled(
    tiny_chat_models, prompts_file, tmp_path
) -> None:
    base = tiny_chat_models["llama"]
    cfg = make_config(
        base, prompts_file, tmp_path / "run", steps=1, lora_rank=4, learning_rate=5e-2
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        assert trainer.nets.reference is None  # no second copy of the weights
        trainable = sum(p.numel() for p in trainer.trainable)
        total = sum(p.numel() for p in trainer.policy.parameters())
        assert trainable < total / 2
        query, qmask = trainer._encode(["the day", "a storm"])
        response = torch.tensor([[5, 6, 7], [8, 9, 10]])
        rmask = torch.ones_like(response)
        ref_before = trainer.nets.reference_logprobs(query, qmask, response, rmask, 0.7)
        rollout, scores, _ = trainer.collect(0)
        trainer.update(rollout, scores)  # train() would end by merging the adapter in
        ref_after = trainer.nets.reference_logprobs(query, qmask, response, rmask, 0.7)
        policy_after = trainer.policy(query, qmask, response, rmask, 0.7)[0]
    assert torch.equal(ref_before, ref_after)  # disabling the adapter gives the start back
    assert not torch.allclose(policy_after, ref_after)


def test_bf16_autocast_on_cpu(tiny_chat_models, prompts_file, tmp_path) -> None:
    """bf16 compute really runs, and the invariants hold: policy == reference before any update
    (KL exactly 0), a learning rate of 0 keeps the ratio at 1 up to bf16 rounding."""
    cfg = make_config(
        tiny_chat_models["qwen2"],
        prompts_file,
        tmp_path / "run",
        steps=1,
        precision="bf16",
        learning_rate=0.0,
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        query, qmask = trainer._encode(["the day", "a storm"])
        response = torch.tensor([[5, 6, 7], [8, 9, 10]])
        rmask = torch.ones_like(response)
        fp32 = trainer.policy(query, qmask, response, rmask, 0.7)[0]
        with trainer.autocast():
            bf16 = trainer.policy(query, qmask, response, rmask, 0.7)[0]
        (stats,) = trainer.train()
    assert not torch.equal(fp32, bf16)
    torch.testing.assert_close(fp32, bf16, atol=0.1, rtol=0.05)
    assert stats["objective/kl"] == 0.0
    assert stats["val/ratio"] == pytest.approx(1.0, abs=1e-2)

    lora = make_config(
        tiny_chat_models["llama"],
        prompts_file,
        tmp_path / "lora",
        steps=1,
        precision="bf16",
        lora_rank=4,
    )
    with PPOTrainer(lora, reward_fn=letter_reward) as trainer:
        dtypes = {n: p.dtype for n, p in trainer.policy.named_parameters()}
        (stats,) = trainer.train()
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n and "value_head" not in n} == {
        torch.bfloat16
    }
    assert stats["objective/kl"] == 0.0


def test_micro_batches_accumulate_to_the_same_update(
    tiny_chat_models, prompts_file, tmp_path
) -> None:
    weights = []
    for micro in (0, 1):
        cfg = make_config(
            tiny_chat_models["gpt2"],
            prompts_file,
            tmp_path / f"m{micro}",
            steps=1,
            micro_batch_size=micro,
            max_grad_norm=0.0,
            learning_rate=1e-2,
        )
        with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
            trainer.train()
            weights.append({k: v.clone() for k, v in trainer.policy.state_dict().items()})
    start = load_causal_lm(str(tiny_chat_models["gpt2"])).state_dict()
    assert not torch.equal(weights[0]["lm.lm_head.weight"], start["lm_head.weight"])
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_changes_memory_not_the_update(
    tiny_chat_models, prompts_file, tmp_path
) -> None:
    weights = []
    for checkpointing in (False, True):
        cfg = make_config(
            tiny_chat_models["llama"],
            prompts_file,
            tmp_path / str(checkpointing),
            steps=1,
            lora_rank=4,
            gradient_checkpointing=checkpointing,
            learning_rate=1e-2,
        )
        with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
            assert trainer.policy.lm.is_gradient_checkpointing == checkpointing
            rollout, scores, _ = trainer.collect(0)
            trainer.update(rollout, scores)
            weights.append({k: v.clone() for k, v in trainer.policy.state_dict().items()})
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-6, rtol=1e-5)


def test_response_logits_are_the_full_forward_sliced(tiny_chat_models) -> None:
    """The LM head runs on response positions only, and gives what a full forward gives there."""
    from ppo_client.rollout import position_ids_from_mask, response_logits

    lm = load_causal_lm(str(tiny_chat_models["qwen2"]))
    tok = AutoTokenizer.from_pretrained(tiny_chat_models["qwen2"])
    query, qmask = encode_prompts(tok, ["the day", "a kind friend"], 8, chat_template=True)
    response = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    rmask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    logits, _ = response_logits(lm, query, qmask, response, rmask, temperature=0.5)
    ids, mask = torch.cat([query, response], 1), torch.cat([qmask, rmask], 1)
    full = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    P = query.shape[1]
    torch.testing.assert_close(logits, full[:, P - 1 : -1].float() / 0.5)
    assert logits.shape == (2, 4, lm.config.vocab_size)


def test_separate_critic_trains_and_is_saved(tiny_chat_models, prompts_file, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = make_config(
        tiny_chat_models["llama"], prompts_file, out, steps=2, critic="policy", learning_rate=1e-2
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        assert trainer.policy.critic is not None
        assert trainer.policy.critic is not trainer.policy.lm.model
        critic_before = {k: v.clone() for k, v in trainer.policy.critic.state_dict().items()}
        trainer.train()
        critic_after = trainer.policy.critic.state_dict()
    assert any(not torch.equal(critic_before[k], critic_after[k]) for k in critic_before)
    assert (out / "critic" / "config.json").is_file()
    resumed = make_config(
        tiny_chat_models["llama"], prompts_file, out, steps=3, critic="policy", resume=True
    )
    with PPOTrainer(resumed, reward_fn=letter_reward) as trainer:
        for key, value in trainer.policy.critic.state_dict().items():
            assert torch.equal(value, critic_after[key]), key


def test_lora_resume_continues_from_the_adapter(tiny_chat_models, prompts_file, tmp_path) -> None:
    common = dict(lora_rank=4, learning_rate=1e-2, checkpoint_every=1)
    straight = make_config(
        tiny_chat_models["qwen2"], prompts_file, tmp_path / "a", steps=2, **common
    )
    with PPOTrainer(straight, reward_fn=letter_reward) as trainer:
        trainer.train()
        expected = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    first = make_config(tiny_chat_models["qwen2"], prompts_file, tmp_path / "b", steps=1, **common)
    with PPOTrainer(first, reward_fn=letter_reward) as trainer:
        trainer.train()
    second = make_config(
        tiny_chat_models["qwen2"], prompts_file, tmp_path / "b", steps=2, resume=True, **common
    )
    with PPOTrainer(second, reward_fn=letter_reward) as trainer:
        assert trainer.step == 1
        trainer.train()
        resumed = trainer.policy.state_dict()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], atol=0, rtol=0)


def test_sample_loads_the_merged_lora_policy_and_a_cached_hub_id(
    tiny_chat_models, prompts_file, tmp_path, capsys, monkeypatch
) -> None:
    """``ppo-client sample --policy DIR --n N`` on a LoRA run's output, then ``--policy ORG/NAME``
    from a Hugging Face cache laid out as the hub client writes it, read with no network."""
    import huggingface_hub

    out = tmp_path / "run"
    cfg = make_config(tiny_chat_models["llama"], prompts_file, out, steps=1, lora_rank=4)
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        trainer.train()
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny--llama" / "snapshots" / ("0" * 40)
    shutil.copytree(out, snapshot, ignore=shutil.ignore_patterns("checkpoint", "tensorboard"))
    (cache / "models--tiny--llama" / "refs").mkdir()
    (cache / "models--tiny--llama" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    n_prompts = len(prompts_file.read_text().splitlines())
    for policy in (str(out), "tiny/llama"):
        samples = tmp_path / "samples.jsonl"
        args = ["sample", "--policy", policy, "--prompts", str(prompts_file), "--n", "2"]
        assert main([*args, "--output", str(samples)]) == 0
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        assert len(rows) == 2 * n_prompts
        assert [r["prompt"] for r in rows[:2]] == [rows[0]["prompt"]] * 2
    bad = ["sample", "--policy", "tiny/missing", "--prompts", str(prompts_file)]
    with pytest.raises(SystemExit) as exit_info:
        main([*bad, "--output", str(tmp_path / "x.jsonl")])
    assert exit_info.value.code == 2
    assert "neither a directory nor a model in the local Hugging Face cache" in (
        capsys.readouterr().err
    )


def test_fp16_trains_with_loss_scaling(tiny_chat_models, prompts_file, tmp_path) -> None:
    cfg = make_config(
        tiny_chat_models["gpt2"], prompts_file, tmp_path / "run", steps=2, precision="fp16"
    )
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        assert trainer.scaler.is_enabled()
        history = trainer.train()
    assert history[0]["objective/kl"] == 0.0 and history[1]["objective/kl"] != 0.0
    assert all(torch.isfinite(torch.tensor(s["loss/policy_avg"])) for s in history)
