"""Gold labelers: real third-party scorers that stand in for human raters in the demo.

Following Gao et al. (2022), a fixed "gold" reward labels synthetic preferences; the learned
reward model is a proxy for it, so PPO's progress can be checked against the gold score the
proxy never saw directly. Pluggable: a registered name or any ``module:function`` that maps a
list of texts to a list of floats (higher is better).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

GoldScorer = Callable[[Sequence[str]], list[float]]


def vader() -> GoldScorer:
    """VADER compound sentiment in [-1, 1]: the more positive, the better."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda texts: [analyzer.polarity_scores(t)["compound"] for t in texts]


def non_toxic() -> GoldScorer:
    """1 − P(profane) from alt-profanity-check's shipped linear classifier."""
    from profanity_check import predict_prob

    return lambda texts: [1.0 - float(p) for p in predict_prob(list(texts))]


REGISTRY: dict[str, Callable[[], GoldScorer]] = {"vader": vader, "non-toxic": non_toxic}


def get_gold(name: str) -> GoldScorer:
    if name in REGISTRY:
        return REGISTRY[name]()
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"unknown gold scorer {name!r}: use {sorted(REGISTRY)} or module:function")
    return getattr(importlib.import_module(module), attr)
