import math

import pytest
import torch

from reward_service.train.losses import (
    bradley_terry_loss,
    centering_loss,
    pair_index,
    rating_loss,
)


def naive_bt(scores, sizes, margins):
    """Loop over groups and pairs exactly as the formula reads."""
    total, start = 0.0, 0
    for size, m in zip(sizes, margins, strict=True):
        group = scores[start : start + size]
        pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
        group_loss = sum(
            -math.log(1 / (1 + math.exp(-(group[i] - group[j] - m)))) for i, j in pairs
        )
        total += group_loss / len(pairs)
        start += size
    return total / len(sizes)


@pytest.mark.parametrize(
    ("sizes", "margins"), [([2, 2, 2], [0, 0.5, 1.0]), ([3, 2, 4], [0, 0, 0]), ([5], [0])]
)
def test_bradley_terry_matches_naive_loop(sizes, margins):
    torch.manual_seed(0)
    scores = torch.randn(sum(sizes), dtype=torch.float64)
    better, worse, margin, weight = pair_index(sizes, margins)
    got = bradley_terry_loss(scores, better, worse, margin.double(), weight.double())
    assert got.item() == pytest.approx(naive_bt(scores.tolist(), sizes, margins), rel=1e-6)


def test_pair_index_covers_all_k_choose_2_pairs_best_first():
    better, worse, _, weight = pair_index([3], [0.0])
    assert list(zip(better.tolist(), worse.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert weight.sum().item() == pytest.approx(1.0)


def test_bt_gradient_pushes_chosen_up():
    scores = torch.zeros(2, requires_grad=True)
    bradley_terry_loss(scores, *pair_index([2], [0.0])).backward()
    assert scores.grad[0] < 0 < scores.grad[1]


def test_centering_is_mean_squared_group_mean():
    scores = torch.tensor([1.0, 3.0, -2.0, 0.0, 2.0])
    expected = ((2.0**2) + (0.0**2)) / 2
    assert centering_loss(scores, [2, 3]).item() == pytest.approx(expected)


def test_rating_loss_is_mse():
    assert rating_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == 2.5
