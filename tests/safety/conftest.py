"""Safety fixtures: a tiny cost model trained and exported by our own code, served beside the
tiny reward model, and the PPO fixtures (tiny policy, prompts) reused from tests/ppo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ppo.conftest import prompts_file, tiny_policy  # noqa: F401  (fixtures, reused)
from rm_fixtures import write_jsonl

from .safety_data import pku_records


@pytest.fixture(scope="session")
def pku_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pku")
    train = write_jsonl(root / "train.jsonl", pku_records(160, seed=1))
    held = write_jsonl(root / "eval.jsonl", pku_records(48, seed=2))
    return train, held


@pytest.fixture(scope="session")
def cost_checkpoint(tmp_path_factory, tiny_base, pku_files) -> Path:
    from reward_service.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-cost") / "checkpoint"
    train(
        TrainConfig(
            data=pku_files[0],
            eval_data=pku_files[1],
            output=out,
            base=tiny_base,
            objective="cost",
            epochs=6,
            batch_size=8,
            lr=3e-3,
            # The tiny base's embeddings are random, not pretrained: insults must be learned there.
            freeze_embeddings=False,
            max_length=64,
            eval_every=1000,
        )
    )
    return out


@pytest.fixture(scope="session")
def safety_model_repo(tmp_path_factory, tiny_model_repo, cost_checkpoint) -> Path:
    """``tiny`` (the reward model) beside ``tiny-cost`` (the cost model), both fp32."""
    from reward_service.export.onnx_export import export

    repo = tmp_path_factory.mktemp("safety-repo")
    shutil.copytree(tiny_model_repo / "tiny", repo / "tiny")
    export(cost_checkpoint, repo, "tiny-cost", version=1, optimize="off")
    return repo
