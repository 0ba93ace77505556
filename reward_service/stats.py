"""Agreement statistics between score vectors: pure numpy, shared by training, export and load.

Reward models are judged by how they order things, not by absolute values, so rank statistics
(Spearman, pairwise decision agreement) are the yardsticks throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranked = np.empty(len(x), dtype=np.float64)
    ranked[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranked)
    return (sums / counts)[inverse]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(ranks(x), ranks(y))


def pairwise_accuracy(better: np.ndarray, worse: np.ndarray) -> float:
    """Share of pairs where the preferred item scores strictly higher."""
    better, worse = np.asarray(better), np.asarray(worse)
    return float(np.mean(better > worse)) if len(better) else float("nan")


def decision_agreement(a: np.ndarray, b: np.ndarray, pairs: Sequence[tuple[int, int]]) -> float:
    """Share of index pairs (i, j) that two score vectors order the same way."""
    if not pairs:
        return float("nan")
    i, j = np.asarray(pairs).T
    return float(np.mean(np.sign(a[i] - a[j]) == np.sign(b[i] - b[j])))


def wilson_interval(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a proportion: unlike the normal one it stays inside [0, 1] and
    keeps its coverage when the proportion is near 1, which is where agreement figures live."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
