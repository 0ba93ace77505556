"""Shared fixtures: a real tiny BERT reward model, trained and exported by our own code.

Built once per test session (about ten seconds on two cores) so every area tests against a
real ONNX graph, a real tokenizer.json and a real manifest rather than stand-ins. The model is
trained until its scores spread over a few logits, as a real RM's do: a barely trained one
scores everything within ±0.05, where any low-precision runtime's rounding looks large.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rm_fixtures import make_tiny_base, sentiment_pairs, write_jsonl

# Every server a test starts inherits this: gRPC's default port (8001) is one per machine, and
# tests run servers side by side. Tests of gRPC pass --grpc-port with a free port.
os.environ.setdefault("REWARD_SERVICE_GRPC_PORT", "0")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_base) -> Path:
    from reward_service.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-rm")
    data = write_jsonl(root / "train.jsonl", sentiment_pairs(96, seed=1))
    eval_data = write_jsonl(root / "eval.jsonl", sentiment_pairs(32, seed=2))
    out = root / "checkpoint"
    train(
        TrainConfig(
            data=data,
            eval_data=eval_data,
            output=out,
            base=tiny_base,
            epochs=3,
            batch_size=8,
            lr=3e-3,
            max_length=64,
            eval_every=1000,
        )
    )
    return out


@pytest.fixture(scope="session")
def tiny_model_repo(tmp_path_factory, tiny_checkpoint) -> Path:
    """``<repo>/tiny/1/{model.onnx, tokenizer.json, manifest.json}``, exported in fp32."""
    from reward_service.export.onnx_export import export

    repo = tmp_path_factory.mktemp("model-repo")
    export(tiny_checkpoint, repo, "tiny", version=1, optimize="off")
    return repo


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_repo) -> Path:
    return tiny_model_repo / "tiny" / "1"
