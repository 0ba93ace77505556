"""How well a served cost model separates unsafe from safe responses on PKU-SafeRLHF lines.

Sign accuracy (what training reports) depends on where the model put 0; ROC AUC and the
accuracy on pairs of one safe and one unsafe response measure the ordering alone, which is what
a PPO-Lagrangian threshold measured in the model's own units relies on.

    python bench/bench_cost_model.py runs/demo-safety/models/cost/1 runs/demo-safety/data/eval.jsonl

With ``--samples`` (a policy's completions as JSONL, e.g. the safety demo's start-train.jsonl) it
also says what a penalty −λ·f(c) pays on that policy's text for three forms of f: the raw cost
(Safe RLHF), max(c, 0), and P(unsafe) = σ(c) (what ppo_client/safety.py uses). "empty bonus" is
how much more an empty response scores than the policy's average one at λ = 1: what a fixed
penalty pays for saying nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from reward_service.scorer import LoadedModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="version folder of the cost model")
    p.add_argument("data", help="PKU-SafeRLHF JSONL with is_response_*_safe")
    p.add_argument("--samples", type=Path, help="a policy's completions: prompt, response")
    args = p.parse_args()
    model = LoadedModel.open(args.model)
    lines = Path(args.data).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    items = [(r["prompt"], r[f"response_{i}"]) for r in rows for i in (0, 1)]
    unsafe = np.array([not r[f"is_response_{i}_safe"] for r in rows for i in (0, 1)])
    cost = score(model, items)
    pos, neg = cost[unsafe], cost[~unsafe]
    auc = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    mixed = [
        cost[2 * k + int(r["is_response_0_safe"])] > cost[2 * k + int(not r["is_response_0_safe"])]
        for k, r in enumerate(rows)
        if r["is_response_0_safe"] != r["is_response_1_safe"]
    ]
    report = {
        "responses": len(cost),
        "unsafe": int(unsafe.sum()),
        "sign_accuracy": float(np.mean((cost > 0) == unsafe)),
        "sign_accuracy_unsafe": round(float(np.mean(pos > 0)), 4),
        "sign_accuracy_safe": round(float(np.mean(neg <= 0)), 4),
        "roc_auc": round(float(auc), 4),
        "mixed_pairs": len(mixed),
        "mixed_pair_accuracy": round(float(np.mean(mixed)), 4),
        "mean_cost_unsafe": round(float(pos.mean()), 3),
        "mean_cost_safe": round(float(neg.mean()), 3),
    }
    if args.samples:
        report["policy_samples"] = penalty_forms(model, args.samples)
    print(json.dumps(report, indent=1))


def score(model: LoadedModel, items: list[tuple[str, str]]) -> np.ndarray:
    return np.concatenate([model.score(items[i : i + 64]) for i in range(0, len(items), 64)])


def penalty_forms(model: LoadedModel, samples: Path) -> dict:
    """Each form's mean on the policy's text, and what an empty response gains over it."""
    from profanity_check import predict_prob

    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    cost = score(model, [(r["prompt"], r["response"]) for r in rows])
    empty = score(model, [(r["prompt"], "") for r in rows])
    forms = {
        "raw": lambda c: c,
        "hinge": lambda c: np.maximum(c, 0.0),
        "sigmoid": lambda c: 1 / (1 + np.exp(-c)),
    }
    unsafe = predict_prob([r["response"] for r in rows]) > 0.5
    out = {
        "n": len(rows),
        "gold_unsafe_rate": float(unsafe.mean()),
        "model_unsafe_share": float(np.mean(cost > 0)),
    }
    for name, f in forms.items():
        penalty = f(cost)
        out[f"{name}_mean"] = round(float(penalty.mean()), 4)
        out[f"{name}_empty_bonus"] = round(float(penalty.mean() - f(empty).mean()), 4)
        # Signal (gold-unsafe vs gold-safe) against the spread it adds among safe responses.
        gap = penalty[unsafe].mean() - penalty[~unsafe].mean()
        out[f"{name}_gap_over_safe_std"] = round(float(gap / penalty[~unsafe].std()), 2)
    return out


if __name__ == "__main__":
    main()
