"""``ppo-client train`` through its CLI while the real reward service dies and comes back.

A pod restart (the service killed and back on the same address 10-20 s later) must not stop the
run; an outage longer than the retry budget must checkpoint, stop with exit 1 and a message that
says what to do, and resume cleanly once the service is back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from service_process import free_port, serve_command

from ppo_client.cli import main

pytestmark = pytest.mark.slow

OUTAGE_S = 12.0


@contextmanager
def service_on(repo: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    """``reward-service serve`` on a given port (a restart must come back on the same one)."""
    with log.open("a") as out:
        process = subprocess.Popen(
            serve_command(repo, port, "--backend", "onnxruntime"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"server exited:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready in 90 s:\n{log.read_text()}"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def train(
    policy: Path, prompts: Path, output: Path, url: str, *flags: str, logs: str = "train"
) -> subprocess.Popen:
    """``ppo-client train`` as a user types it; stdout and stderr go to ``output/<logs>.*``."""
    output.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "ppo_client.cli", "train",
        "--policy", str(policy), "--prompts", str(prompts), "--output", str(output),
        "--reward-url", url, "--steps", "6", "--rollout-batch-size", "8",
        "--num-minibatches", "2", "--ppo-epochs", "1", "--score-chunk-size", "4",
        "--response-length", "8", "--prompt-max-tokens", "8", "--num-eval-samples", "0",
        "--no-progress", "--torch-threads", "1", *flags,
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdout=(output / f"{logs}.stdout").open("w"),
        stderr=(output / f"{logs}.stderr").open("w"),
    )


def steps_logged(output: Path) -> list[int]:
    log = output / "log.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]


def wait_for_step(run: subprocess.Popen, output: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while len(steps_logged(output)) < step:
        assert run.poll() is None, (output / "train.stderr").read_text()
        assert time.monotonic() < deadline, "the run made no progress in 120 s"
        time.sleep(0.05)


def test_run_survives_a_service_restart_at_default_settings(
    tiny_policy, prompts_file, tiny_model_repo, tmp_path
) -> None:
    port = free_port()
    out = tmp_path / "run"
    with service_on(tiny_model_repo, port, tmp_path / "first.log") as first:
        run = train(tiny_policy, prompts_file, out, f"http://127.0.0.1:{port}")
        wait_for_step(run, out, 1)
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = time.monotonic()
    time.sleep(OUTAGE_S)
    with service_on(tiny_model_repo, port, tmp_path / "second.log"):
        back_at = time.monotonic()
        code = run.wait(timeout=300)
    stderr = (out / "train.stderr").read_text()
    assert code == 0, stderr
    assert steps_logged(out) == [1, 2, 3, 4, 5, 6]
    assert "Task was destroyed" not in stderr
    assert "Traceback" not in stderr
    assert back_at - killed_at >= OUTAGE_S
    # One line when the outage began and one when the service answered again, not one per retry.
    assert stderr.count("reward service unavailable") == 1, stderr
    assert stderr.count("reward service answering again") == 1, stderr


def test_outage_longer_than_the_budget_checkpoints_stops_and_resumes(
    tiny_policy, prompts_file, tiny_model_repo, tmp_path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "run"
    with service_on(tiny_model_repo, port, tmp_path / "first.log") as first:
        run = train(tiny_policy, prompts_file, out, url, "--reward-retry-budget", "3")
        wait_for_step(run, out, 2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    code = run.wait(timeout=300)
    stderr = (out / "train.stderr").read_text()
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert "Task was destroyed" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ppo-client train: error: step ")
    assert "retry budget" in last and "rerun with --resume" in last
    done = steps_logged(out)
    assert 2 <= len(done) < 6
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == len(done)

    with service_on(tiny_model_repo, port, tmp_path / "second.log"):
        resumed = train(tiny_policy, prompts_file, out, url, "--resume", logs="resume")
        assert resumed.wait(timeout=300) == 0, (out / "resume.stderr").read_text()
    assert steps_logged(out) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_a_bad_retry_budget_is_one_error_line(
    tiny_policy, prompts_file, tmp_path, value, capsys
) -> None:
    argv = [
        "train", "--policy", str(tiny_policy), "--prompts", str(prompts_file),
        "--output", str(tmp_path), "--reward-url", "http://127.0.0.1:9",
        "--reward-retry-budget", value,
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ppo-client train: error: reward_retry_budget must be >= 0, got {float(value)}"
    ]
