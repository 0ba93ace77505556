"""The three RLHF stages end to end, offline, on a 2-core CPU in about 20 minutes (`make demo`).

1. pretrain a tiny GPT-2-style policy on Debian's fortunes       → runs/demo/policy
2. build preference data labeled by a gold scorer (VADER)          → runs/demo/data
   train the reward model and export it to the model repository    → runs/demo/rm, runs/demo/models
3. start the reward service, fine-tune the policy with PPO against
   it for each seed, stop the service (always, also on error)      → runs/demo/ppo-seed<N>
4. sample before/after on held-out prompts: proxy (reward model) reward, gold (VADER) reward, and
   KL to the initial policy; print the table, write runs/demo/report.md and the plots.

Each stage is the project's own CLI in a subprocess, exactly what a user would type. A stage
whose output already exists is reused (``--fresh`` redoes everything), so a rerun after a
failure, or with other PPO settings, starts where it matters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "demo"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "demo", help="output folder")
    p.add_argument("--corpus", default="/usr/share/games/fortunes", help="text corpus")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="PPO seeds")
    p.add_argument("--pretrain-seconds", type=float, default=300.0, help="pretraining budget")
    p.add_argument("--rm-steps", type=int, default=150, help="reward-model optimizer steps")
    p.add_argument("--ppo-config", type=Path, default=ROOT / "scripts" / "demo_ppo.toml")
    p.add_argument("--ppo-steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts to sample")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    return p.parse_args()


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


def cli(module: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def reward_service(model_repo: Path, log: Path) -> Iterator[str]:
    """``reward-service serve`` on a free loopback port; terminated however the block ends."""
    import httpx

    port = free_port()
    cmd = cli("reward_service.cli", "serve", "--model-repo", model_repo)
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    print(f"$ {' '.join(cmd)}", flush=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"reward service exited early; see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit(f"reward service not ready within 120 s; see {log}")
            time.sleep(0.3)
        print(f"  serving on {url}", flush=True)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        print("  reward service stopped", flush=True)


def evaluate(policy: Path, reference: Path, prompts: Path, n: int, url: str) -> list[dict]:
    """Samples on held-out prompts with proxy reward (service), gold reward (VADER) and KL."""
    from ppo_client.reward_client import RewardClient
    from ppo_client.sample import SampleConfig, sample_policy
    from ppo_client.trainer import load_prompts
    from reward_service.data.gold import get_gold

    rows = sample_policy(
        SampleConfig(
            policy=str(policy),
            prompts=load_prompts(prompts)[:n],
            reference=str(reference),
            temperature=0.7,
            response_length=24,
            seed=1234,
        )
    )
    responses = [r["response"] for r in rows]
    with RewardClient(url, MODEL_NAME, normalize=True) as client:
        proxy = client.score([r["prompt"] for r in rows], responses)
    gold = get_gold("vader")(responses)
    for row, p, g in zip(rows, proxy, gold, strict=True):
        row["proxy"], row["gold"] = p, g
    return rows


def summary(rows: list[dict], key: str) -> tuple[float, float]:
    values = [float(r[key]) for r in rows]
    return statistics.fmean(values), statistics.stdev(values)


def report(results: dict[str, list[dict]], out: Path) -> str:
    lines = [
        f"Held-out prompts: {len(next(iter(results.values())))} (temperature 0.7, ≤ 24 tokens)",
        "",
        "| policy | gold reward (VADER) | proxy reward (RM, normalized) | KL to initial (nats) "
        "| length (tokens) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, rows in results.items():
        cells = [f"{m:+.3f} ± {s:.3f}" for m, s in (summary(rows, k) for k in ("gold", "proxy"))]
        kl_m, kl_s = summary(rows, "kl")
        length = statistics.fmean(r["tokens"] for r in rows)
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {kl_m:.2f} ± {kl_s:.2f} | {length:.1f} |"
        )
    before = results["before"]
    lines += [
        "",
        "Samples (same prompts):",
        "",
        "| prompt | before | after (" + list(results)[1] + ") |",
    ]
    lines.append("| --- | --- | --- |")
    after = results[list(results)[1]]
    for b, a in list(zip(before, after, strict=True))[:8]:
        cell = [x.replace("|", "\\|") for x in (b["prompt"], b["response"], a["response"])]
        lines.append(
            f"| {cell[0]} | {cell[1]} (gold {b['gold']:+.2f}) | {cell[2]} (gold {a['gold']:+.2f}) |"
        )
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    return text


def plot(results: dict[str, list[dict]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ppo_client.plots import read_log

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    names = list(results)
    for ax, key, label in zip(
        axes[:2], ("gold", "proxy"), ("gold (VADER)", "proxy (RM)"), strict=True
    ):
        stats = [summary(results[n], key) for n in names]
        ax.bar(
            names,
            [m for m, _ in stats],
            yerr=[s / len(results[n]) ** 0.5 for (_, s), n in zip(stats, names, strict=True)],
            capsize=4,
        )
        ax.set_title(f"{label} reward on held-out prompts (mean ± s.e.)")
        ax.axhline(0, color="black", lw=0.5)
    for run_dir in sorted(d for d in out.glob("ppo-seed*") if d.is_dir()):
        rows = [r for r in read_log(run_dir / "log.jsonl") if r["step"] > 0]
        steps = [r["step"] for r in rows]
        axes[2].plot(steps, [r["reward/raw"] for r in rows], label=f"{run_dir.name} reward")
        axes[2].plot(steps, [r["objective/kl"] for r in rows], ls="--", label=f"{run_dir.name} KL")
    axes[2].set_title("PPO: training reward and KL per step")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=8)
    png = out / "demo.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main() -> None:
    args = parse_args()
    out: Path = args.out
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    policy, data, rm, repo = out / "policy", out / "data", out / "rm", out / "models"
    start = time.perf_counter()

    # Stage 1: a policy to fine-tune.
    if not (policy / "config.json").is_file():
        run(
            cli(
                "ppo_client.cli",
                "pretrain",
                "--corpus",
                args.corpus,
                "--output",
                policy,
                "--max-seconds",
                args.pretrain_seconds,
            ),
            out / "pretrain.log",
        )
    # Stage 2: human-feedback stand-in, reward model, export.
    if not (data / "heldout_prompts.jsonl").is_file():
        run(
            cli("reward_service.cli", "demo-data", "--output", data, "--corpus", args.corpus),
            out / "demo-data.log",
        )
    if not (rm.is_dir() and any(rm.iterdir())):
        run(
            cli(
                "reward_service.cli",
                "train",
                "--data",
                data / "train.jsonl",
                "--eval-data",
                data / "eval.jsonl",
                "--output",
                rm,
                "--max-steps",
                args.rm_steps,
                "--max-length",
                "64",
                "--bf16",
            ),
            out / "rm-train.log",
        )
    if not any((repo / MODEL_NAME).glob("*/manifest.json")):
        run(
            cli(
                "reward_service.cli",
                "export",
                "--checkpoint",
                rm,
                "--model-repo",
                repo,
                "--name",
                MODEL_NAME,
            ),
            out / "rm-export.log",
        )

    # Stage 3: PPO against the served reward model; the service stops however this ends.
    results: dict[str, list[dict]] = {}
    with reward_service(repo, out / "serve.log") as url:
        for seed in args.seeds:
            run_dir = out / f"ppo-seed{seed}"
            if not (run_dir / "samples.md").is_file():
                cmd = cli(
                    "ppo_client.cli",
                    "train",
                    "--config",
                    args.ppo_config,
                    "--policy",
                    policy,
                    "--prompts",
                    data / "prompts.jsonl",
                    "--reward-url",
                    url,
                    "--reward-model",
                    MODEL_NAME,
                    "--output",
                    run_dir,
                    "--seed",
                    seed,
                    "--no-progress",
                )
                if args.ppo_steps:
                    cmd += ["--steps", str(args.ppo_steps)]
                run(cmd, out / f"ppo-seed{seed}.log")
        # Stage 4: before/after on held-out prompts.
        held = data / "heldout_prompts.jsonl"
        results["before"] = evaluate(policy, policy, held, args.eval_prompts, url)
        for seed in args.seeds:
            run_dir = out / f"ppo-seed{seed}"
            results[f"after (seed {seed})"] = evaluate(
                run_dir, policy, held, args.eval_prompts, url
            )

    for name, rows in results.items():
        slug = "before" if name == "before" else f"seed{name.split()[-1].strip(')')}"
        with open(out / f"eval-{slug}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print("\n" + report(results, out))
    print(f"plot: {plot(results, out)}")
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {out}")


if __name__ == "__main__":
    main()
