"""Peak memory (RSS) and time of one PPO step: full fine-tuning vs LoRA vs LoRA + gradient
checkpointing, on a policy of ≥ 100M parameters built from a config (random weights: memory and
speed do not depend on what the weights know).

Each variant runs in its own process, so each peak is its own: the process loads the policy (and,
for full fine-tuning, the frozen reference copy), then runs one PPO step at the trainer's default
settings (64 completions of ≤ 32 tokens from ≤ 32-token prompts, 4 minibatches, 4 epochs, fp32)
with an in-process reward function (the reward service would add its own process, not ours).
Peak RSS is ``ru_maxrss``: the high-water mark of the whole process, torch included.

    .venv/bin/python bench/bench_ppo_memory.py --output runs/bench-ppo-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "full fine-tuning": {},
    "LoRA r=16": {"lora_rank": 16},
    "LoRA r=16 + gradient checkpointing": {"lora_rank": 16, "gradient_checkpointing": True},
}


def build_policy(folder: Path, corpus: Path, layers: int, hidden: int) -> int:
    """A Llama-architecture policy with a byte-level BPE (8k) trained on the corpus; returns its
    parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ppo_client.pretrain import train_tokenizer
    from reward_service.data.corpus import read_entries

    texts = read_entries(corpus)
    tokenizer = train_tokenizer(texts, vocab_size=8192)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    prompts = [" ".join(t.split()[:8]) for t in texts[:512]]
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return sum(p.numel() for p in model.parameters())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(policy: Path, variant: str, output: Path) -> dict:
    """One variant in this process: load, one PPO step, the high-water marks."""
    import torch

    from ppo_client.config import PPOConfig
    from ppo_client.trainer import PPOTrainer

    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        return [len(set(r.split())) / 10 for r in responses]

    cfg = PPOConfig(
        policy=str(policy),
        prompts=str(policy / "prompts.txt"),
        output=str(output),
        num_eval_samples=0,
        tensorboard=False,
        progress=False,
        steps=1,
        **VARIANTS[variant],
    )
    start = time.perf_counter()
    with PPOTrainer(cfg, reward_fn=reward) as trainer:
        loaded_rss, load_seconds = peak_rss_mib(), time.perf_counter() - start
        rollout, scores, error = trainer.collect(0)
        if error is not None:
            raise error
        stats = trainer.update(rollout, scores)
        params = sum(p.numel() for p in trainer.policy.parameters())
        trainable = sum(p.numel() for p in trainer.trainable)
    return {
        "variant": variant,
        "params": params,
        "trainable_params": trainable,
        "peak_rss_after_load_mib": loaded_rss,
        "peak_rss_after_step_mib": peak_rss_mib(),
        "load_seconds": load_seconds,
        "step_seconds": stats["time/step"],
        "generate_seconds": stats["time/generate"],
        "forward_seconds": stats["time/forward"],
        "train_seconds": stats["time/train"],
        "torch_threads": torch.get_num_threads(),
    }


def machine() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {
        "cpu": fields.get("Model name", "?").strip(),
        "cpus": fields.get("CPU(s)", "?").strip(),
        "amx": any(f.startswith("amx") for f in flags),
        "avx512_bf16": "avx512_bf16" in flags,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=ROOT / "runs" / "bench-ppo-memory")
    p.add_argument("--corpus", type=Path, default=Path("/usr/share/games/fortunes"))
    p.add_argument("--layers", type=int, default=14)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()

    policy = args.output / "policy"
    if not (policy / "config.json").is_file():
        params = build_policy(policy, args.corpus, args.layers, args.hidden)
        print(f"built {policy}: {params / 1e6:.1f}M parameters", flush=True)
    rows = []
    for variant in args.variants:  # one process each: every peak is its own
        cmd = [sys.executable, __file__, "worker", str(policy), variant, str(args.output)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{variant}: peak RSS {r['peak_rss_after_step_mib']:.0f} MiB "
            f"(after load {r['peak_rss_after_load_mib']:.0f}), step {r['step_seconds']:.1f} s",
            flush=True,
        )
    result = {"machine": machine(), "command": " ".join(sys.argv), "rows": rows}
    (args.output / "result.json").write_text(json.dumps(result, indent=2))
    full = rows[0]
    print(f"\n{result['machine']}\n")
    print(
        "| variant | parameters (trainable) | peak RSS after load | peak RSS after one step "
        "| vs full | step time | vs full |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['params'] / 1e6:.1f}M ({r['trainable_params'] / 1e6:.2f}M) "
            f"| {r['peak_rss_after_load_mib']:.0f} MiB | {r['peak_rss_after_step_mib']:.0f} MiB "
            f"| {r['peak_rss_after_step_mib'] / full['peak_rss_after_step_mib']:.2f} "
            f"| {r['step_seconds']:.1f} s | {r['step_seconds'] / full['step_seconds']:.2f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        policy, variant, output = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]) / "run"
        print(json.dumps(worker(policy, variant, output)))
    else:
        main()
