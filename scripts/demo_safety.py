"""The safety demo (`make demo-safety`): PPO-Lagrangian holds a policy to a cost threshold.

Offline, on a 2-core CPU. Two real third-party scorers stand in for human labelers:
helpfulness is the strength of a response's sentiment, |VADER compound| (strong, engaging
statements score high, and so do insults), and safety is alt-profanity-check's shipped
classifier (P(profane) > 0.5 is unsafe). So PPO on the reward alone can raise it partly by
insulting, and the constraint has something to hold back.

1. corpus: Debian's fortunes, 15 % of them with an insult spliced in (the abuse that web text
   holds); a tiny policy pretrained on it                                → out/policy
2. feedback: pairs of corpus fragments judged by both labelers, written as one PKU-SafeRLHF
   file (better_response_id from helpfulness, safer_response_id and is_safe from safety)
3. the reward model (better_response_id) and the cost model (--objective cost) trained from
   that one file, exported, and served side by side
4. D, the cost threshold: the initial policy's mean P(unsafe) = σ(cost) on training prompts
   (the target: no less safe than where training started, in gold terms the start policy's
   gold unsafe rate)
5. PPO from the same start, same budget, for each seed: reward only; reward − fixed λ·P(unsafe);
   PPO-Lagrangian with threshold D
6. every policy sampled on held-out prompts; each completion written as JSONL (prompt,
   response) per run, scored by the gold labelers; a table and a plot

Each stage is the project's own CLI in a subprocess; a stage whose output exists is reused
(``--fresh`` redoes everything).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from demo import ROOT, cli, ppo_train, prepare, reward_service

from ppo_client.safety import LAMBDA_KD, LAMBDA_KP

REWARD, COST = "helpful", "cost"
INSULTS = [
    "you stupid idiot",
    "damn fool",
    "what a load of crap",
    "shut up, moron",
    "the bastards",
    "go to hell",
    "this is shit",
    "screw you, jerk",
]
UNSAFE_PROB = 0.5
# Smaller than `make demo`'s policy: six PPO runs have to fit beside the pretraining on 2 cores.
POLICY_SIZE = ("--n-layer", "3", "--n-embd", "128", "--vocab-size", "2048", "--block-size", "64")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "demo-safety", help="output folder")
    p.add_argument("--corpus", type=Path, default=Path("/usr/share/games/fortunes"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="PPO seeds")
    p.add_argument("--pretrain-seconds", type=float, default=150.0, help="pretraining budget")
    p.add_argument("--n-pairs", type=int, default=3000, help="labeled training pairs")
    p.add_argument("--model-steps", type=int, default=60, help="reward-model steps")
    p.add_argument("--cost-steps", type=int, default=200, help="cost-model steps")
    p.add_argument("--ppo-steps", type=int, default=60, help="PPO steps per run")
    p.add_argument("--fixed-lambda", type=float, default=1.0, help="λ of the fixed-penalty run")
    p.add_argument("--lambda-init", type=float, default=1.0, help="λ0 of the Lagrangian run")
    p.add_argument("--lambda-lr", type=float, default=5.0, help="λ step of the Lagrangian run")
    p.add_argument("--lambda-kp", type=float, default=LAMBDA_KP, help="K_P of the Lagrangian run")
    p.add_argument("--lambda-kd", type=float, default=LAMBDA_KD, help="K_D of the Lagrangian run")
    p.add_argument("--eval-prompts", type=int, default=1024, help="held-out prompts sampled")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    return p.parse_args()


# -- stage helpers ----------------------------------------------------------------------------


def run(cmd: list[str], log: Path) -> None:
    """One stage as a subprocess; its output goes to a log file, its failure stops the demo."""
    print(f"$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as sink:
        code = subprocess.call(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        sys.exit(f"stage failed (exit {code}); last lines of {log}:\n" + "\n".join(tail))
    print(f"  done in {time.perf_counter() - start:.0f} s (log: {log})", flush=True)


# -- gold labelers and data -------------------------------------------------------------------


def helpfulness(texts: list[str]) -> list[float]:
    """Gold helpfulness: sentiment strength |VADER compound| in [0, 1]."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [abs(analyzer.polarity_scores(t)["compound"]) for t in texts]


def profane(texts: list[str]) -> list[float]:
    """Gold safety: alt-profanity-check's P(profane); above 0.5 is unsafe."""
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(list(texts))] if texts else []


def salty(entry: str, rng: random.Random) -> str:
    words = entry.split()
    cut = rng.randint(1, max(1, len(words) - 1))
    return " ".join([*words[:cut], rng.choice(INSULTS) + ",", *words[cut:]])


def write_corpus(entries: list[str], folder: Path, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n%\n".join(salty(e, rng) if rng.random() < 0.15 else e for e in entries)
    (folder / "salty-fortunes").write_text(text + "\n%\n", encoding="utf-8")


def pku_records(entries: list[str], n: int, rng: random.Random) -> list[dict]:
    """(prompt, two fragments) judged by both gold labelers, as PKU-SafeRLHF lines."""
    triples = []
    while len(triples) < n:
        words = rng.choice(entries).split()
        k = min(rng.randint(2, 4), max(1, len(words) - 1))
        other = rng.choice(entries).split()
        a = " ".join(words[k : k + rng.randint(6, 20)])
        b = " ".join(other[: rng.randint(6, 20)])
        if a and b and a != b:
            triples.append((" ".join(words[:k]), a, b))
    texts = [t for _, a, b in triples for t in (a, b)]
    helpful, unsafe = helpfulness(texts), profane(texts)
    records = []
    for i, (prompt, a, b) in enumerate(triples):
        ha, hb, pa, pb = helpful[2 * i], helpful[2 * i + 1], unsafe[2 * i], unsafe[2 * i + 1]
        # Label noise as in demo-data: preferences drawn from a Bradley–Terry model of the gold.
        a_better = rng.random() < 1 / (1 + math.exp(-(ha - hb) / 0.1))
        records.append(
            {
                "prompt": prompt,
                "response_0": a,
                "response_1": b,
                "better_response_id": 0 if a_better else 1,
                "safer_response_id": 0 if pa <= pb else 1,
                "is_response_0_safe": pa <= UNSAFE_PROB,
                "is_response_1_safe": pb <= UNSAFE_PROB,
            }
        )
    return records


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- stages -----------------------------------------------------------------------------------


def sample(policy: Path, prompts: Path, out: Path, limit: int) -> list[dict]:
    if not out.is_file():
        run(
            cli(
                "ppo_client.cli",
                "sample",
                "--policy",
                policy,
                "--prompts",
                prompts,
                "--output",
                out,
                "--limit",
                limit,
                "--response-length",
                20,
                "--seed",
                1234,
            ),
            out.with_suffix(".log"),
        )
    return [{"prompt": r["prompt"], "response": r["response"]} for r in read_jsonl(out)]


def evaluate(rows: list[dict], url: str) -> dict[str, float]:
    from ppo_client.reward_client import RewardClient
    from ppo_client.safety import unsafe_probability

    responses = [r["response"] for r in rows]
    # One chunk at a time: a thousand texts at once would only meet the service's 429s.
    with RewardClient(url, max_concurrency=1) as client:
        scored = client.score_models(
            [r["prompt"] for r in rows], responses, [REWARD, COST], normalize=[True, False]
        )
    unsafe = profane(responses)
    rate = statistics.fmean(p > UNSAFE_PROB for p in unsafe)
    return {
        "gold_helpfulness": statistics.fmean(helpfulness(responses)),
        "gold_unsafe_rate": rate,
        # Binomial: how far the rate of these prompts may sit from the policy's own.
        "gold_unsafe_se": math.sqrt(rate * (1 - rate) / len(responses)),
        "reward_model": statistics.fmean(scored[REWARD]),
        "cost_model": statistics.fmean(scored[COST]),
        "cost_model_p_unsafe": statistics.fmean(map(unsafe_probability, scored[COST])),
        "cost_model_unsafe_share": statistics.fmean(c > 0 for c in scored[COST]),
    }


def ppo_settings(threshold: float, args: argparse.Namespace) -> dict[str, list[str]]:
    lagrange = ["--cost-model", COST, "--cost-threshold", f"{threshold:.4f}"]
    return {
        "reward only": [],
        f"fixed λ = {args.fixed_lambda:g}": [
            *("--cost-model", COST, "--lambda-init", str(args.fixed_lambda), "--lambda-lr", "0"),
        ],
        "Lagrangian": [
            *lagrange,
            *("--lambda-init", f"{args.lambda_init:g}", "--lambda-lr", f"{args.lambda_lr:g}"),
            *("--lambda-kp", f"{args.lambda_kp:g}", "--lambda-kd", f"{args.lambda_kd:g}"),
        ],
    }


def slug(setting: str) -> str:
    return setting.split()[0].lower()


def main() -> None:
    args = parse_args()
    out: Path = args.out
    prepare(out, fresh=args.fresh)
    started = time.perf_counter()
    from reward_service.data.corpus import read_entries, split_entries

    rng = random.Random(0)
    train_entries, held_entries = split_entries(read_entries(args.corpus), 0.1, seed=0)
    corpus, policy, data, repo = out / "corpus", out / "policy", out / "data", out / "models"

    # 1. corpus and policy
    if not (corpus / "salty-fortunes").is_file():
        write_corpus(train_entries, corpus, rng)
    if not (policy / "config.json").is_file():
        run(
            cli(
                "ppo_client.cli",
                "pretrain",
                "--corpus",
                corpus,
                "--output",
                policy,
                "--max-seconds",
                args.pretrain_seconds,
                *POLICY_SIZE,
            ),
            out / "pretrain.log",
        )

    # 2. feedback from the gold labelers, one PKU-SafeRLHF file
    data.mkdir(exist_ok=True)
    if not (data / "eval.jsonl").is_file():
        salted_train = [salty(e, rng) if rng.random() < 0.15 else e for e in train_entries]
        salted_held = [salty(e, rng) if rng.random() < 0.15 else e for e in held_entries]
        write_jsonl(data / "train.jsonl", pku_records(salted_train, args.n_pairs, rng))
        write_jsonl(data / "eval.jsonl", pku_records(salted_held, args.n_pairs // 6, rng))
        prompts = {" ".join(e.split()[: rng.randint(2, 4)]) for e in train_entries}
        held = {" ".join(e.split()[: rng.randint(2, 4)]) for e in held_entries} - prompts
        write_jsonl(data / "prompts.jsonl", [{"prompt": p} for p in sorted(prompts)])
        held_rows = [{"prompt": p} for p in sorted(held)]
        rng.shuffle(held_rows)
        write_jsonl(data / "heldout_prompts.jsonl", held_rows)

    # 3. reward model and cost model from the same file; both exported and served
    for name, objective, steps in (
        (REWARD, "reward", args.model_steps),
        (COST, "cost", args.cost_steps),
    ):
        checkpoint = out / f"{name}-checkpoint"
        if not (checkpoint / "report.json").is_file():
            run(
                cli(
                    "reward_service.cli",
                    "train",
                    "--objective",
                    objective,
                    "--data",
                    data / "train.jsonl",
                    "--eval-data",
                    data / "eval.jsonl",
                    "--output",
                    checkpoint,
                    "--steps",
                    steps,
                    "--max-length",
                    32,
                    "--batch-size",
                    16,
                    "--lr",
                    "1e-4",
                    "--bf16",
                ),
                out / f"{name}-train.log",
            )
        if not any((repo / name).glob("*/manifest.json")):
            run(
                cli(
                    "reward_service.cli",
                    "export",
                    "--checkpoint",
                    checkpoint,
                    "--model-repo",
                    repo,
                    "--name",
                    name,
                ),
                out / f"{name}-export.log",
            )
    model_metrics = {
        name: json.loads((out / f"{name}-checkpoint" / "report.json").read_text())["metrics"]
        for name in (REWARD, COST)
    }

    results: dict[str, dict[int, dict[str, float]]] = {}
    # ONNX Runtime by name: `auto` would time every runtime on both models before it is ready.
    serve_options = ["--default-model", REWARD, "--backend", "onnxruntime"]
    with reward_service(repo, out / "serve.log", extra=serve_options, timeout=300) as url:
        # 4. the threshold: the initial policy's mean P(unsafe) on training prompts
        start_rows = sample(policy, data / "prompts.jsonl", out / "start-train.jsonl", 256)
        start = evaluate(start_rows, url)
        threshold = start["cost_model_p_unsafe"]
        before_rows = sample(
            policy, data / "heldout_prompts.jsonl", out / "eval-before.jsonl", args.eval_prompts
        )
        write_jsonl(out / "eval-before.jsonl", before_rows)
        results["before"] = {0: evaluate(before_rows, url)}

        # 5. PPO, three settings × seeds, same start and budget; 6. held-out evaluation
        config = out / "ppo.json"
        config.write_text(json.dumps(PPO_CONFIG | {"steps": args.ppo_steps}))
        # Seeds outside settings: a demo stopped early still has every setting at seed 1.
        for seed in args.seeds:
            for setting, flags in ppo_settings(threshold, args).items():
                results.setdefault(setting, {})
                run_dir = out / f"ppo-{slug(setting)}-seed{seed}"
                if not (run_dir / "model.safetensors").is_file():
                    run(
                        [
                            *ppo_train(config, policy, data, url, REWARD, run_dir, seed),
                            "--no-progress",
                            *flags,
                        ],
                        out / f"ppo-{slug(setting)}-seed{seed}.log",
                    )
                rows = sample(
                    run_dir,
                    data / "heldout_prompts.jsonl",
                    run_dir / "eval.jsonl",
                    args.eval_prompts,
                )
                write_jsonl(run_dir / "eval.jsonl", rows)
                results[setting][seed] = evaluate(rows, url)
                log = read_jsonl(run_dir / "log.jsonl")
                if "safety/lambda" in log[-1]:
                    results[setting][seed]["last_lambda"] = log[-1]["safety/lambda"]

    summary = {
        "threshold": threshold,
        "start_train_prompts": start,
        "models": model_metrics,
        "results": results,
        "minutes": (time.perf_counter() - started) / 60,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + table(summary))
    print(f"plot: {plot(summary, out)}")
    print(f"demo finished in {summary['minutes']:.1f} min; outputs in {out}")


PPO_CONFIG = {
    "rollout_batch_size": 32,
    "num_minibatches": 2,
    "ppo_epochs": 2,
    "score_chunk_size": 16,
    "learning_rate": 1.5e-4,
    "temperature": 0.7,
    "response_length": 20,
    "prompt_max_tokens": 16,
    "kl_coef": 0.05,
    "kl_target": 3.0,  # what docs/safety.md's figures were measured at
    "checkpoint_every": 10,
    "num_eval_samples": 0,
    "torch_threads": 1,  # the demo shares its 2 cores with the reward service
}


def table(summary: dict) -> str:
    cost, reward = summary["models"][COST], summary["models"][REWARD]
    lines = [
        f"Reward model: held-out pairwise accuracy {reward['pairwise_accuracy']:.3f}. Cost "
        f"model: sign accuracy {cost['sign_accuracy']:.3f}, safer-pair accuracy "
        f"{cost['safer_pair_accuracy']:.3f} (balanced sign accuracy "
        f"{cost['balanced_sign_accuracy']:.3f}: unsafe {cost['sign_accuracy_unsafe']:.3f}, safe "
        f"{cost['sign_accuracy_safe']:.3f}; all-safe baseline {1 - cost['unsafe_share']:.3f}).",
        f"Threshold D = {summary['threshold']:.3f}: the initial policy's mean P(unsafe) on "
        f"training prompts, where its gold unsafe rate is "
        f"{summary['start_train_prompts']['gold_unsafe_rate']:.3f}.",
        "",
        "| policy | gold helpfulness | gold unsafe rate | P(unsafe) (model) | reward (model) "
        "| gold unsafe rate: standard error | λ at the last step |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting, by_seed in summary["results"].items():
        cells = []
        for key in ("gold_helpfulness", "gold_unsafe_rate", "cost_model_p_unsafe", "reward_model"):
            values = [r[key] for r in by_seed.values()]
            mean = f"**{statistics.fmean(values):.3f}** " if len(values) > 1 else ""
            cells.append(mean + " / ".join(f"{v:.3f}" for v in values))
        errors = [r["gold_unsafe_se"] for r in by_seed.values()]
        mean_error = math.sqrt(sum(e * e for e in errors)) / len(errors)
        cells.append(f"**{mean_error:.3f}** " + " / ".join(f"{e:.3f}" for e in errors))
        lambdas = [r.get("last_lambda") for r in by_seed.values()]
        cells.append(" / ".join("–" if x is None else f"{x:.2f}" for x in lambdas))
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Bold: the mean over seeds, then one value per seed; held-out prompts, temperature 0.7."
    )
    return "\n".join(lines)


def plot(summary: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5), constrained_layout=True)
    settings = list(summary["results"])
    for ax, key, title in (
        (axes[0], "gold_helpfulness", "gold helpfulness |VADER| (held-out)"),
        (axes[1], "gold_unsafe_rate", "gold unsafe rate, P(profane) > 0.5 (held-out)"),
    ):
        for i, setting in enumerate(settings):
            values = [r[key] for r in summary["results"][setting].values()]
            ax.bar(i, statistics.fmean(values), color=f"C{i}", alpha=0.6)
            ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(settings)), settings, rotation=15)
        ax.set_title(title)
    before = summary["results"]["before"][0]["gold_unsafe_rate"]
    axes[1].axhline(before, color="black", ls="--", lw=1, label="before PPO (the target)")
    axes[1].legend()
    for run_dir in sorted(out.glob("ppo-*-seed*")):
        rows = read_jsonl(run_dir / "log.jsonl") if run_dir.is_dir() else []
        if rows and "safety/lambda" in rows[0]:
            steps = [r["step"] for r in rows]
            line = axes[2].plot(steps, [r["safety/lambda"] for r in rows], label=run_dir.name)
            if "safety/lambda_integral" in rows[0]:  # the PID's integral: where λ is heading
                integral = [r["safety/lambda_integral"] for r in rows]
                axes[2].plot(steps, integral, color=line[0].get_color(), lw=2.5, alpha=0.5)
            axes[3].plot(steps, [r["safety/cost"] for r in rows], label=run_dir.name)
    axes[2].set_title("λ per PPO step (thick: its integral term I)")
    axes[3].axhline(summary["threshold"], color="black", ls="--", lw=1, label="D")
    axes[3].set_title("batch mean P(unsafe) = σ(cost) per PPO step")
    for ax in axes[2:]:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    png = out / "demo-safety.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


if __name__ == "__main__":
    main()
