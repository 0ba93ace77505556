"""The GPU path, checked end to end in a few minutes (run by ``bench/gpu_smoke.sh``).

1. the reward service on ONNX Runtime's CUDA execution provider: a tiny BERT reward model
   (trained and exported here, as the tests do), ``/v1/models`` must report the CUDA provider,
   ``/v1/score`` must answer;
2. PPO on the GPU in bf16: a tiny random Llama with a chat template and PAD == EOS, full
   fine-tuning in-process (every parameter and the sampling generator on CUDA), then LoRA
   through the CLI, both against that service with held-out evaluation;
3. ``ppo-client sample --policy <LoRA output> --n 2`` from the merged policy.

Every check prints ``ok``/``FAIL``; the exit code is the number of failures. ``summary.json`` in
``--output`` keeps the figures (device, steps, rewards, KL, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: object = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def build_reward_model(root: Path) -> Path:
    from rm_fixtures import make_tiny_base, sentiment_pairs, write_jsonl

    from reward_service.export.onnx_export import export
    from reward_service.train.trainer import TrainConfig, train

    base = make_tiny_base(root / "rm-base")
    checkpoint = root / "rm"
    train(
        TrainConfig(
            data=write_jsonl(root / "train.jsonl", sentiment_pairs(96, seed=1)),
            eval_data=write_jsonl(root / "eval.jsonl", sentiment_pairs(32, seed=2)),
            output=checkpoint,
            base=base,
            epochs=3,
            batch_size=8,
            lr=1e-3,
            max_length=64,
            eval_every=1000,
        )
    )
    repo = root / "models"
    export(checkpoint, repo, "tiny", version=1, optimize="off")
    return repo


@contextlib.contextmanager
def cuda_service(repo: Path, log: Path) -> Iterator[str]:
    from demo import reward_service

    os.environ["REWARD_SERVICE_PROVIDERS"] = "CUDAExecutionProvider,CPUExecutionProvider"
    os.environ["REWARD_SERVICE_BACKEND"] = "onnxruntime"
    with reward_service(repo, log) as url:
        yield url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=ROOT / "runs" / "gpu-smoke")
    args = p.parse_args()
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {}

    import httpx
    import torch

    check("torch sees CUDA", torch.cuda.is_available(), torch.version.cuda)
    if not torch.cuda.is_available():
        sys.exit(1)
    summary["device"] = torch.cuda.get_device_name(0)
    check("bf16 supported", torch.cuda.is_bf16_supported(), summary["device"])

    from ppo.conftest import build_tiny_chat_model

    repo = build_reward_model(out / "fixtures")
    policy = build_tiny_chat_model("llama", out / "fixtures" / "llama")
    prompts = out / "prompts.jsonl"
    words = ["the day", "a friend", "the night", "news", "a storm", "kind", "the", "sad"]
    prompts.write_text("".join(json.dumps({"prompt": w}) + "\n" for w in words * 4))

    with cuda_service(repo, out / "serve.log") as url:
        info = httpx.get(f"{url}/v1/models/tiny", timeout=10).json()
        device = (info.get("runtime") or {}).get("device")
        check("reward service runs on the CUDA provider", device == "CUDAExecutionProvider", device)
        scored = httpx.post(
            f"{url}/v1/score",
            json={"inputs": [{"prompt": "the day", "response": "is lovely"}]},
            timeout=30,
        )
        check("/v1/score answers", scored.status_code == 200, scored.text[:200])

        from ppo_client.config import PPOConfig
        from ppo_client.trainer import PPOTrainer

        common = dict(
            policy=str(policy),
            prompts=str(prompts),
            reward_url=[url],
            steps=3,
            rollout_batch_size=16,
            num_minibatches=2,
            ppo_epochs=2,
            score_chunk_size=8,
            response_length=16,
            num_eval_samples=4,
            eval_every=1,
            precision="bf16",
            learning_rate=1e-3,
            progress=False,
        )
        start = time.perf_counter()
        with PPOTrainer(PPOConfig(output=str(out / "full"), **common)) as trainer:
            on_cuda = {p.device.type for p in trainer.policy.parameters()} == {"cuda"}
            check("full: policy on CUDA", on_cuda)
            check("full: generator on CUDA", trainer.generator.device.type == "cuda")
            history = trainer.train()
        summary["full"] = {
            "seconds": time.perf_counter() - start,
            "peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
            "log": history,
        }
        check("full: 3 bf16 PPO steps", len(history) == 3, history[-1]["objective/kl"])
        check("full: step 1 KL is 0", history[0]["objective/kl"] == 0.0)

        lora_out = out / "lora"
        cmd = [sys.executable, "-m", "ppo_client.cli", "train", "--policy", str(policy)]
        cmd += ["--prompts", str(prompts), "--reward-url", url, "--output", str(lora_out)]
        cmd += ["--steps", "3", "--rollout-batch-size", "16", "--score-chunk-size", "8"]
        cmd += ["--lora-rank", "8", "--precision", "bf16", "--eval-every", "1"]
        cmd += ["--learning-rate", "1e-3", "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        check("lora: CLI run", proc.returncode == 0, proc.stderr[-1500:] if proc.returncode else "")
        if proc.returncode == 0:
            log = [json.loads(x) for x in (lora_out / "log.jsonl").read_text().splitlines()]
            summary["lora"] = log
            check("lora: eval at steps 0..3", [r["step"] for r in log] == [0, 1, 2, 3])
            check("lora: adapter saved", (lora_out / "adapter" / "adapter_config.json").is_file())
            samples = out / "samples.jsonl"
            cmd = [sys.executable, "-m", "ppo_client.cli", "sample", "--policy", str(lora_out)]
            cmd += ["--prompts", str(prompts), "--output", str(samples), "--n", "2"]
            cmd += ["--limit", "4", "--reward-url", url]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            rows = samples.read_text().splitlines() if samples.is_file() else []
            check("sample --n 2 on the merged LoRA policy", len(rows) == 8, proc.stderr[-800:])

    summary["failures"] = FAILURES
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"{len(FAILURES)} failure(s); summary in {out / 'summary.json'}")
    sys.exit(len(FAILURES))


if __name__ == "__main__":
    main()
