"""The iterated RLHF loop of issue 14, offline on a 2-core CPU (`make demo-loop`).

It starts where a first round would: a reward model fine-tuned on a few hundred off-policy
pairs (`--first-rm-steps` × 16 of the demo's fortunes pairs), served twice, as `demo` (retrained
every round) and as `frozen` (never retrained). Each round, against that one reward service:

1. sample  the current policy on new training prompts, two completions each (`ppo-client sample`)
2. label   them in a labeling app on SQLite started with the service's URL, so its active
           selection serves the pairs `demo` is least sure about first; simulated annotators
           (the gold scorer, VADER, with noise) answer through its JSON API and skip pairs whose
           gold scores are within `--margin`, until `--labels-per-round` decisive labels
                                                          (`feedback import`, `feedback serve`)
3. export  every label so far                                                (`feedback export`)
4. retrain the reward model from the previous round's checkpoint           (`train --init --steps`)
5. publish it as the next version of `demo` into the service's model repository
           (`reward-service export`); the service's hot reload serves it, and the script waits
           until `POST /v1/admin/reload` says so
6. PPO     continues from its checkpoint against the new version   (`ppo-client train --resume`)
7. eval    the policy on held-out prompts: gold reward, proxy reward, KL to the initial policy,
           and the RM's accuracy on those on-policy samples (every pair of a prompt's samples
           whose gold differs by more than the margin)

A baseline run gets the same PPO budget against `frozen`. The PPO budget and KL hold
(scripts/demo_loop_ppo.toml) are looser than the trainer's defaults on purpose: the demo exists
to show a frozen reward model being over-optimized, which the defaults are there to prevent.
The demo's artifacts (runs/demo: pretrained policy, data) are reused when present, else built
the way `scripts/demo.py` builds them. One line per stage on screen; each stage's whole output
in its log; runs/demo-loop/loop.json, loop.md and loop.png after each round.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import combinations
from pathlib import Path

import httpx
from demo import ROOT, Screen, background, build_base, cli, free_port, prepare, reward_service, run

SERVED, FROZEN = "demo", "frozen"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "demo-loop", help="loop outputs")
    p.add_argument("--base", type=Path, default=ROOT / "runs" / "demo", help="the demo's outputs")
    p.add_argument("--corpus", default="/usr/share/games/fortunes", help="text corpus")
    p.add_argument("--pretrain-seconds", type=float, default=300.0)
    p.add_argument("--rm-steps", type=int, default=150, help="the demo's reward model's steps")
    p.add_argument(
        "--first-rm-steps", type=int, default=16, help="steps × 16 off-policy pairs, round 0's RM"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--label-prompts", type=int, default=960, help="prompts sampled per round")
    p.add_argument("--labels-per-round", type=int, default=120, help="decisive labels per round")
    p.add_argument("--margin", type=float, default=0.1, help="gold gap below which one skips")
    p.add_argument("--annotators", type=int, default=2, help="simulated annotators")
    p.add_argument("--noise", type=float, default=0.15, help="annotator flip probability")
    p.add_argument("--retrain-steps", type=int, default=30, help="RM fine-tune steps per round")
    p.add_argument("--ppo-config", type=Path, default=ROOT / "scripts" / "demo_loop_ppo.toml")
    p.add_argument("--ppo-steps", type=int, default=10, help="PPO steps per round")
    p.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per held-out prompt")
    p.add_argument("--fresh", action="store_true", help="delete an earlier loop's outputs")
    return p.parse_args()


def simulated_choice(
    gold: list[float], noise: float, margin: float, rng: random.Random
) -> int | None:
    """An annotator who prefers the response gold prefers, wrong with probability ``noise``.
    Gold scores within ``margin`` of each other are no preference: the annotator skips (None)
    rather than teach the reward model a coin flip."""
    if abs(gold[0] - gold[1]) <= margin:
        return None
    best = 0 if gold[0] > gold[1] else 1
    return 1 - best if rng.random() < noise else best


def label_all(
    url: str,
    tokens: list[str],
    gold: Callable[[list[str]], list[float]],
    noise: float,
    margin: float,
    seed: int,
    budget: int | None = None,
) -> tuple[int, int]:
    """The annotators take turns at `GET /api/v1/next` until ``budget`` decisive labels are in
    or every one sees nothing left; returns the labels and the skips they submitted."""
    rng = random.Random(seed)
    clients = [
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {t}"}, timeout=60)
        for t in tokens
    ]
    labels = skips = 0
    active = list(clients)
    try:
        while active and (budget is None or labels < budget):
            for client in list(active):
                nxt = client.get("/api/v1/next")
                nxt.raise_for_status()
                task = nxt.json()["task"]
                if task is None:
                    active.remove(client)
                    continue
                answer = simulated_choice(gold(task["responses"]), noise, margin, rng)
                body = {"task_id": task["id"], "answer": answer, "skip": answer is None}
                client.post("/api/v1/labels", json=body).raise_for_status()
                skips += answer is None
                labels += answer is not None
                if budget is not None and labels >= budget:
                    break
    finally:
        for client in clients:
            client.close()
    return labels, skips


@contextmanager
def labeling_app(db: Path, reward_url: str, log: Path, screen: Screen, tag: str) -> Iterator[str]:
    """``feedback serve`` on SQLite with active selection: at start-up it scores every open task
    with the newest `demo` (``/v1/compare``), so the least sure pairs are served first; stopped
    however the round ends."""
    label = screen.start(f"{tag} labeling app")
    port = free_port()
    cmd = cli("reward_service.cli", "feedback", "serve", "--db", db, "--host", "127.0.0.1")
    cmd += ["--port", str(port), "--gold-every", "0", "--reward-url", reward_url]
    cmd += ["--reward-model", SERVED, "--rescore-seconds", "0"]
    url = f"http://127.0.0.1:{port}"
    # /login without a token answers 401 once the app is up.
    with background(cmd, log, f"{url}/login", 401, 300):
        screen.finish(f"{label} serving on {url}, tasks scored by {SERVED}  (log: {log})")
        yield url


def annotator_token(db: Path, name: str) -> str:
    line = subprocess.run(
        cli("reward_service.cli", "feedback", "annotator", "--db", db, "--name", name),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    return line.removeprefix("/login?token=")


def wait_until_serving(url: str, name: str, version: int, timeout: float = 900.0) -> None:
    """Asks the service to look at its repository now and waits until ``name`` resolves to
    ``version``; a refused version stops the loop with the service's reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{url}/v1/admin/reload", timeout=timeout).json()
        except httpx.TransportError:
            time.sleep(1.0)
            continue
        if answer["serving"].get(name) == f"{name}@{version}":
            return
        refused = [
            e
            for e in answer["changes"]
            if e["event"] == "refused" and e["model"] == f"{name}@{version}"
        ]
        if refused:
            sys.exit(f"the service refused {name}@{version}: {refused[0]['detail']}")
        time.sleep(1.0)
    sys.exit(f"{name}@{version} not served within {timeout:.0f} s")


def first_reward_model(screen: Screen, data: Path, steps: int, out: Path) -> tuple[Path, Path]:
    """Round 0's reward model, as a first round's would be: MiniLM fine-tuned on a few hundred
    off-policy pairs (the demo's fortunes, not the policy's samples). Returns its checkpoint
    and a repository holding its export as `demo`."""
    rm, repo = out / "rm-round0", out / "first"
    cmd = cli("reward_service.cli", "train", "--data", data / "train.jsonl")
    cmd += ["--eval-data", str(data / "eval.jsonl"), "--output", str(rm), "--steps", str(steps)]
    cmd += ["--batch-size", "16", "--max-length", "64", "--bf16"]
    run(screen, "first reward model", [cmd], out / "rm-round0.log")
    cmd = cli("reward_service.cli", "export", "--checkpoint", rm, "--model-repo", repo)
    run(screen, "export first reward model", [[*cmd, "--name", SERVED]], out / "export-0.log")
    return rm, repo


def seed_repository(base_repo: Path, repo: Path) -> None:
    """The loop's own repository: the first version as `demo` (retrained each round) and the
    same files as `frozen` (the baseline's, never replaced)."""
    first = sorted((base_repo / SERVED).glob("*/manifest.json"))[0].parent
    for name in (SERVED, FROZEN):
        target = repo / name / "1"
        shutil.copytree(first, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest.update(name=name, version=1)
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def sample_cmd(
    policy: Path,
    reference: Path,
    prompts: Path,
    n_prompts: int,
    url: str,
    model: str,
    seed: int,
    out: Path,
    n: int = 2,
) -> list[str]:
    cmd = cli("ppo_client.cli", "sample", "--policy", policy, "--reference", reference)
    cmd += ["--prompts", str(prompts), "--limit", str(n_prompts), "--n", str(n)]
    cmd += ["--temperature", "0.7", "--response-length", "24", "--seed", str(seed)]
    cmd += ["--reward-url", url, "--reward-model", model, "--reward-normalize"]
    return [*cmd, "--output", str(out)]


def round_prompts(prompts: Path, r: int, n: int, out: Path) -> Path:
    """Round ``r``'s own slice of the training prompts, so every round labels new prompts."""
    lines = prompts.read_text().splitlines()
    start = ((r - 1) * n) % max(1, len(lines) - n)
    path = out / f"round{r}-prompts.jsonl"
    path.write_text("\n".join(lines[start : start + n]) + "\n")
    return path


def comparison_tasks(samples: Path, path: Path) -> Path:
    """One comparison per prompt from its two samples; a pair with an empty or a repeated
    response is left out, since there is nothing to choose between."""
    by_prompt: dict[str, list[str]] = {}
    for line in samples.read_text().splitlines():
        row = json.loads(line)
        by_prompt.setdefault(row["prompt"], []).append(row["response"])
    tasks = [
        {"prompt": prompt, "responses": responses[:2]}
        for prompt, responses in by_prompt.items()
        if len(responses) >= 2
        and all(x.strip() for x in responses[:2])
        and responses[0] != responses[1]
    ]
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


def pair_accuracy(rows: list[dict], margin: float) -> tuple[float, int]:
    """How often the proxy reward orders two samples of one prompt as gold does, over every
    such pair whose gold scores differ by more than ``margin`` (the pairs an annotator would
    decide): the RM's accuracy where the policy now is, and how many pairs it rests on."""
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    hits = [
        (a["proxy"] > b["proxy"]) == (a["gold"] > b["gold"])
        for samples in by_prompt.values()
        for a, b in combinations(samples, 2)
        if abs(a["gold"] - b["gold"]) > margin
    ]
    return (sum(hits) / len(hits) if hits else float("nan")), len(hits)


def evaluate(path: Path, margin: float) -> dict[str, float]:
    from reward_service.data.gold import get_gold

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    gold = get_gold("vader")([r["response"] for r in rows])
    for row, g in zip(rows, gold, strict=True):
        row["proxy"], row["gold"] = row.pop("reward"), g
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    accuracy, pairs = pair_accuracy(rows, margin)
    return {
        "gold": statistics.fmean(r["gold"] for r in rows),
        "proxy": statistics.fmean(r["proxy"] for r in rows),
        "kl": statistics.fmean(r["kl"] for r in rows),
        "rm_accuracy": accuracy,
        "pairs": pairs,
        "samples": len(rows),
    }


def table(rounds: list[dict]) -> str:
    lines = [
        "| round | RM (loop) | labels (skips) | gold: loop | frozen | proxy: loop | frozen "
        "| on-policy RM accuracy (pairs): loop | frozen | KL: loop | frozen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rounds:
        loop, base = r["loop"], r["baseline"]
        lines.append(
            f"| {r['round']} | {SERVED}@{r['version']} | {r['labels']} ({r['skips']}) "
            f"| {loop['gold']:+.3f} | {base['gold']:+.3f} "
            f"| {loop['proxy']:+.2f} | {base['proxy']:+.2f} "
            f"| {loop['rm_accuracy']:.2f} ({loop['pairs']}) "
            f"| {base['rm_accuracy']:.2f} ({base['pairs']}) "
            f"| {loop['kl']:.1f} | {base['kl']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rounds: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
    x = [r["round"] for r in rounds]
    for ax, key, title in zip(
        axes,
        ("gold", "proxy", "rm_accuracy", "kl"),
        (
            "gold reward (VADER), held-out",
            "proxy reward (the run's own RM, normalized)",
            "RM accuracy on the policy's samples",
            "KL to the initial policy (nats)",
        ),
        strict=True,
    ):
        for run_name, label in (("loop", "loop (RM retrained)"), ("baseline", "never retrained")):
            ax.plot(x, [r[run_name][key] for r in rounds], marker="o", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
        ax.set_xticks(x)
        ax.legend(fontsize=8)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def write_report(rounds: list[dict], settings: dict, out: Path) -> None:
    """loop.json, loop.md and loop.png, rewritten after every round so that a loop stopped
    early still leaves the rounds it finished."""
    record = {"settings": settings, "rounds": rounds}
    (out / "loop.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / "loop.md").write_text(table(rounds), encoding="utf-8")
    plot(rounds, out / "loop.png")


def main() -> None:
    args = parse_args()
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.fresh:
        sys.exit(f"{out} holds an earlier loop; pass --fresh to start over")
    prepare(out, fresh=args.fresh)
    # One measured runtime instead of `auto`: every new version would otherwise time each
    # runtime again on a 2-core machine the trainer is using.
    os.environ.setdefault("REWARD_SERVICE_BACKEND", "onnxruntime")
    screen = Screen(total=8 + args.rounds * 12)
    start = time.perf_counter()
    policy, data, _, _ = build_base(
        screen, args.base, args.corpus, args.pretrain_seconds, args.rm_steps
    )
    rm, first_repo = first_reward_model(screen, data, args.first_rm_steps, out)
    repo, db = out / "models", out / "labels.db"
    seed_repository(first_repo, repo)
    tokens = [annotator_token(db, f"sim-{i + 1}") for i in range(args.annotators)]
    held, prompts = data / "heldout_prompts.jsonl", data / "prompts.jsonl"
    rounds: list[dict] = []
    with reward_service(repo, out / "serve.log", screen) as url:
        from reward_service.data.gold import get_gold

        gold = get_gold("vader")

        def evaluate_policy(run_dir: Path, model: str, tag: str, log: Path) -> dict[str, float]:
            path = out / f"{tag}.jsonl"
            cmd = sample_cmd(
                run_dir, policy, held, args.eval_prompts, url, model, 1234, path, args.eval_samples
            )
            run(screen, tag.replace("-", " "), [cmd], log)
            return evaluate(path, args.margin)

        start_eval = evaluate_policy(policy, SERVED, "eval-0", out / "eval-0.log")
        rounds.append(
            {
                "round": 0,
                "version": 1,
                "labels": 0,
                "skips": 0,
                "loop": start_eval,
                "baseline": start_eval,
            }
        )
        current = {"loop": policy, "baseline": policy}
        for r in range(1, args.rounds + 1):
            tag = f"round {r}:"
            samples = out / f"round{r}-samples.jsonl"
            fresh_prompts = round_prompts(prompts, r, args.label_prompts, out)
            cmd = sample_cmd(
                current["loop"], policy, fresh_prompts, args.label_prompts, url, SERVED, r, samples
            )
            run(screen, f"{tag} sample", [cmd], out / f"round{r}-sample.log")
            tasks = comparison_tasks(samples, out / f"round{r}-tasks.jsonl")
            imp = cli("reward_service.cli", "feedback", "import", "--db", db, "--tasks", tasks)
            run(screen, f"{tag} import", [imp], out / f"round{r}-import.log")
            with labeling_app(db, url, out / f"round{r}-feedback.log", screen, tag) as app:
                label = screen.start(f"{tag} label")
                t0 = time.perf_counter()
                n, skips = label_all(
                    app, tokens, gold, args.noise, args.margin, r, args.labels_per_round
                )
                screen.finish(
                    f"{label} {n} labels, {skips} skips (gold within {args.margin}), "
                    f"{len(tokens)} annotators, {time.perf_counter() - t0:4.0f} s"
                )
            labels = out / f"round{r}-labels.jsonl"
            exp = cli("reward_service.cli", "feedback", "export", "--db", db, "--output", labels)
            run(screen, f"{tag} export labels", [exp], out / f"round{r}-export.log")
            new_rm = out / f"rm-round{r}"
            train = cli("reward_service.cli", "train", "--data", labels, "--init", rm)
            train += ["--output", str(new_rm), "--steps", str(args.retrain_steps)]
            train += ["--batch-size", "16", "--max-length", "64", "--bf16"]
            run(screen, f"{tag} retrain RM", [train], out / f"round{r}-train.log")
            publish = cli(
                "reward_service.cli", "export", "--checkpoint", new_rm, "--model-repo", repo
            )
            run(
                screen,
                f"{tag} publish {SERVED}@{r + 1}",
                [[*publish, "--name", SERVED, "--version", str(r + 1)]],
                out / f"round{r}-publish.log",
            )
            label = screen.start(f"{tag} hot reload")
            t0 = time.perf_counter()
            wait_until_serving(url, SERVED, r + 1)
            screen.finish(
                f"{label} serving {SERVED}@{r + 1} after {time.perf_counter() - t0:4.0f} s"
            )
            rm = new_rm
            result = {"round": r, "version": r + 1, "labels": n, "skips": skips}
            for run_name, model in (("loop", SERVED), ("baseline", FROZEN)):
                run_dir = out / f"ppo-{run_name}"
                ppo = cli(
                    "ppo_client.cli", "train", "--config", args.ppo_config, "--policy", policy
                )
                ppo += ["--prompts", str(prompts), "--reward-url", url, "--reward-model", model]
                ppo += ["--output", str(run_dir), "--steps", str(r * args.ppo_steps), "--seed", "1"]
                if r > 1:
                    ppo.append("--resume")
                run(screen, f"{tag} PPO {run_name}", [ppo], out / f"round{r}-ppo-{run_name}.log")
                current[run_name] = run_dir
                result[run_name] = evaluate_policy(
                    run_dir, model, f"eval-{run_name}-{r}", out / f"round{r}-eval-{run_name}.log"
                )
            rounds.append(result)
            write_report(rounds, vars(args), out)
    print("\n" + table(rounds))
    print(f"loop finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {out}")


if __name__ == "__main__":
    main()
