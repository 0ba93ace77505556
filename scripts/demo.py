"""The three RLHF stages end to end, offline, on a 2-core CPU in about 20 minutes (`make demo`).

1. pretrain a tiny GPT-2-style policy on Debian's fortunes       → runs/demo/policy
2. build preference data labeled by a gold scorer (VADER)          → runs/demo/data
   train the reward model and export it to the model repository    → runs/demo/rm, runs/demo/models
3. start the reward service, fine-tune the policy with PPO against
   it for each seed, stop the service (always, also on error)      → runs/demo/ppo-seed<N>
4. sample before/after on held-out prompts: proxy (reward model) reward, gold (VADER) reward, and
   KL to the initial policy; print the table, write runs/demo/report.md and the plots.

Each stage is the project's own CLI in a subprocess, exactly what a user would type; its whole
output (the command first, then progress bars, model-loading bars, warnings) goes to its log
file, and the terminal shows one line per stage: its progress while it runs, then its time. A
stage whose output already exists is reused (``--fresh`` redoes everything), so a rerun after a
failure, or with other PPO settings, starts where it matters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


class Screen:
    """One line per stage: rewritten in place with the stage's progress on a terminal, printed
    once when the stage ends elsewhere (a log file, CI)."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total, self.number, self.quiet = total, 0, quiet
        self.tty = sys.stdout.isatty() and not quiet
        self.width = shutil.get_terminal_size((100, 20)).columns - 1

    def start(self, name: str) -> str:
        self.number += 1
        return f"[{self.number}/{self.total}] {name:<24}"

    def show(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K" + text[: self.width])
            sys.stdout.flush()

    def finish(self, text: str) -> None:
        if self.quiet:
            return
        sys.stdout.write(("\r\033[K" if self.tty else "") + text + "\n")
        sys.stdout.flush()


def latest_progress(log: Path) -> str:
    """The last progress-bar state a stage wrote (tqdm redraws with carriage returns)."""
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    fragments = [x.strip() for x in tail.replace("\r", "\n").split("\n")]
    bars = [x for x in fragments if "%|" in x and "Loading weights" not in x]
    return " ".join(re.sub(r"\|[^|]*\|", " ", bars[-1]).split()) if bars else ""


def run(screen: Screen, name: str, cmds: list[list[str]], log: Path) -> None:
    """A stage: its commands in subprocesses, all output to ``log``, one line on the screen."""
    label = screen.start(name)
    start = time.perf_counter()
    with open(log, "w") as sink:
        for i, cmd in enumerate(cmds, 1):
            sink.write(f"$ {' '.join(cmd)}\n")
            sink.flush()
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
            part = f"{i}/{len(cmds)} " if len(cmds) > 1 else ""
            while proc.poll() is None:
                elapsed = time.perf_counter() - start
                screen.show(f"{label} {elapsed:4.0f} s  {part}{latest_progress(log)}")
                time.sleep(0.5)
            if proc.returncode:
                screen.finish(f"{label} failed (exit {proc.returncode})")
                tail = log.read_text(errors="replace").splitlines()[-20:]
                sys.exit(f"last lines of {log}:\n" + "\n".join(tail))
    screen.finish(f"{label} done in {time.perf_counter() - start:4.0f} s  (log: {log})")


def reuse(screen: Screen, name: str, output: Path) -> None:
    screen.finish(f"{screen.start(name)} reused {output}")


def cli(module: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def background(
    cmd: list[str],
    log: Path,
    probe: str,
    ready_status: int,
    timeout: float,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[None]:
    """``cmd`` running, its output in ``log``, for the length of the block; the block starts once
    GET ``probe`` answers ``ready_status``. A process that dies or stays unready ends the run with
    a pointer to its log; it is terminated however the block ends."""
    import httpx

    with open(log, "w") as sink:
        sink.write(f"$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    name = " ".join(cmd[2:4])
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                sys.exit(f"{name} exited early; see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(probe, timeout=2.0).status_code == ready_status:
                    break
            waited = time.monotonic() - started
            if waited > timeout:
                sys.exit(f"{name} not ready within {timeout:.0f} s; see {log}")
            if on_wait:
                on_wait(waited)
            time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def reward_service(
    model_repo: Path,
    log: Path,
    screen: Screen | None = None,
    extra: Sequence[str] = (),
    timeout: float = 600,
) -> Iterator[str]:
    """``reward-service serve`` on a free loopback port; terminated however the block ends.

    With a ``screen`` it is a stage of the demo (bench scripts start it without one)."""
    screen = screen or Screen(total=1, quiet=True)
    label = screen.start("reward service")
    port = free_port()
    cmd = cli("reward_service.cli", "serve", "--model-repo", model_repo)
    # HTTP only: the PPO client needs no gRPC, and its fixed default port would collide with
    # any other service on the machine.
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0", *extra]
    url = f"http://127.0.0.1:{port}"
    # `auto` gates and times each runtime before binding: minutes on a busy 2-core machine.
    with background(
        cmd,
        log,
        f"{url}/readyz",
        200,
        timeout,
        lambda waited: screen.show(f"{label} starting ({waited:.0f} s)"),
    ):
        screen.finish(f"{label} serving on {url}  (log: {log})")
        yield url


def sample_cmd(
    policy: Path, reference: Path, prompts: Path, n: int, url: str, out: Path
) -> list[str]:
    """Samples on held-out prompts with the proxy reward (service, normalized) and the KL."""
    return cli(
        "ppo_client.cli",
        "sample",
        "--policy",
        policy,
        "--reference",
        reference,
        "--prompts",
        prompts,
        "--limit",
        n,
        "--temperature",
        "0.7",
        "--response-length",
        "24",
        "--seed",
        "1234",
        "--reward-url",
        url,
        "--reward-model",
        MODEL_NAME,
        "--reward-normalize",
        "--output",
        out,
    )


def with_gold(path: Path) -> list[dict]:
    """The sampled rows with their gold (VADER) reward; ``proxy`` is the service's score."""
    from reward_service.data.gold import get_gold

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    gold = get_gold("vader")([r["response"] for r in rows])
    for row, g in zip(rows, gold, strict=True):
        row["proxy"], row["gold"] = row.pop("reward"), g
    return rows


def summary(rows: list[dict], key: str) -> tuple[float, float]:
    values = [float(r[key]) for r in rows]
    return statistics.fmean(values), statistics.stdev(values)


def report(results: dict[str, list[dict]], out: Path) -> str:
    """The before/after table; length and distinct-2 also as a share of the starting policy's,
    the figures that tell a better policy from one that collapsed onto a cheap phrase."""
    from ppo_client.evaluation import distinct_n

    lines = [
        f"Held-out prompts: {len(next(iter(results.values())))} (temperature 0.7, ≤ 24 tokens)",
        "",
        "| policy | gold reward (VADER) | proxy reward (RM, normalized) | KL to initial (nats) "
        "| length (tokens) | distinct-2 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    start_length = statistics.fmean(r["tokens"] for r in results["before"])
    start_distinct = distinct_n([r["response"] for r in results["before"]], 2)
    for name, rows in results.items():
        cells = [f"{m:+.3f} ± {s:.3f}" for m, s in (summary(rows, k) for k in ("gold", "proxy"))]
        kl_m, kl_s = summary(rows, "kl")
        length = statistics.fmean(r["tokens"] for r in rows)
        distinct = distinct_n([r["response"] for r in rows], 2)
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {kl_m:.2f} ± {kl_s:.2f} "
            f"| {length:.1f} ({length / start_length:.0%}) "
            f"| {distinct:.3f} ({distinct / start_distinct:.0%}) |"
        )
    before = results["before"]
    lines += [
        "",
        "Samples (same prompts):",
        "",
        f"| prompt | before | {list(results)[1]} |",
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


def build_base(
    screen: Screen, out: Path, corpus: str, pretrain_seconds: float, rm_steps: int
) -> tuple[Path, Path, Path, Path]:
    """Stages 1-2, each reused when its output exists: the policy, the data, the reward model
    and the model repository (`scripts/demo_loop.py` starts from them too)."""
    policy, data, rm, repo = out / "policy", out / "data", out / "rm", out / "models"
    # Stage 1: a policy to fine-tune.
    if (policy / "config.json").is_file():
        reuse(screen, "pretrain policy", policy)
    else:
        cmd = cli("ppo_client.cli", "pretrain", "--corpus", corpus, "--output", policy)
        cmd += ["--max-seconds", str(pretrain_seconds)]
        run(screen, "pretrain policy", [cmd], out / "pretrain.log")
    # Stage 2: human-feedback stand-in, reward model, export.
    if (data / "heldout_prompts.jsonl").is_file():
        reuse(screen, "preference data", data)
    else:
        cmd = cli("reward_service.cli", "demo-data", "--output", data, "--corpus", corpus)
        run(screen, "preference data", [cmd], out / "demo-data.log")
    if rm.is_dir() and any(rm.iterdir()):
        reuse(screen, "train reward model", rm)
    else:
        cmd = cli(
            "reward_service.cli",
            "train",
            "--data",
            data / "train.jsonl",
            "--eval-data",
            data / "eval.jsonl",
            "--output",
            rm,
            "--max-steps",
            rm_steps,
            "--max-length",
            "64",
            "--bf16",
        )
        run(screen, "train reward model", [cmd], out / "rm-train.log")
    if any((repo / MODEL_NAME).glob("*/manifest.json")):
        reuse(screen, "export reward model", repo / MODEL_NAME)
    else:
        cmd = cli("reward_service.cli", "export", "--checkpoint", rm, "--model-repo", repo)
        run(screen, "export reward model", [[*cmd, "--name", MODEL_NAME]], out / "rm-export.log")
    return policy, data, rm, repo


def ppo_train(
    config: Path, policy: Path, data: Path, url: str, model: str, output: Path, seed: int
) -> list[str]:
    """``ppo-client train`` on the demo data's training prompts against one served model."""
    return cli(
        "ppo_client.cli", "train", "--config", config, "--policy", policy,
        "--prompts", data / "prompts.jsonl", "--reward-url", url, "--reward-model", model,
        "--output", output, "--seed", seed,
    )  # fmt: skip


def prepare(out: Path, fresh: bool) -> None:
    """The output folder (emptied first with ``fresh``), and no hub lookups: every model here
    is a local folder, and a lookup on an offline machine waits for its timeout."""
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    args = parse_args()
    out: Path = args.out
    prepare(out, fresh=args.fresh)
    screen = Screen(total=7 + len(args.seeds))
    start = time.perf_counter()

    policy, data, _, repo = build_base(
        screen, out, args.corpus, args.pretrain_seconds, args.rm_steps
    )

    # Stage 3: PPO against the served reward model; the service stops however this ends.
    held = data / "heldout_prompts.jsonl"
    evals = {"before": out / "eval-before.jsonl"}
    evals.update({f"after (seed {s})": out / f"eval-seed{s}.jsonl" for s in args.seeds})
    with reward_service(repo, out / "serve.log", screen) as url:
        for seed in args.seeds:
            run_dir = out / f"ppo-seed{seed}"
            if (run_dir / "samples.md").is_file():
                reuse(screen, f"PPO, seed {seed}", run_dir)
                continue
            cmd = ppo_train(args.ppo_config, policy, data, url, MODEL_NAME, run_dir, seed)
            if args.ppo_steps:
                cmd += ["--steps", str(args.ppo_steps)]
            run(screen, f"PPO, seed {seed}", [cmd], out / f"ppo-seed{seed}.log")
        # Stage 4: before/after on held-out prompts.
        policies = [policy] + [out / f"ppo-seed{s}" for s in args.seeds]
        cmds = [
            sample_cmd(p, policy, held, args.eval_prompts, url, path)
            for p, path in zip(policies, evals.values(), strict=True)
        ]
        run(screen, "held-out samples", cmds, out / "eval.log")

    results = {name: with_gold(path) for name, path in evals.items()}
    for name, path in evals.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in results[name]))
    label = screen.start("report")
    text = report(results, out)
    png = plot(results, out)
    screen.finish(f"{label} {out / 'report.md'}, {png}")
    print("\n" + text)
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {out}")


if __name__ == "__main__":
    main()
