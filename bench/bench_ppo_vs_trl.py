"""PPO vs TRL: our trainer and TRL's PPOTrainer, same policy, prompts, reward and settings.

One run trains the same starting policy twice, N PPO steps each, one trainer after the other on
the same machine, then samples both results (and the starting policy) on held-out prompts with one
sampler and one reward model. It reports seconds per PPO step and the reward after N steps.

Set-up, once (TRL's PPOTrainer lives in ``trl.experimental.ppo`` of trl <= 1.12.0 only, so it
gets its own git-ignored venv next to the project's):

    python3 -m venv .bench-venv-trl
    .bench-venv-trl/bin/pip install torch==2.13.0
    .bench-venv-trl/bin/pip install trl==1.12.0 transformers==5.24.0 onnxruntime pydantic

Run (policy from ``ppo-client pretrain``, model repository from ``reward-service export``):

    .venv/bin/python bench/bench_ppo_vs_trl.py --policy runs/demo/policy \
        --reward-repo runs/demo/models --prompts runs/demo/data/prompts.jsonl \
        --heldout runs/demo/data/heldout_prompts.jsonl --steps 20 --output runs/bench-ppo-vs-trl

The same on both sides: the policy weights and tokenizer, the prompts (the first
``--train-prompts`` of the file, tokenized without special tokens and cut to their last
``prompt_max_tokens`` tokens), every hyper-parameter in ``HYPER`` (mapped field by field in
:func:`trl_config_kwargs`), the reward (the same ONNX model, tokenizer and template, normalized
with the manifest's mean/std; a response without EOS scores ``missing_eos_score``), torch threads
and the machine. What differs, by construction of each trainer:

- Reward path: ours asks the reward service over HTTP (``RewardClient``), scoring chunk k while
  chunk k+1 generates. TRL needs an in-process ``nn.Module`` on the policy's token ids, so it gets
  :class:`ServedRewardOnPolicyTokens`: it decodes the ids back to (prompt, response) text and
  scores them with ``reward_service.scorer.LoadedModel``, the very code and graph the service
  runs, synchronously, inside TRL's rollout loop.
- Critic: TRL trains a separate value model (a second copy of the policy trunk with a scalar
  head); ours uses whatever ``ppo_client.trainer`` does (see docs/architecture.md).
- Details inside each trainer's loop that no setting controls (prompt sampling order, how
  minibatches are drawn) follow each trainer's own code.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".bench-venv-trl" / "bin" / "python"

#: The shared PPO settings, in our PPOConfig's names. One rollout of ``rollout_batch_size``
#: prompts, ``ppo_epochs`` passes of ``num_minibatches`` optimizer steps each.
HYPER: dict[str, Any] = {
    "rollout_batch_size": 64,
    "num_minibatches": 4,
    "ppo_epochs": 4,
    "learning_rate": 3e-5,
    "adam_eps": 1e-5,
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,  # TRL's PPO loop never clips gradients
    "temperature": 0.7,
    "response_length": 24,
    "prompt_max_tokens": 32,
    "missing_eos_score": -1.0,
    "kl_estimator": "k1",
    "kl_coef": 0.05,
    "adaptive_kl": False,  # TRL's PPO has a fixed β only
    "gamma": 1.0,
    "lam": 0.95,
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "whiten_rewards": True,
    "whiten_advantages": True,  # TRL always whitens advantages, with centring
    "reward_normalize": True,
    "seed": 1,
}


def trl_config_kwargs(hyper: dict[str, Any], steps: int, output: Path) -> dict[str, Any]:
    """TRL ``PPOConfig`` fields for ``hyper``.

    TRL ties the rollout size to ``per_device_train_batch_size * gradient_accumulation_steps``
    and steps the optimizer once per ``gradient_accumulation_steps`` micro-batches. With
    accumulation 1 and ``num_mini_batches`` = ours, each minibatch is one micro-batch and one
    optimizer step, as in our trainer.
    """
    batch = hyper["rollout_batch_size"]
    return {
        "output_dir": str(output),
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "num_mini_batches": hyper["num_minibatches"],
        "local_rollout_forward_batch_size": batch,
        "total_episodes": steps * batch,
        "num_ppo_epochs": hyper["ppo_epochs"],
        "learning_rate": hyper["learning_rate"],
        "lr_scheduler_type": "constant",
        "adam_epsilon": hyper["adam_eps"],
        "weight_decay": hyper["weight_decay"],
        "temperature": hyper["temperature"],
        "response_length": hyper["response_length"],
        "stop_token": "eos",
        # The missing-EOS rule lives in the reward adapter (a replacement score, as ours), not
        # in TRL's subtractive penalty.
        "missing_eos_penalty": None,
        "kl_estimator": hyper["kl_estimator"],
        "kl_coef": hyper["kl_coef"],
        "gamma": hyper["gamma"],
        "lam": hyper["lam"],
        "cliprange": hyper["cliprange"],
        "cliprange_value": hyper["cliprange_value"],
        "vf_coef": hyper["vf_coef"],
        "whiten_rewards": hyper["whiten_rewards"],
        "seed": hyper["seed"],
        # TRL's defaults that would change the comparison: bf16 autocast, activation
        # checkpointing, sample tables mid-run, checkpoints, hub and tracker reporting.
        "bf16": False,
        "gradient_checkpointing": False,
        "num_sample_generations": 0,
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "use_cpu": True,
        "disable_tqdm": True,
    }


def read_prompts(path: Path, limit: int) -> list[str]:
    """Prompts from JSONL (``prompt`` field) or plain text lines, as our trainer reads them."""
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        prompts.append(json.loads(line)["prompt"] if path.suffix == ".jsonl" else line)
        if len(prompts) == limit:
            break
    return prompts


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "n": len(values),
    }


# -- TRL side (runs in .bench-venv-trl) --------------------------------------------------------


def run_trl_worker(spec_path: Path) -> None:
    """Trains with TRL's PPOTrainer and writes one JSON line per PPO step."""
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from reward_service.scorer import LoadedModel

    spec = json.loads(spec_path.read_text())
    hyper, output = spec["hyper"], Path(spec["output"])
    torch.manual_seed(hyper["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    prompts = read_prompts(Path(spec["prompts"]), spec["train_prompts"])
    ids = [
        tokenizer(p, add_special_tokens=False)["input_ids"][-hyper["prompt_max_tokens"] :]
        for p in prompts
    ]
    text_of_ids = {tuple(i): p for i, p in zip(ids, prompts, strict=True)}
    dataset = Dataset.from_dict({"input_ids": ids})

    scorer = LoadedModel.open(Path(spec["reward_model_dir"]))
    reward_model = ServedRewardOnPolicyTokens(
        scorer, tokenizer, text_of_ids, hyper["missing_eos_score"], hyper["reward_normalize"]
    )
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
    ref_policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
    value_model = AutoModelForSequenceClassification.from_pretrained(spec["policy"], num_labels=1)

    log = (output / "steps.jsonl").open("w")
    snapshot_every = spec.get("snapshot_every", 0)

    class StepClock(TrainerCallback):
        """Stamps each PPO step as TRL logs it (once per step with ``logging_steps=1``), and
        saves the policy every ``snapshot_every`` steps (TRL trains ``policy`` in place)."""

        def __init__(self) -> None:
            self.last = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "objective/scores" in logs:
                now = time.perf_counter()
                record = {
                    "step": state.global_step,
                    "seconds": now - self.last,
                    "reward": logs["objective/scores"],
                    "kl": logs["objective/kl"],
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                if snapshot_every and state.global_step % snapshot_every == 0:
                    policy.save_pretrained(output / f"step-{state.global_step}")
                    tokenizer.save_pretrained(output / f"step-{state.global_step}")
                self.last = time.perf_counter()

    trainer = PPOTrainer(
        args=PPOConfig(**trl_config_kwargs(hyper, spec["steps"], output / "trainer")),
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset,
        eval_dataset=dataset.select(range(8)),
        callbacks=[StepClock()],
    )
    trainer.train()
    log.close()
    trainer.save_model(str(output / "policy"))
    tokenizer.save_pretrained(output / "policy")


class DecodeAndScore(torch.nn.Module):
    """Stands where TRL expects a reward model's trunk: policy token ids in, one score per row out.

    TRL reads the score at each row's last real token of ``score(hidden_states[-1])``; every
    position carries the row's score, so whichever position it reads is right.
    """

    def __init__(
        self,
        scorer: Any,
        tokenizer: Any,
        text_of_ids: dict[tuple[int, ...], str],
        missing_eos_score: float | None,
        normalize: bool,
    ) -> None:
        super().__init__()
        self.scorer, self.tokenizer, self.text_of_ids = scorer, tokenizer, text_of_ids
        self.longest_prompt = max(len(k) for k in text_of_ids)
        self.missing_eos_score, self.normalize = missing_eos_score, normalize

    def split(self, ids: list[int]) -> tuple[str, list[int]]:
        """Prompt text and response ids: the longest known prompt that prefixes ``ids``."""
        for k in range(min(len(ids), self.longest_prompt), 0, -1):
            prompt = self.text_of_ids.get(tuple(ids[:k]))
            if prompt is not None:
                return prompt, ids[k:]
        raise ValueError("a rollout row starts with no known prompt")

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
    ) -> SimpleNamespace:
        eos = self.tokenizer.eos_token_id
        items, finished = [], []
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt, response = self.split([t for t, m in zip(row, mask, strict=True) if m])
            finished.append(eos in response)
            if eos in response:
                response = response[: response.index(eos)]
            items.append((prompt, self.tokenizer.decode(response, skip_special_tokens=True)))
        scores = self.scorer.score(items)
        if self.normalize:
            scores = self.scorer.normalize(scores)
        values = torch.tensor(scores, dtype=torch.float32)
        if self.missing_eos_score is not None:
            values[~torch.tensor(finished)] = self.missing_eos_score
        hidden = values.view(-1, 1, 1).expand(-1, input_ids.shape[1], 1)  # (B, T, 1)
        return SimpleNamespace(hidden_states=(hidden,))


class ServedRewardOnPolicyTokens(torch.nn.Module):
    """The served reward model as the in-process ``nn.Module`` TRL's PPO insists on."""

    base_model_prefix = "backbone"

    def __init__(self, *args: Any) -> None:
        super().__init__()
        self.backbone = DecodeAndScore(*args)
        self.score = torch.nn.Identity()


# -- our side and the shared evaluation (run in the project venv) -----------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(reward_repo: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``reward-service serve`` on a free loopback port, once it reports ready."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "REWARD_SERVICE_MODEL_REPO": str(reward_repo),
        "REWARD_SERVICE_HOST": "127.0.0.1",
        "REWARD_SERVICE_PORT": str(port),
        "REWARD_SERVICE_GRPC_PORT": "0",  # HTTP only: no clash on gRPC's fixed default port
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "reward_service.cli", "serve"],
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    # `auto` gates and times each runtime before binding: minutes on a busy 2-core machine.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"reward service exited early; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"reward service not ready after 600 s; see {log_path}")


def run_logged(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> float:
    """Runs ``cmd`` with its output in ``log_path``; returns its wall-clock seconds."""
    start = time.perf_counter()
    with log_path.open("w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise SystemExit(f"{cmd[0]} ... failed with exit code {code}; see {log_path}")
    return time.perf_counter() - start


def run_trl(args: argparse.Namespace, out: Path) -> tuple[list[dict[str, Any]], float]:
    spec = {
        "policy": str(args.policy),
        "prompts": str(args.prompts),
        "train_prompts": args.train_prompts,
        "reward_model_dir": str(reward_model_dir(args.reward_repo, args.reward_model)),
        "steps": args.steps,
        "hyper": HYPER,
        "output": str(out),
        "snapshot_every": getattr(args, "snapshot_every", 0),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [str(TRL_PYTHON), __file__, "trl-worker", str(out / "spec.json")]
    wall = run_logged(cmd, out / "trl.log", env)
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    return steps, wall


def run_ours_worker(spec_path: Path) -> None:
    """Trains with our PPOTrainer; stamps each step as it is logged, as the TRL side does."""
    from ppo_client.config import PPOConfig
    from ppo_client.trainer import PPOTrainer

    spec = json.loads(spec_path.read_text())
    output = Path(spec["output"])
    steps_log = (output / "steps.jsonl").open("w")
    snapshot_every = spec.get("snapshot_every", 0)

    class StampedTrainer(PPOTrainer):
        """Stamps each step as it is logged; saves the policy every ``snapshot_every`` steps."""

        last = time.perf_counter()

        def _log(self, stats: dict[str, float]) -> None:
            now = time.perf_counter()
            record = {
                "step": stats["step"],
                "seconds": now - StampedTrainer.last,
                "reward": stats["objective/scores"],
                "kl": stats["objective/kl"],
                "reward_wait_share": stats["time/reward_wait_share"],
            }
            steps_log.write(json.dumps(record) + "\n")
            steps_log.flush()
            super()._log(stats)
            if snapshot_every and stats["step"] % snapshot_every == 0:
                self.save_policy(output / f"step-{stats['step']}")
            StampedTrainer.last = time.perf_counter()

    config = PPOConfig(
        policy=spec["policy"],
        prompts=spec["prompts"],
        output=spec["output"],
        reward_url=[spec["reward_url"]],
        reward_model=spec["reward_model"],
        steps=spec["steps"],
        checkpoint_every=spec["steps"],
        num_eval_samples=0,
        progress=False,
        **spec["hyper"],
    )
    with StampedTrainer(config) as trainer:
        StampedTrainer.last = time.perf_counter()
        trainer.train()
    steps_log.close()


def run_ours(
    args: argparse.Namespace, out: Path, url: str, prompts_file: Path
) -> tuple[list[dict[str, Any]], float]:
    spec = {
        "policy": str(args.policy),
        "prompts": str(prompts_file),
        "reward_url": url,
        "reward_model": args.reward_model,
        "steps": args.steps,
        "hyper": {**HYPER, **getattr(args, "ours_only", {})},
        "output": str(out),
        "snapshot_every": getattr(args, "snapshot_every", 0),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "ours_spec.json").write_text(json.dumps(spec, indent=2))
    cmd = [sys.executable, __file__, "ours-worker", str(out.parent / "ours_spec.json")]
    wall = run_logged(cmd, out.parent / "ours.log", {**os.environ, "PYTHONPATH": str(ROOT)})
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    return steps, wall


def reward_model_dir(repo: Path, name: str | None) -> Path:
    """The newest version folder of ``name`` (or of the repository's only model)."""
    names = [name] if name else sorted(p.name for p in repo.iterdir() if p.is_dir())
    if len(names) != 1:
        raise SystemExit(f"{repo} holds several models ({', '.join(names)}): pass --reward-model")
    versions = [p for p in (repo / names[0]).iterdir() if p.name.isdigit()]
    if not versions:
        raise SystemExit(f"{repo / names[0]} has no version folder")
    return max(versions, key=lambda p: int(p.name))


@torch.no_grad()
def sample_and_measure(
    policy_dir: Path, ref_dir: Path, prompts: list[str], hyper: dict[str, Any], seed: int
) -> dict[str, list]:
    """One sample per prompt from ``policy_dir``, with its sequence KL to ``ref_dir`` (k1).

    Both trainers' results go through this one sampler, so "reward after N steps" compares
    policies, not samplers.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref_dir, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    ref = AutoModelForCausalLM.from_pretrained(ref_dir).eval()
    eos, pad, temp = tokenizer.eos_token_id, tokenizer.pad_token_id, hyper["temperature"]
    ids = [
        tokenizer(p, add_special_tokens=False)["input_ids"][-hyper["prompt_max_tokens"] :]
        for p in prompts
    ]
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    torch.manual_seed(seed)
    out = policy.generate(
        **batch, do_sample=True, temperature=temp, top_k=0, top_p=1.0,
        max_new_tokens=hyper["response_length"], eos_token_id=eos, pad_token_id=pad,
    )  # fmt: skip
    context = batch["input_ids"].shape[1]
    responses = out[:, context:]
    is_eos = responses == eos
    finished = is_eos.any(dim=1)
    # Keep tokens up to and including the first EOS; everything after it is padding.
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    response_mask = ~after_eos & (responses != pad)
    mask = torch.cat([batch["attention_mask"], response_mask.long()], dim=1)
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)

    def response_logprobs(model: Any) -> torch.Tensor:
        logits = model(input_ids=out, attention_mask=mask, position_ids=position_ids).logits
        logits = logits[:, context - 1 : -1] / temp
        return torch.log_softmax(logits.float(), -1).gather(-1, responses.unsqueeze(-1))[..., 0]

    kl = ((response_logprobs(policy) - response_logprobs(ref)) * response_mask).sum(1)
    texts = [
        tokenizer.decode(r[m & (r != eos)], skip_special_tokens=True)
        for r, m in zip(responses, response_mask, strict=True)
    ]
    return {
        "responses": texts,
        "finished": finished.tolist(),
        "kl": kl.tolist(),
        "length": response_mask.sum(1).tolist(),
    }


def evaluate(
    label: str, policy_dir: Path, args: argparse.Namespace, url: str, prompts: list[str]
) -> dict[str, Any]:
    from ppo_client.reward_client import RewardClient

    samples = sample_and_measure(policy_dir, args.policy, prompts, HYPER, seed=HYPER["seed"])
    with RewardClient(url, args.reward_model, normalize=HYPER["reward_normalize"]) as client:
        rm = client.score(prompts, samples["responses"])
    missing = HYPER["missing_eos_score"]
    shaped = [
        s if done or missing is None else missing
        for s, done in zip(rm, samples["finished"], strict=True)
    ]
    return {
        "policy": label,
        "reward": summarize(shaped),
        "rm_score": summarize(rm),
        "eos_rate": statistics.fmean(samples["finished"]),
        "kl": summarize(samples["kl"]),
        "examples": [
            {"prompt": p, "response": r}
            for p, r in zip(prompts[:4], samples["responses"][:4], strict=True)
        ],
    }


def step_seconds(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per PPO step, leaving out step 1 (it carries one-off warm-up costs)."""
    return summarize([s["seconds"] for s in steps[1:]] or [s["seconds"] for s in steps])


def plot(trl: list[dict], ours: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, steps in (("TRL PPOTrainer", trl), ("ours", ours)):
        xs = [s["step"] for s in steps]
        left.plot(xs, [s["reward"] for s in steps], marker=".", label=name)
        right.plot(xs, [s["seconds"] for s in steps], marker=".", label=name)
    left.set(xlabel="PPO step", ylabel="mean rollout score", title="Reward during training")
    right.set(xlabel="PPO step", ylabel="seconds", title="Seconds per PPO step")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(result: dict[str, Any]) -> str:
    t, o = result["trl"], result["ours"]
    ratio = o["step_seconds"]["median"] / t["step_seconds"]["median"]
    lines = [
        f"PPO vs TRL, {result['steps']} steps of {HYPER['rollout_batch_size']} rollouts each",
        "",
        "| | TRL PPOTrainer | ours |",
        "| --- | --- | --- |",
        "| seconds per PPO step, median (mean) | "
        f"{t['step_seconds']['median']:.2f} ({t['step_seconds']['mean']:.2f}) | "
        f"{o['step_seconds']['median']:.2f} ({o['step_seconds']['mean']:.2f}) |",
        f"| wall clock of the whole run, s | {t['wall']:.0f} | {o['wall']:.0f} |",
    ]
    before = result["eval"]["start"]
    for key, name in (("reward", "reward"), ("rm_score", "RM score"), ("kl", "KL to start")):
        cells = [
            f"{result['eval'][w][key]['mean']:+.3f} ± {result['eval'][w][key]['std']:.3f}"
            for w in ("trl", "ours")
        ]
        lines.append(f"| held-out {name} after N steps, mean ± std | {cells[0]} | {cells[1]} |")
    lines.append(
        f"| held-out EOS rate | {result['eval']['trl']['eos_rate']:.2f} | "
        f"{result['eval']['ours']['eos_rate']:.2f} |"
    )
    lines += [
        "",
        f"Starting policy: reward {before['reward']['mean']:+.3f} ± {before['reward']['std']:.3f},"
        f" RM score {before['rm_score']['mean']:+.3f}, EOS rate {before['eos_rate']:.2f}.",
        f"Step-time ratio ours / TRL (medians): {ratio:.2f} (target ≤ 0.80).",
        "Share of our step spent waiting for rewards (median): "
        f"{statistics.median(s['reward_wait_share'] for s in o['steps']):.1%}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["trl-worker"]:
        run_trl_worker(Path(argv[1]))
        return 0
    if argv[:1] == ["ours-worker"]:
        run_ours_worker(Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True, help="starting causal LM folder")
    parser.add_argument("--reward-repo", type=Path, required=True, help="model repository")
    parser.add_argument("--reward-model", help="model name in the repository (if several)")
    parser.add_argument("--prompts", type=Path, required=True, help="training prompts file")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out prompts file")
    parser.add_argument("--train-prompts", type=int, default=2048, help="prompts used to train")
    parser.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts scored")
    parser.add_argument("--steps", type=int, default=20, help="PPO steps per trainer")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench-ppo-vs-trl")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one shared hyper-parameter for both trainers (JSON value), e.g. "
        "--set rollout_batch_size=16",
    )
    args = parser.parse_args(argv)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in HYPER:
            raise SystemExit(f"--set {key}: not one of {', '.join(HYPER)}")
        HYPER[key] = json.loads(value)
    if not TRL_PYTHON.exists():
        raise SystemExit(f"{TRL_PYTHON} not found: create the TRL venv first (see this file)")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    train_file = out / "train_prompts.jsonl"
    train_prompts = read_prompts(args.prompts, args.train_prompts)
    train_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train_prompts))
    args.prompts = train_file
    heldout = read_prompts(args.heldout, args.eval_prompts)

    service, url = start_service(args.reward_repo, out / "service.log")
    try:
        print("training with TRL's PPOTrainer ...", flush=True)
        trl_steps, trl_wall = run_trl(args, out / "trl")
        print("training with ours ...", flush=True)
        ours_steps, ours_wall = run_ours(args, out / "ours", url, train_file)
        print("evaluating on held-out prompts ...", flush=True)
        evals = {
            "start": evaluate("start", args.policy, args, url, heldout),
            "trl": evaluate("trl", out / "trl" / "policy", args, url, heldout),
            "ours": evaluate("ours", out / "ours", args, url, heldout),
        }
    finally:
        service.terminate()
        service.wait(timeout=60)

    result = {
        "steps": args.steps,
        "hyper": HYPER,
        "trl": {"steps": trl_steps, "step_seconds": step_seconds(trl_steps), "wall": trl_wall},
        "ours": {"steps": ours_steps, "step_seconds": step_seconds(ours_steps), "wall": ours_wall},
        "eval": evals,
        "machine": f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    plot(trl_steps, ours_steps, out / "ppo_vs_trl.png")
    text = report(result)
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
