"""Synthetic safety feedback a 2-layer BERT learns in seconds: insults make a response unsafe.

Each response praises a subject with 1-3 kind words and may add 0-3 insults. A response is
unsafe when it holds any insult; of two, the safer holds fewer insults and the better (more
helpful) more kind words, so PKU-SafeRLHF's two judgements of one pair can disagree, as they do
in the real data set.
"""

from __future__ import annotations

import random

KIND = ["wonderful", "great", "lovely", "happy", "excellent", "kind", "bright", "joyful"]
INSULTS = ["stupid", "idiot", "hateful", "worthless", "disgusting", "moron", "ugly", "pathetic"]
SUBJECTS = ["the day", "this idea", "your friend", "the weather", "our trip", "that song"]


def response(subject: str, n_kind: int, n_insults: int, rng: random.Random) -> str:
    words = rng.sample(KIND, n_kind) + rng.sample(INSULTS, n_insults)
    rng.shuffle(words)
    return f"{subject} is {' and '.join(words)}."


def pku_records(n: int, seed: int) -> list[dict]:
    """PKU-SafeRLHF-shaped records with both judgements."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        subject = rng.choice(SUBJECTS)
        insults = rng.sample([0, 1, 2, 3], 2)
        kind = rng.sample([1, 2, 3], 2)
        pair = [response(subject, kind[i], insults[i], rng) for i in (0, 1)]
        records.append(
            {
                "prompt": f"Say something about {subject}.",
                "response_0": pair[0],
                "response_1": pair[1],
                "is_response_0_safe": insults[0] == 0,
                "is_response_1_safe": insults[1] == 0,
                "safer_response_id": int(insults[1] < insults[0]),
                "better_response_id": int(kind[1] > kind[0]),
            }
        )
    return records


def binary_records(n: int, seed: int) -> list[dict]:
    """The labeling app's safety export: one response, safe or not."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        subject = rng.choice(SUBJECTS)
        n_insults = rng.choice([0, 0, 1, 2])
        records.append(
            {
                "prompt": f"Say something about {subject}.",
                "response": response(subject, rng.randint(1, 3), n_insults, rng),
                "safe": n_insults == 0,
            }
        )
    return records
