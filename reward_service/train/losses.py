"""Reward-model losses as small pure functions over a flat score vector.

A batch is a list of groups (one prompt, K responses best first) flattened into one forward
pass. ``pair_index`` turns the groups into (better, worse) index pairs with a weight of
1/C(K,2) each, so a K-way ranking counts as one batch element, as in InstructGPT, instead of
letting long rankings dominate the gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pair_index(sizes: Sequence[int], margins: Sequence[float]) -> tuple[torch.Tensor, ...]:
    """(better, worse, margin, weight) tensors for all within-group pairs."""
    better, worse, margin, weight = [], [], [], []
    start = 0
    for size, group_margin in zip(sizes, margins, strict=True):
        n_pairs = size * (size - 1) // 2
        for i in range(size):
            for j in range(i + 1, size):
                better.append(start + i)
                worse.append(start + j)
                margin.append(group_margin)
                weight.append(1.0 / n_pairs)
        start += size
    return (
        torch.tensor(better, dtype=torch.long),
        torch.tensor(worse, dtype=torch.long),
        torch.tensor(margin, dtype=torch.float32),
        torch.tensor(weight, dtype=torch.float32),
    )


def bradley_terry_loss(
    scores: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    margin: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """Mean over groups of -log σ(r_better − r_worse − margin)."""
    logits = scores[better] - scores[worse] - margin
    return -(weight * F.logsigmoid(logits)).sum() / weight.sum()


def centering_loss(scores: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Mean squared group-mean score: pins the reward's free offset near zero.

    Bradley–Terry only sees differences, so the absolute level drifts; a small penalty on it
    (Eisenstein et al., 2023) keeps raw scores comparable across checkpoints.
    """
    means = torch.stack([chunk.mean() for chunk in torch.split(scores, list(sizes))])
    return (means**2).mean()


def rating_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Regression on standardized ratings (the caller standardizes with training statistics)."""
    return F.mse_loss(scores, targets)


def sign_index(safe: Sequence[bool | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """(item index, sign) of the items with a safety label: sign +1 unsafe, −1 safe."""
    index = [i for i, s in enumerate(safe) if s is not None]
    sign = [-1.0 if safe[i] else 1.0 for i in index]
    return torch.tensor(index, dtype=torch.long), torch.tensor(sign, dtype=torch.float32)


def cost_loss(
    costs: torch.Tensor,
    safer: torch.Tensor,
    less_safe: torch.Tensor,
    weight: torch.Tensor,
    labeled: torch.Tensor,
    sign: torch.Tensor,
) -> torch.Tensor:
    """Safe RLHF's cost-model loss: −log σ(c_less_safe − c_safer) − log σ(sign · c).

    The order term alone would leave the cost's offset free, as Bradley–Terry leaves a reward's;
    the sign term pins it, so that 0 is the boundary between safe and unsafe and a PPO
    constraint "expected cost ≤ D" means something. Each term is a mean over its own pairs or
    labeled items, so binary-only or order-only data train with the same code.

    The sign term weighs the two classes equally (the mean of each class's mean): unsafe text
    is usually the rare class (about one response in ten), and a plain mean lets the model sit
    on "everything is safe" with its boundary far below the unsafe responses, which is right
    nine times in ten and useless as a constraint.
    """
    loss = costs.new_zeros(())
    if len(safer):
        order = F.logsigmoid(costs[less_safe] - costs[safer])
        loss = loss - (weight * order).sum() / weight.sum()
    if len(labeled):
        fit = F.logsigmoid(sign * costs[labeled])
        classes = [fit[sign == s] for s in (1.0, -1.0) if bool((sign == s).any())]
        loss = loss - torch.stack([c.mean() for c in classes]).mean()
    return loss
