"""``reward-service demo-data``: an offline preference data set with a known gold reward.

Prompts are the first words of fortunes; responses are fortune fragments of policy-like
length; a gold scorer (VADER sentiment by default) rates each response, and the preferred one
is drawn from a Bradley–Terry model of the gold scores, so the labels are noisy the way human
labels are. The evaluation pairs are labeled by the noiseless gold order and kept only where
the gold scores differ by at least ``--eval-margin``: a clear preference a good reward model
must reproduce. Provenance is written next to the data.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from reward_service.data.corpus import FORTUNES_DIR, read_entries, split_entries

PROVENANCE = """# Demo preference data

- Text: {n_entries} entries of 20-600 characters from `{corpus}` (Debian's
  `fortunes` package when the default is used), split {held_out:.0%} held out by seed {seed}:
  training pairs and `prompts.jsonl` use the rest; `eval.jsonl` and `heldout_prompts.jsonl`
  use only held-out entries.
- Prompts: the first 2-4 words of an entry. Responses: the entry's own next {min_words}-{max_words}
  words, or the same length of another entry.
- Gold labeler: `{gold}` (see reward_service/data/gold.py). Pairs where it scores both responses
  exactly 0 (no sentiment seen) are dropped: they carry no preference.
- Training labels: P(first preferred) = sigmoid((gold_1 - gold_2) / {temperature}), sampled once
  (Bradley-Terry label noise, as in Gao et al. 2022). {flipped:.1%} of training pairs were flipped
  against the gold order.
- Eval labels: the noiseless gold order, only for pairs with |gold_1 - gold_2| >= {eval_margin}.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="folder to write")
    parser.add_argument("--corpus", type=Path, default=FORTUNES_DIR, help="text corpus")
    parser.add_argument("--gold", default="vader", help="gold scorer name or module:function")
    parser.add_argument("--n-train", type=int, default=4000, help="training pairs")
    parser.add_argument("--n-eval", type=int, default=500, help="evaluation pairs")
    parser.add_argument("--temperature", type=float, default=0.1, help="label noise scale")
    parser.add_argument("--eval-margin", type=float, default=0.3, help="min gold gap in eval")
    parser.add_argument("--held-out", type=float, default=0.1, help="share of entries held out")
    parser.add_argument("--seed", type=int, default=0)


def _prompt_and_rest(entry: str, rng: random.Random) -> tuple[str, list[str]]:
    words = entry.split()
    k = min(rng.randint(2, 4), max(1, len(words) - 1))
    return " ".join(words[:k]), words[k:]


def _fragment(words: list[str], rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(words[: rng.randint(lo, hi)])


def _candidates(entries: list[str], n: int, rng: random.Random, lo: int, hi: int):
    """(prompt, response_a, response_b) triples; a is the entry's own continuation."""
    for _ in range(n):
        prompt, rest = _prompt_and_rest(rng.choice(entries), rng)
        _, other = _prompt_and_rest(rng.choice(entries), rng)
        a, b = _fragment(rest, rng, lo, hi), _fragment(other, rng, lo, hi)
        if a and b and a != b:
            yield prompt, a, b


def build(args: argparse.Namespace) -> dict[str, int]:
    from reward_service.data.gold import get_gold

    rng = random.Random(args.seed)
    gold = get_gold(args.gold)
    entries = read_entries(args.corpus)
    train_entries, held_entries = split_entries(entries, args.held_out, args.seed)
    lo, hi = 6, 24
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    train, flipped = [], 0
    while len(train) < args.n_train:
        batch = list(_candidates(train_entries, 512, rng, lo, hi))
        scores = gold([t for _, a, b in batch for t in (a, b)])
        for (prompt, a, b), ga, gb in zip(batch, scores[::2], scores[1::2], strict=True):
            if ga == 0 and gb == 0:
                continue
            a_wins = rng.random() < 1 / (1 + math.exp(-(ga - gb) / args.temperature))
            flipped += a_wins != (ga >= gb)
            chosen, rejected = (a, b) if a_wins else (b, a)
            train.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    train = train[: args.n_train]

    evals = []
    while len(evals) < args.n_eval:
        batch = list(_candidates(held_entries, 512, rng, lo, hi))
        scores = gold([t for _, a, b in batch for t in (a, b)])
        for (prompt, a, b), ga, gb in zip(batch, scores[::2], scores[1::2], strict=True):
            if abs(ga - gb) >= args.eval_margin:
                chosen, rejected = (a, b) if ga > gb else (b, a)
                evals.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    evals = evals[: args.n_eval]

    prompts = sorted({_prompt_and_rest(e, rng)[0] for e in train_entries})
    held_prompts = sorted({_prompt_and_rest(e, rng)[0] for e in held_entries} - set(prompts))
    rng.shuffle(prompts)
    rng.shuffle(held_prompts)
    files = {
        "train.jsonl": train,
        "eval.jsonl": evals,
        "prompts.jsonl": [{"prompt": p} for p in prompts],
        "heldout_prompts.jsonl": [{"prompt": p} for p in held_prompts],
    }
    for name, records in files.items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "PROVENANCE.md").write_text(
        PROVENANCE.format(
            n_entries=len(entries),
            corpus=args.corpus,
            held_out=args.held_out,
            seed=args.seed,
            min_words=lo,
            max_words=hi,
            gold=args.gold,
            temperature=args.temperature,
            flipped=flipped / max(1, len(train)),
            eval_margin=args.eval_margin,
        )
    )
    return {name: len(records) for name, records in files.items()}


def run(args: argparse.Namespace) -> int:
    import sys

    from reward_service.data.corpus import CorpusError

    try:
        counts = build(args)
    except (CorpusError, ValueError, ImportError) as exc:
        print(f"reward-service demo-data: error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{name}={n}" for name, n in counts.items()), f"-> {args.output}")
    return 0
