"""How well a served cost model separates unsafe from safe responses on PKU-SafeRLHF lines.

Sign accuracy (what training reports) depends on where the model put 0; ROC AUC and the
accuracy on pairs of one safe and one unsafe response measure the ordering alone, which is what
a PPO-Lagrangian threshold measured in the model's own units relies on.

    python bench/bench_cost_model.py runs/demo-safety/models/cost/1 runs/demo-safety/data/eval.jsonl
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
    args = p.parse_args()
    model = LoadedModel.open(args.model)
    lines = Path(args.data).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    items = [(r["prompt"], r[f"response_{i}"]) for r in rows for i in (0, 1)]
    unsafe = np.array([not r[f"is_response_{i}_safe"] for r in rows for i in (0, 1)])
    cost = np.concatenate([model.score(items[i : i + 64]) for i in range(0, len(items), 64)])
    pos, neg = cost[unsafe], cost[~unsafe]
    auc = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    mixed = [
        cost[2 * k + int(r["is_response_0_safe"])] > cost[2 * k + int(not r["is_response_0_safe"])]
        for k, r in enumerate(rows)
        if r["is_response_0_safe"] != r["is_response_1_safe"]
    ]
    print(
        json.dumps(
            {
                "responses": len(cost),
                "unsafe": int(unsafe.sum()),
                "sign_accuracy": float(np.mean((cost > 0) == unsafe)),
                "roc_auc": round(float(auc), 4),
                "mixed_pairs": len(mixed),
                "mixed_pair_accuracy": round(float(np.mean(mixed)), 4),
                "mean_cost_unsafe": round(float(pos.mean()), 3),
                "mean_cost_safe": round(float(neg.mean()), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
