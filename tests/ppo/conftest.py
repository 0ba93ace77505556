"""PPO fixtures: a tiny causal LM pretrained here in seconds, prompts, and a real reward service.

The reward service runs ``reward-service serve`` on the shared ``tiny_model_repo`` (a BERT
reward model with a WordPiece tokenizer): the client sends text, so the policy's BPE and the
reward model's tokenizer never need to match.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_process import running_server

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


@contextlib.contextmanager
def start_service(model_repo: Path, workdir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``reward-service serve`` in a subprocess on a free loopback port, stopped on exit."""
    with running_server(model_repo, workdir, "--backend", "onnxruntime") as server:
        yield server.url, server.process


@pytest.fixture(scope="session")
def reward_url(tiny_model_repo: Path, tmp_path_factory) -> Iterator[str]:
    with start_service(tiny_model_repo, tmp_path_factory.mktemp("serve")) as (url, _):
        yield url
