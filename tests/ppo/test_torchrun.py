"""Scale-out: ``torchrun`` with 2 CPU ranks (gloo), each generating half of every rollout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from .conftest import start_service

HERE = Path(__file__).parent


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """2 CPU ranks; on a timeout (a hang) the whole process group is killed, workers included,
    and the test fails instead of leaving orphans behind."""
    runner = Path(sys.executable).with_name("torchrun")
    cmd = [str(runner), "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def train_args(policy: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    args = ["train", "--policy", str(policy), "--prompts", str(prompts), "--output", str(out)]
    args += ["--rollout-batch-size", "8", "--num-minibatches", "2", "--ppo-epochs", "1"]
    args += ["--score-chunk-size", "2", "--response-length", "8", "--num-eval-samples", "0"]
    return [*args, "--no-progress", "--torch-threads", "1", *extra]


@pytest.mark.slow
def test_two_ranks_train_against_the_real_service(
    tiny_policy, prompts_file, reward_url, tmp_path
) -> None:
    out = tmp_path / "ddp"
    args = train_args(tiny_policy, prompts_file, out, "--steps", "2", "--reward-url", reward_url)
    proc = torchrun("-m", "ppo_client.cli", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in log] == [1, 2]  # rank 0 logs once per step, not once per rank
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    generators = [r["generator"] for r in state["rng"]]
    assert len(generators) == 2 and not torch.equal(*generators)  # each rank samples its own
    assert (out / "config.json").is_file() and (out / "value_head.pt").is_file()


@pytest.mark.slow
def test_one_rank_losing_its_service_stops_every_rank_with_a_checkpoint(
    tiny_policy, prompts_file, tiny_model_repo, reward_url, tmp_path
) -> None:
    """Rank 1's service dies after step 1; rank 0's lives. Both ranks must agree, checkpoint the
    completed step together and exit with the error, not hang in mismatched collectives."""
    out = tmp_path / "run"
    with start_service(tiny_model_repo, tmp_path) as (doomed_url, proc):

        def kill_after_first_step() -> None:
            while not (out / "log.jsonl").exists():
                time.sleep(0.05)
            proc.kill()

        threading.Thread(target=kill_after_first_step, daemon=True).start()
        args = train_args(tiny_policy, prompts_file, out, "--steps", "6")
        args += ["--checkpoint-every", "100", "--reward-retry-budget", "1"]
        args += ["--reward-timeout", "2"]
        run = torchrun(str(HERE / "per_rank_url.py"), f"{reward_url},{doomed_url}", *args)

    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "ppo-client train: error:" in line]
    assert len(errors) == 2, run.stderr[-3000:]  # one clear line from each rank, no traceback
    assert all("rerun with --resume" in line for line in errors)
    assert any("another rank could not get its rewards" in line for line in errors)
    done = len((out / "log.jsonl").read_text().splitlines())
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert 1 <= done < 6 and state["step"] == done  # the stop saved the last completed step
    assert len(state["rng"]) == 2


@pytest.mark.slow
def test_fsdp_on_two_cpu_ranks_trains_checkpoints_and_resumes(
    tiny_chat_models, prompts_file, reward_url, tmp_path
) -> None:
    """torch's fully_shard over gloo: weights, gradients and optimizer state sharded over 2 ranks;
    the checkpoint gathers them, a resume shards them again, the output is a plain HF folder."""
    out = tmp_path / "fsdp"
    policy = tiny_chat_models["llama"]
    args = train_args(policy, prompts_file, out, "--reward-url", reward_url, "--distributed")
    args += ["fsdp", "--checkpoint-every", "1", "--learning-rate", "1e-2"]
    first = torchrun("-m", "ppo_client.cli", *args, "--steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and len(state["rng"]) == 2
    assert state["optimizer"]["state"]  # the full optimizer state, gathered from both shards
    second = torchrun("-m", "ppo_client.cli", *args, "--steps", "3", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]

    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(policy).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert start.keys() == trained.keys()
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
