"""Held-out evaluation: what tells improvement from collapse.

Reward alone cannot tell a better policy from one that found a cheap phrase: the same numbers
are logged with the KL to the reference (how far it went), the response length, and distinct-n
(Li et al. 2016: unique word n-grams / all word n-grams over every response; collapse drives it
down). Words, not token ids, so figures compare across tokenizers.
"""

from __future__ import annotations

import statistics


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams over all ``texts`` divided by their count (0 when there are none)."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def eval_stats(rows: list[dict]) -> dict[str, float]:
    """``eval/*`` metrics of rows with ``reward``, ``kl``, ``tokens``, ``stopped``, ``response``."""
    texts = [r["response"] for r in rows]
    return {
        "eval/reward": statistics.fmean(r["reward"] for r in rows),
        "eval/kl": statistics.fmean(r["kl"] for r in rows),
        "eval/response_length": statistics.fmean(r["tokens"] for r in rows),
        "eval/eos_rate": statistics.fmean(float(r["stopped"]) for r in rows),
        "eval/distinct_1": distinct_n(texts, 1),
        "eval/distinct_2": distinct_n(texts, 2),
    }
