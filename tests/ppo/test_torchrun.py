"""Scale-out: ``torchrun`` with 2 CPU ranks (gloo), each generating half of every rollout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def test_two_ranks_train_against_the_real_service(
    tiny_policy, prompts_file, reward_url, tmp_path
) -> None:
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "ppo_client.cli"]
    cmd += ["train", "--policy", str(tiny_policy), "--prompts", str(prompts_file)]
    cmd += ["--reward-url", reward_url, "--output", str(out), "--steps", "2"]
    cmd += ["--rollout-batch-size", "8", "--num-minibatches", "2", "--ppo-epochs", "1"]
    cmd += ["--score-chunk-size", "2", "--response-length", "8", "--num-eval-samples", "0"]
    cmd += ["--no-progress", "--torch-threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in log] == [1, 2]  # rank 0 logs once per step, not once per rank
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    generators = [r["generator"] for r in state["rng"]]
    assert len(generators) == 2 and not torch.equal(*generators)  # each rank samples its own
    assert (out / "config.json").is_file() and (out / "value_head.pt").is_file()
