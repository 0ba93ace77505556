"""``ppo-client``: pretrain a tiny policy, fine-tune it with PPO, sample from it.

Subcommands import torch only inside their handler, so ``--help`` answers at once. Bad input
ends with one ``error:`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ppo_client.config import ConfigError
from ppo_client.config import add_arguments as add_ppo_arguments


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a tiny GPT-2-style causal LM on a local corpus (offline stage 1)",
        description="Train a byte-level BPE and a small GPT-2 on a text corpus; save a Hugging "
        "Face directory that AutoModelForCausalLM and AutoTokenizer load.",
    )
    p.add_argument("--corpus", required=True, help="fortunes folder or any folder/file of text")
    p.add_argument("--output", required=True, help="directory for the model and tokenizer")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--n-layer", type=int, default=4, help="transformer blocks")
    p.add_argument("--n-embd", type=int, default=192, help="hidden size")
    p.add_argument("--n-head", type=int, default=4, help="attention heads")
    p.add_argument("--block-size", type=int, default=128, help="tokens per training row")
    p.add_argument("--batch-size", type=int, default=16, help="rows per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--max-steps", type=int, default=2000, help="most optimizer steps")
    p.add_argument("--max-seconds", type=float, default=300.0, help="wall-clock budget")
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 (bf16 autocast is ~2x)")
    p.add_argument("--seed", type=int, default=1, help="seed")
    p.set_defaults(handler=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from ppo_client.pretrain import PretrainConfig, pretrain
    from reward_service.data.corpus import CorpusError, read_entries

    try:
        texts = read_entries(Path(args.corpus))
    except CorpusError as exc:
        raise ConfigError(str(exc)) from None
    if len(texts) < 100:
        raise ConfigError(f"corpus {args.corpus} has only {len(texts)} usable entries")
    cfg = PretrainConfig(
        vocab_size=args.vocab_size,
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        n_head=args.n_head,
        block_size=args.block_size,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_steps=args.max_steps,
        max_seconds=args.max_seconds,
        bf16=not args.no_bf16,
        seed=args.seed,
    )
    summary = pretrain(texts, Path(args.output), cfg)
    print(json.dumps({"output": args.output, **summary}))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a policy with PPO against the reward service",
        description="PPO with a per-token KL penalty to a frozen reference, rewards from the "
        "reward service over HTTP. Flags override --config; every flag is a PPOConfig field.",
    )
    add_ppo_arguments(p)
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ppo_client.config import from_args
    from ppo_client.trainer import PPOTrainer

    config = from_args(args)
    if not config.reward_url:
        raise ConfigError("--reward-url is required")
    with PPOTrainer(config) as trainer:
        history = trainer.train()
    if history and trainer.is_main:
        last = history[-1]
        print(
            json.dumps(
                {
                    "output": config.output,
                    "step": last["step"],
                    "reward": last["reward/raw"],
                    "kl": last["objective/kl"],
                }
            )
        )
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="sample completions from a policy (optionally scored by the reward service)",
        description="Write one JSON line per completion: prompt, response, logprob, and reward "
        "(with --reward-url) and kl (with --reference).",
    )
    p.add_argument(
        "--policy", required=True, help="Hugging Face causal LM directory (or cached hub id)"
    )
    p.add_argument("--prompts", required=True, help="JSONL with 'prompt', or text lines")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--n", type=int, default=1, help="completions per prompt")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--response-length", type=int, default=32, help="most tokens per response")
    p.add_argument("--prompt-max-tokens", type=int, default=32, help="prompt tokens kept")
    p.add_argument(
        "--chat-template",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="format prompts with the tokenizer's chat template when it has one",
    )
    p.add_argument("--reward-url", nargs="+", default=None, help="reward service URL(s)")
    p.add_argument("--reward-model", default=None, help="model name sent to the service")
    p.add_argument(
        "--reward-normalize",
        action="store_true",
        help="ask the service for scores normalised by the manifest's mean/std",
    )
    p.add_argument("--reference", default=None, help="reference policy directory, for KL")
    p.add_argument("--seed", type=int, default=1, help="sampling seed")
    p.set_defaults(handler=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from ppo_client.config import resolve_model
    from ppo_client.sample import SampleConfig, sample_policy, write_jsonl
    from ppo_client.trainer import load_prompts

    for name in ("policy", "reference"):
        if getattr(args, name):
            resolve_model(getattr(args, name), f"--{name}")
    if not Path(args.prompts).is_file():
        raise ConfigError(f"--prompts {args.prompts} not found")
    if min(args.n, args.response_length, args.prompt_max_tokens) < 1 or args.temperature <= 0:
        raise ConfigError(
            "--n, --response-length and --prompt-max-tokens must be >= 1, --temperature > 0"
        )
    prompts = load_prompts(args.prompts)[: args.limit]
    rows = sample_policy(
        SampleConfig(
            policy=args.policy,
            prompts=prompts,
            n=args.n,
            temperature=args.temperature,
            response_length=args.response_length,
            prompt_max_tokens=args.prompt_max_tokens,
            seed=args.seed,
            reference=args.reference,
            chat_template=args.chat_template,
        )
    )
    if args.reward_url:
        from ppo_client.reward_client import RewardClient

        with RewardClient(
            args.reward_url, args.reward_model, normalize=args.reward_normalize
        ) as client:
            scores = client.score([r["prompt"] for r in rows], [r["response"] for r in rows])
        for row, score in zip(rows, scores, strict=True):
            row["reward"] = score
    write_jsonl(rows, Path(args.output))
    print(json.dumps({"output": args.output, "completions": len(rows)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_pretrain(sub)
    _add_train(sub)
    _add_sample(sub)
    return parser


def _show_client_log() -> None:
    """Our own log lines (e.g. the reward client's "service unavailable ... answering again")
    go to stderr with a timestamp; other libraries' loggers keep their settings."""
    log = logging.getLogger("ppo_client")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_client_log()
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        parser.exit(2, f"ppo-client {args.command}: error: {exc}\n")
    except Exception as exc:
        from ppo_client.reward_client import RewardServiceError
        from ppo_client.trainer import RunStopped

        if isinstance(exc, (RewardServiceError, RunStopped)):
            parser.exit(1, f"ppo-client {args.command}: error: {exc}\n")
        raise


if __name__ == "__main__":
    sys.exit(main())
