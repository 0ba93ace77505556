"""Gold reward vs KL on held-out prompts (Gao et al. 2022): ours, TRL's PPO, and best-of-n.

A reward model is a proxy; what the policy should gain is the *gold* reward the proxy was
trained to imitate (here VADER, which labeled the demo's preference pairs), and every nat of KL
from the starting policy is language given away for it. So each method is a curve of (KL, gold):

- **ours**: ``ppo_client.trainer.PPOTrainer`` with its defaults and the demo's budget
  (``scripts/demo_ppo.toml``), the policy saved every ``--every`` steps;
- **TRL**: ``trl.experimental.ppo.PPOTrainer`` (trl 1.12.0, in ``.bench-venv-trl``) on the same
  starting policy, prompts, reward model and settings, saved at the same steps. TRL's PPO has a
  fixed β only, so it runs at our initial β;
- **best-of-n**: n samples of the *starting* policy per prompt, the proxy's favourite kept. Its
  KL to the starting policy is log n − (n − 1)/n (Stiennon et al. 2020), with no training.

Every checkpoint is sampled by one sampler (``bench_ppo_vs_trl.sample_and_measure``: one
response per held-out prompt, same seed, temperature and length), its sequence KL to the start
measured with both models' logprobs (k1), and its responses scored by VADER. Set-up of the TRL
venv: see ``bench/bench_ppo_vs_trl.py``.

    .venv/bin/python bench/bench_gold_vs_kl.py --policy runs/demo/policy \\
        --reward-repo runs/demo/models --reward-model demo \\
        --prompts runs/demo/data/prompts.jsonl --heldout runs/demo/data/heldout_prompts.jsonl \\
        --output runs/bench-gold-vs-kl
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import bench_ppo_memory
import bench_ppo_vs_trl as pvt

ROOT = Path(__file__).resolve().parents[1]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ base) for a proxy without ties: log n − (n − 1)/n nats."""
    return math.log(n) - (n - 1) / n


def gold(texts: list[str]) -> list[float]:
    from reward_service.data.gold import get_gold

    return [float(g) for g in get_gold("vader")(texts)]


def point(label: str, step: int, policy: Path, args: argparse.Namespace, prompts: list[str]):
    """(KL, gold) of one checkpoint on the held-out prompts, with length and distinct-2."""
    from ppo_client.evaluation import distinct_n

    samples = pvt.sample_and_measure(policy, args.policy, prompts, pvt.HYPER, seed=args.seed)
    return {
        "method": label,
        "step": step,
        "kl": statistics.fmean(samples["kl"]),
        "gold": statistics.fmean(gold(samples["responses"])),
        "length": statistics.fmean(samples["length"]),
        "distinct_2": distinct_n(samples["responses"], 2),
    }


def best_of_n(args: argparse.Namespace, url: str, prompts: list[str]) -> list[dict[str, Any]]:
    """Best-of-n for n = 1, 2, 4, … ``--max-n``: the first n of ``max-n`` samples per prompt,
    ranked by the proxy (the served reward model, with training's missing-EOS rule)."""
    from ppo_client.reward_client import RewardClient

    n_max = args.max_n
    repeated = [p for p in prompts for _ in range(n_max)]
    texts, finished = [], []
    for start in range(0, len(repeated), 512):  # bounded memory: the KL forward keeps logits
        part = repeated[start : start + 512]
        samples = pvt.sample_and_measure(
            args.policy, args.policy, part, pvt.HYPER, args.seed + 1 + start
        )
        texts += samples["responses"]
        finished += samples["finished"]
    with RewardClient(url, args.reward_model, normalize=True) as client:
        proxy = client.score(repeated, texts)
    missing = pvt.HYPER["missing_eos_score"]
    proxy = [
        s if done or missing is None else missing for s, done in zip(proxy, finished, strict=True)
    ]
    golds = gold(texts)
    rows, n = [], 1
    while n <= n_max:
        picks = []
        for i in range(len(prompts)):
            block = range(i * n_max, i * n_max + n)
            picks.append(max(block, key=lambda j: proxy[j]))
        rows.append(
            {
                "method": "best-of-n",
                "n": n,
                "kl": best_of_n_kl(n),
                "gold": statistics.fmean(golds[j] for j in picks),
            }
        )
        n *= 2
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    styles = {"ours": "o-", "TRL PPOTrainer": "s-", "best-of-n": "^--"}
    for method, style in styles.items():
        curve = sorted((r for r in rows if r["method"] == method), key=lambda r: r["kl"])
        ax.plot([r["kl"] for r in curve], [r["gold"] for r in curve], style, label=method)
        for r in curve:
            tag = f"n={r['n']}" if method == "best-of-n" else f"{r['step']}"
            ax.annotate(tag, (r["kl"], r["gold"]), xytext=(3, 3), textcoords="offset points")
    ax.set(
        xlabel="KL to the starting policy (nats, held-out prompts)",
        ylabel="gold reward (VADER), held-out mean",
        title="Gold reward vs KL (PPO points labeled by step)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)


def main() -> int:
    argv = sys.argv[1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, required=True, help="starting causal LM folder")
    p.add_argument("--reward-repo", type=Path, required=True, help="model repository")
    p.add_argument("--reward-model", default="demo", help="model name in the repository")
    p.add_argument("--prompts", type=Path, required=True, help="training prompts file")
    p.add_argument("--heldout", type=Path, required=True, help="held-out prompts file")
    p.add_argument("--config", type=Path, default=ROOT / "scripts" / "demo_ppo.toml")
    p.add_argument("--steps", type=int, default=None, help="PPO steps (default: the config's)")
    p.add_argument("--every", type=int, default=10, help="steps between saved checkpoints")
    p.add_argument("--train-prompts", type=int, default=4096)
    p.add_argument("--eval-prompts", type=int, default=128)
    p.add_argument("--max-n", type=int, default=64, help="largest n of best-of-n (power of 2)")
    p.add_argument("--seed", type=int, default=1234, help="held-out sampling seed")
    p.add_argument("--output", type=Path, default=ROOT / "runs" / "bench-gold-vs-kl")
    args = p.parse_args(argv)

    # The shared settings: the demo's config on top of the comparison's fixed ones; what TRL's
    # PPO cannot do (adaptive β) goes to ours only, TRL keeps the initial β.
    from ppo_client.config import PPOConfig

    demo = PPOConfig.from_file(args.config)
    defaults = PPOConfig()
    args.steps = args.steps or demo["steps"]
    for key in pvt.HYPER:
        if key in demo:
            pvt.HYPER[key] = demo[key]
        elif key not in ("max_grad_norm", "reward_normalize", "seed"):
            pvt.HYPER[key] = getattr(defaults, key)
    args.ours_only = {
        key: demo.get(key, getattr(defaults, key))
        for key in ("adaptive_kl", "kl_target", "kl_horizon", "max_grad_norm")
    }
    args.snapshot_every = args.every

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    train_file = out / "train_prompts.jsonl"
    train_prompts = pvt.read_prompts(args.prompts, args.train_prompts)
    train_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train_prompts))
    args.prompts = train_file
    heldout = pvt.read_prompts(args.heldout, args.eval_prompts)

    # Each phase keeps its result in --output, so a rerun (after TRL's venv appears, say)
    # does only what is missing.
    last = f"step-{args.steps - args.steps % args.every}"
    bon_file, trl_failure = out / "best_of_n.json", None
    service, url = pvt.start_service(args.reward_repo, out / "service.log")
    try:
        if not bon_file.is_file():
            print("best-of-n from the starting policy ...", flush=True)
            bon_file.write_text(json.dumps(best_of_n(args, url, heldout)))
        # Both trainings at once, each in its own process: no time is reported here, and on
        # a 2-core machine this halves the wait.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            ours = trl = None
            if not (out / "ours" / last).is_dir():
                print("training with ours ...", flush=True)
                ours = pool.submit(pvt.run_ours, args, out / "ours", url, train_file)
            if not (out / "trl" / last).is_dir():
                print("training with TRL's PPOTrainer ...", flush=True)
                trl = pool.submit(pvt.run_trl, args, out / "trl")
            if ours is not None:
                ours.result()
            if trl is not None:
                try:
                    trl.result()
                except (SystemExit, OSError) as exc:  # no TRL venv, or TRL failed: go on
                    trl_failure = str(exc)
                    print(f"TRL's PPOTrainer did not run: {trl_failure}", flush=True)
    finally:
        service.terminate()
        service.wait(timeout=60)
    print("evaluating checkpoints on held-out prompts ...", flush=True)
    rows = json.loads(bon_file.read_text())
    start = point("start", 0, args.policy, args, heldout)
    methods = [("ours", out / "ours")] + ([] if trl_failure else [("TRL PPOTrainer", out / "trl")])
    for label, folder in methods:
        rows.append({**start, "method": label})
        for step in range(args.every, args.steps + 1, args.every):
            rows.append(point(label, step, folder / f"step-{step}", args, heldout))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": " ".join(sys.argv),
        "machine": bench_ppo_memory.machine(),
        "hyper": pvt.HYPER,
        "ours_only": args.ours_only,
        "steps": args.steps,
        "trl_failure": trl_failure,
        "rows": rows,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    plot(rows, out / "gold_vs_kl.png")
    print("| method | step / n | KL (nats) | gold | length | distinct-2 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        tag = r.get("n", r.get("step"))
        extra = f"{r['length']:.1f} | {r['distinct_2']:.3f}" if "length" in r else "– | –"
        print(f"| {r['method']} | {tag} | {r['kl']:.2f} | {r['gold']:+.3f} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
