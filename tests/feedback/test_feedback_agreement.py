"""Cohen's κ and Krippendorff's α against naive references and the authors' worked examples."""

from __future__ import annotations

import math
import random
from itertools import permutations

import pytest

from reward_service.feedback.agreement import cohen_kappa, krippendorff_alpha


def naive_kappa(a: list, b: list) -> float:
    n = len(a)
    categories = set(a) | set(b)
    observed = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    expected = 0.0
    for c in categories:
        expected += (a.count(c) / n) * (b.count(c) / n)
    return (observed - expected) / (1 - expected)


def naive_alpha(units: list[list], delta) -> float:
    """α from its pairwise definition: within-unit disagreement over all-pairs disagreement."""
    pairable = [u for u in units if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    observed = 0.0
    for unit in pairable:
        m = len(unit)
        for i, j in permutations(range(m), 2):
            observed += delta(unit[i], unit[j]) / (m - 1)
    observed /= n
    expected = sum(delta(x, y) for x, y in permutations(values, 2)) / (n * (n - 1))
    return 1 - observed / expected


def nominal(x, y) -> float:
    return float(x != y)


def interval(x, y) -> float:
    return float((x - y) ** 2)


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units,
# missing values as None. He reports alpha = 0.743 (nominal) and 0.849 (interval).
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def units_of(table: list[list]) -> list[list]:
    return [[v for v in column if v is not None] for column in zip(*table, strict=True)]


def test_alpha_reproduces_krippendorffs_worked_example():
    units = units_of(KRIPPENDORFF_2011)
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_kappa_reproduces_the_textbook_two_by_two_table():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> kappa 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(20))
def test_kappa_matches_the_naive_formula(seed):
    rng = random.Random(seed)
    categories = list(range(rng.randint(2, 5)))
    a = [0, 1] + [rng.choice(categories) for _ in range(rng.randint(5, 60))]
    b = [x if rng.random() < 0.6 else rng.choice(categories) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(naive_kappa(a, b))


@pytest.mark.parametrize("seed", range(20))
def test_alpha_matches_the_pairwise_definition(seed):
    rng = random.Random(seed)
    units = [[1, 2], [3, 3, 4]]  # at least two values seen, so expected disagreement > 0
    for _ in range(rng.randint(3, 25)):
        truth = rng.randint(1, 5)
        units.append(
            [truth if rng.random() < 0.7 else rng.randint(1, 5) for _ in range(rng.randint(1, 4))]
        )
    assert krippendorff_alpha(units, "nominal") == pytest.approx(naive_alpha(units, nominal))
    assert krippendorff_alpha(units, "interval") == pytest.approx(naive_alpha(units, interval))


def test_perfect_agreement_is_one_and_chance_is_near_zero():
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert krippendorff_alpha([[0, 0], [1, 1, 1], [0, 0]]) == 1.0
    rng = random.Random(0)
    a = [rng.randint(0, 1) for _ in range(4000)]
    b = [rng.randint(0, 1) for _ in range(4000)]
    assert abs(cohen_kappa(a, b)) < 0.05
    assert abs(krippendorff_alpha([[x, y] for x, y in zip(a, b, strict=True)])) < 0.05


def test_undefined_cases_are_nan_not_errors():
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))  # chance explains everything
    assert math.isnan(krippendorff_alpha([[1], [2]]))  # nothing pairable
    assert math.isnan(krippendorff_alpha([[3, 3], [3, 3]]))
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])


def test_rankings_agree_as_whole_orders():
    # Ranking decisions are tuples: two orders agree only when identical.
    a = [(0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1)]
    b = [(0, 1, 2), (2, 1, 0), (1, 2, 0), (0, 2, 1)]
    assert cohen_kappa(a, b) == pytest.approx(naive_kappa(a, b))
    assert krippendorff_alpha([list(p) for p in zip(a, b, strict=True)]) < 1.0
