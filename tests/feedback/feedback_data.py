"""Task files for the labeling tests: comparisons whose better response a script can tell."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rm_fixtures import NEGATIVE, POSITIVE, SUBJECTS


def sentiment_tasks(n: int, seed: int) -> list[dict]:
    """Comparisons where the positive response is better; it sits first or second at random."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        subject = rng.choice(SUBJECTS)
        good = f"{subject} is {rng.choice(POSITIVE)} and {rng.choice(POSITIVE)} ({i})."
        bad = f"{subject} is {rng.choice(NEGATIVE)} and {rng.choice(NEGATIVE)} ({i})."
        responses = [good, bad] if rng.random() < 0.5 else [bad, good]
        tasks.append({"prompt": f"Tell me about {subject}. ({i})", "responses": responses})
    return tasks


def is_positive(text: str) -> bool:
    return any(f" {word} " in f" {text} " for word in POSITIVE)


def write_tasks(path: Path, tasks: list[dict]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path
