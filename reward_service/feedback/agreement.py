"""Inter-annotator agreement: Cohen's κ for two annotators, Krippendorff's α for any number.

Pure functions over plain values. κ corrects raw agreement for the agreement two annotators
would reach by chance with their own label frequencies; α does the same for many annotators
with missing labels and a distance between values (nominal: equal or not; interval: squared
difference, for 1-5 ratings). Both are NaN when chance already explains everything (every
label the same), where they are undefined.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

Metric = Literal["nominal", "interval"]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """κ = (p_o − p_e) / (1 − p_e) over items both annotators labeled, in the same order."""
    if len(a) != len(b):
        raise ValueError("both annotators need one label per shared item")
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    freq_a, freq_b = Counter(a), Counter(b)
    expected = sum(freq_a[c] * freq_b[c] for c in freq_a) / (n * n)
    if expected == 1.0:
        return float("nan")
    return (observed - expected) / (1.0 - expected)


def coincidences(units: Sequence[Sequence[Hashable]]) -> tuple[list[Hashable], np.ndarray]:
    """Krippendorff's coincidence matrix: each ordered pair of values within a unit, weighted
    1/(m_u − 1) so every pairable value contributes exactly one count."""
    values = sorted({v for unit in units if len(unit) > 1 for v in unit}, key=repr)
    index = {v: i for i, v in enumerate(values)}
    matrix = np.zeros((len(values), len(values)))
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        counts = np.zeros(len(values))
        for v in unit:
            counts[index[v]] += 1
        # Pairs (i, j), i != j: outer product minus each value paired with itself.
        matrix += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    return values, matrix


def distance(values: list[Hashable], metric: Metric) -> np.ndarray:
    if metric == "nominal":
        return 1.0 - np.eye(len(values))
    numbers = np.asarray(values, dtype=np.float64)
    return (numbers[:, None] - numbers[None, :]) ** 2


def krippendorff_alpha(units: Sequence[Sequence[Hashable]], metric: Metric = "nominal") -> float:
    """α = 1 − D_o / D_e; ``units`` holds, per item, the values of whoever labeled it."""
    values, o = coincidences(units)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    delta = distance(values, metric)
    observed = (o * delta).sum() / n
    expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    if expected == 0:
        return float("nan")
    return float(1.0 - observed / expected)
