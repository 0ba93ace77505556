"""PPO fixtures: a tiny causal LM pretrained here in seconds, prompts, and a real reward service.

The reward service runs ``reward-service serve`` on the shared ``tiny_model_repo`` (a BERT
reward model with a WordPiece tokenizer): the client sends text, so the policy's BPE and the
reward model's tokenizer never need to match.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ppo_client.config import PPOConfig

POSITIVE = ["the", "day", "is", "bright", "and", "kind", "a", "wonderful", "friend", "lovely"]
NEGATIVE = ["the", "night", "is", "cold", "and", "cruel", "a", "terrible", "storm", "sad"]
WORDS = [*POSITIVE, *NEGATIVE, ",", ".", "news", "brings"]


def tiny_texts(n: int = 400) -> list[str]:
    """A small synthetic corpus: no dependence on the fortunes package in tests."""
    import random

    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 (~70k parameters) with its own byte-level BPE, PAD distinct from EOS."""
    from ppo_client.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("tiny-policy")
    cfg = PretrainConfig(
        vocab_size=300,
        n_layer=2,
        n_embd=32,
        n_head=2,
        block_size=32,
        batch_size=8,
        max_steps=60,
        warmup_steps=5,
        learning_rate=5e-3,
        bf16=False,
    )
    pretrain(tiny_texts(), out, cfg)
    return out


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    starts = ["the day", "a friend", "the night", "news", "a storm", "kind", "the", "sad"]
    path.write_text("".join(f'{{"prompt": "{s}"}}\n' for s in starts))
    return path


def make_config(policy: Path, prompts: Path, output: Path, **overrides) -> PPOConfig:
    """Small but complete: two chunks per rank so the overlap path runs, two minibatches."""
    values = dict(
        policy=str(policy),
        prompts=str(prompts),
        output=str(output),
        steps=2,
        rollout_batch_size=8,
        num_minibatches=2,
        ppo_epochs=2,
        score_chunk_size=4,
        response_length=8,
        prompt_max_tokens=8,
        num_eval_samples=0,
        progress=False,
        learning_rate=1e-3,
    )
    values.update(overrides)
    return PPOConfig(**values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def start_service(model_repo: Path, workdir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``reward-service serve`` in a subprocess on a free loopback port, stopped on exit."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    env = {**os.environ, "REWARD_SERVICE_BACKEND": "onnxruntime"}
    cmd = [sys.executable, "-m", "reward_service.cli", "serve", "--model-repo", str(model_repo)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"reward-service serve exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("reward-service serve was not ready within 90 s")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def reward_url(tiny_model_repo: Path, tmp_path_factory) -> Iterator[str]:
    with start_service(tiny_model_repo, tmp_path_factory.mktemp("serve")) as (url, _):
        yield url
