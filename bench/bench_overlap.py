"""Share of PPO step time spent waiting for rewards, with and without overlapped scoring.

With overlap, chunk k of the rollout is scored by the reward service while chunk k+1 generates,
and the last chunk's scoring hides behind the policy and reference forwards; without it, the
trainer generates everything, then waits for every score. Both runs use the same policy,
prompts, service and seed, interleaved step by step (A, B, A, B, ...) so that load from other
work on the machine hits both alike.

    .venv/bin/python bench/bench_overlap.py --policy runs/demo/policy \
        --prompts runs/demo/data/prompts.jsonl --model-repo runs/demo/models --steps 6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, default=ROOT / "runs/demo/policy")
    p.add_argument("--prompts", type=Path, default=ROOT / "runs/demo/data/prompts.jsonl")
    p.add_argument("--model-repo", type=Path, default=ROOT / "runs/demo/models")
    p.add_argument("--config", type=Path, default=ROOT / "scripts/demo_ppo.toml")
    p.add_argument("--steps", type=int, default=6, help="PPO steps per mode (first is warm-up)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()

    from demo import reward_service

    from ppo_client.config import PPOConfig
    from ppo_client.trainer import PPOTrainer

    with (
        tempfile.TemporaryDirectory() as tmp,
        reward_service(args.model_repo, Path(tmp) / "serve.log") as url,
    ):
        base = PPOConfig(
            **{
                **PPOConfig.from_file(args.config),
                "policy": str(args.policy),
                "prompts": str(args.prompts),
                "reward_url": [url],
                "reward_model": "demo",
                "num_eval_samples": 0,
                "progress": False,
                "steps": 1,
            }
        )
        trainers = {
            mode: PPOTrainer(
                dataclasses.replace(
                    base, overlap_scoring=(mode == "overlap"), output=f"{tmp}/{mode}"
                )
            )
            for mode in ("overlap", "sequential")
        }
        rows: dict[str, list[dict[str, float]]] = {m: [] for m in trainers}
        for step in range(args.steps):
            for mode, trainer in trainers.items():
                rollout, scores, error = trainer.collect(step)
                if error is not None:
                    raise error
                stats = trainer.update(rollout, scores)
                rows[mode].append(stats)
                print(
                    f"step {step} {mode:>10}: step {stats['time/step']:.2f} s, wait "
                    f"{stats['time/reward_wait']:.3f} s ({stats['time/reward_wait_share']:.1%})",
                    flush=True,
                )
        for trainer in trainers.values():
            trainer.close()

    figures = {}
    for mode, stats in rows.items():
        measured = stats[1:]  # step 0 warms up caches and the service
        wait = sum(s["time/reward_wait"] for s in measured)
        total = sum(s["time/step"] for s in measured)
        figures[mode] = {
            "steps": len(measured),
            "step_seconds_median": statistics.median(s["time/step"] for s in measured),
            "generate_seconds_median": statistics.median(s["time/generate"] for s in measured),
            "reward_wait_seconds_median": statistics.median(
                s["time/reward_wait"] for s in measured
            ),
            "reward_wait_share": wait / total,
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
