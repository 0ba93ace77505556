"""``reward-service train``: human-feedback JSONL → Hugging Face reward-model checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="training JSONL (any format)")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--eval-data", type=Path, help="held-out JSONL (default: split --data)")
    parser.add_argument("--base", type=Path, help="HF backbone folder (default: shipped MiniLM)")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the data")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train exactly N optimizer steps, however many epochs that is (0: use --epochs); "
        "how to size a run on a small round of labels",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="warm-start from a reward checkpoint of `reward-service train` (weights, head, "
        "tokenizer and template); excludes --base",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="groups per step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per item")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="split when no eval")
    parser.add_argument("--center-coef", type=float, default=0.0, help="reward-centering weight")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between evals")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: all)")
    parser.add_argument(
        "--freeze-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the token-embedding table fixed (faster; little to learn there)",
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fast on AMX CPUs)")


def run(args: argparse.Namespace) -> int:
    from reward_service.data.formats import DataError
    from reward_service.train.trainer import TrainConfig, train

    config = TrainConfig(**{k: v for k, v in vars(args).items() if k not in ("command", "_module")})
    try:
        metrics = train(config)
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"reward-service train: error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"checkpoint: {args.output}")
    return 0
