"""The iterated RLHF loop of issue 14, offline on a 2-core CPU (`make demo-loop`).

Each round, against one running reward service and one labeling app (SQLite):

1. sample  the current policy on new training prompts, two completions each (`ppo-client sample`)
2. label   them: simulated annotators, the gold scorer (VADER) with noise, through the app's
           JSON API on a real `feedback serve`                                   (`feedback import`)
3. export  the round's labels                                                    (`feedback export`)
4. retrain the reward model from the previous round's checkpoint           (`train --init --steps`)
5. publish it as the next version of `demo` into the service's model repository
           (`reward-service export`); the service's hot reload serves it, and the script waits
           until `POST /v1/admin/reload` says so
6. PPO     continues from its checkpoint against the new version   (`ppo-client train --resume`)
7. eval    the policy on held-out prompts: gold reward, KL to the initial policy, and the served
           RM's accuracy on those on-policy samples (pairs ordered by gold)

A baseline run gets the same PPO budget against `frozen`, the starting reward model, never
retrained. The demo's artifacts (runs/demo: pretrained policy, data, reward model) are reused
when present, else built the way `scripts/demo.py` builds them. One line per stage on screen;
each stage's whole output in its log; runs/demo-loop/loop.json, loop.md and loop.png after
each round.
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
from pathlib import Path

import httpx
from demo import ROOT, Screen, background, build_base, cli, free_port, reward_service, run

SERVED, FROZEN = "demo", "frozen"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "demo-loop", help="loop outputs")
    p.add_argument("--base", type=Path, default=ROOT / "runs" / "demo", help="the demo's outputs")
    p.add_argument("--corpus", default="/usr/share/games/fortunes", help="text corpus")
    p.add_argument("--pretrain-seconds", type=float, default=300.0)
    p.add_argument("--rm-steps", type=int, default=150, help="first reward model's steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--label-prompts", type=int, default=48, help="prompts labeled per round")
    p.add_argument("--annotators", type=int, default=2, help="simulated annotators")
    p.add_argument("--noise", type=float, default=0.15, help="annotator flip probability")
    p.add_argument("--retrain-steps", type=int, default=12, help="RM fine-tune steps per round")
    p.add_argument("--ppo-config", type=Path, default=ROOT / "scripts" / "demo_loop_ppo.toml")
    p.add_argument("--ppo-steps", type=int, default=4, help="PPO steps per round")
    p.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts, 2 samples")
    p.add_argument("--fresh", action="store_true", help="start the loop over")
    return p.parse_args()


def simulated_choice(gold: list[float], noise: float, rng: random.Random) -> int:
    """An annotator who prefers the response gold prefers, wrong with probability ``noise``;
    a gold tie is a coin flip, as a person with no preference would answer."""
    if gold[0] == gold[1]:
        return rng.randrange(2)
    best = 0 if gold[0] > gold[1] else 1
    return 1 - best if rng.random() < noise else best


def label_all(
    url: str, tokens: list[str], gold: Callable[[list[str]], list[float]], noise: float, seed: int
) -> int:
    """The annotators take turns at `GET /api/v1/next` until every one sees nothing left;
    returns how many labels they submitted."""
    rng = random.Random(seed)
    clients = [
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {t}"}, timeout=60)
        for t in tokens
    ]
    done, active = 0, list(clients)
    try:
        while active:
            for client in list(active):
                nxt = client.get("/api/v1/next")
                nxt.raise_for_status()
                task = nxt.json()["task"]
                if task is None:
                    active.remove(client)
                    continue
                answer = simulated_choice(gold(task["responses"]), noise, rng)
                sent = client.post("/api/v1/labels", json={"task_id": task["id"], "answer": answer})
                sent.raise_for_status()
                done += 1
    finally:
        for client in clients:
            client.close()
    return done


@contextmanager
def labeling_app(db: Path, log: Path, screen: Screen) -> Iterator[str]:
    """``feedback serve`` on SQLite; stopped however the loop ends."""
    label = screen.start("labeling app")
    port = free_port()
    cmd = cli("reward_service.cli", "feedback", "serve", "--db", db, "--host", "127.0.0.1")
    cmd += ["--port", str(port), "--gold-every", "0"]
    url = f"http://127.0.0.1:{port}"
    # /login without a token answers 401 once the app is up.
    with background(cmd, log, f"{url}/login", 401, 120):
        screen.finish(f"{label} serving on {url}  (log: {log})")
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


def seed_repository(base_repo: Path, repo: Path) -> None:
    """The loop's own repository: the demo's first version as `demo` (retrained each round)
    and the same files as `frozen` (the baseline's, never replaced)."""
    first = sorted((base_repo / SERVED).glob("*/manifest.json"))[0].parent
    for name in (SERVED, FROZEN):
        target = repo / name / "1"
        shutil.copytree(first, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest.update(name=name, version=1)
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def sample_cmd(
    policy: Path, reference: Path, prompts: Path, n: int, url: str, model: str, seed: int, out: Path
) -> list[str]:
    cmd = cli("ppo_client.cli", "sample", "--policy", policy, "--reference", reference)
    cmd += ["--prompts", str(prompts), "--limit", str(n), "--n", "2", "--temperature", "0.7"]
    cmd += ["--response-length", "24", "--seed", str(seed), "--reward-url", url]
    return [*cmd, "--reward-model", model, "--output", str(out)]


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


def pair_accuracy(rows: list[dict]) -> float:
    """How often the proxy reward orders a prompt's two samples as gold does (gold ties left
    out): the RM's accuracy where the policy now is."""
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    hits = [
        (a["proxy"] > b["proxy"]) == (a["gold"] > b["gold"])
        for a, b in (pair[:2] for pair in by_prompt.values() if len(pair) >= 2)
        if a["gold"] != b["gold"]
    ]
    return sum(hits) / len(hits) if hits else float("nan")


def evaluate(path: Path) -> dict[str, float]:
    from reward_service.data.gold import get_gold

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    gold = get_gold("vader")([r["response"] for r in rows])
    for row, g in zip(rows, gold, strict=True):
        row["proxy"], row["gold"] = row.pop("reward"), g
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "gold": statistics.fmean(r["gold"] for r in rows),
        "kl": statistics.fmean(r["kl"] for r in rows),
        "rm_accuracy": pair_accuracy(rows),
        "samples": len(rows),
    }


def table(rounds: list[dict]) -> str:
    lines = [
        "| round | RM version (loop) | labels | gold reward: loop | never retrained "
        "| on-policy RM accuracy: loop | never retrained | KL: loop | never retrained |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rounds:
        loop, base = r["loop"], r["baseline"]
        lines.append(
            f"| {r['round']} | {SERVED}@{r['version']} | {r['labels']} "
            f"| {loop['gold']:+.3f} | {base['gold']:+.3f} "
            f"| {loop['rm_accuracy']:.2f} | {base['rm_accuracy']:.2f} "
            f"| {loop['kl']:.2f} | {base['kl']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rounds: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    x = [r["round"] for r in rounds]
    for ax, key, title in zip(
        axes,
        ("gold", "rm_accuracy", "kl"),
        ("gold reward (VADER), held-out", "RM accuracy on the policy's samples", "KL (nats)"),
        strict=True,
    ):
        for run_name, label in (("loop", "loop (RM retrained)"), ("baseline", "never retrained")):
            ax.plot(x, [r[run_name][key] for r in rounds], marker="o", label=label)
        ax.set_title(title)
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
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One measured runtime instead of `auto`: every new version would otherwise time each
    # runtime again on a 2-core machine the trainer is using.
    os.environ.setdefault("REWARD_SERVICE_BACKEND", "onnxruntime")
    screen = Screen(total=7 + args.rounds * 11)
    start = time.perf_counter()
    policy, data, first_rm, base_repo = build_base(
        screen, args.base, args.corpus, args.pretrain_seconds, args.rm_steps
    )
    repo, db = out / "models", out / "labels.db"
    if not (repo / FROZEN / "1").is_dir():
        seed_repository(base_repo, repo)
    tokens = [annotator_token(db, f"sim-{i + 1}") for i in range(args.annotators)]
    held, prompts = data / "heldout_prompts.jsonl", data / "prompts.jsonl"
    rounds: list[dict] = []
    with (
        reward_service(repo, out / "serve.log", screen) as url,
        labeling_app(db, out / "feedback.log", screen) as app,
    ):
        from reward_service.data.gold import get_gold

        gold = get_gold("vader")
        evals = {run_name: out / f"eval-{run_name}-0.jsonl" for run_name in ("loop", "baseline")}
        cmd = sample_cmd(policy, policy, held, args.eval_prompts, url, SERVED, 1234, evals["loop"])
        run(screen, "eval round 0", [cmd], out / "eval-0.log")
        start_eval = evaluate(evals["loop"])
        rounds.append(
            {"round": 0, "version": 1, "labels": 0, "loop": start_eval, "baseline": start_eval}
        )
        rm = first_rm
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
            label = screen.start(f"{tag} label")
            t0 = time.perf_counter()
            n = label_all(app, tokens, gold, args.noise, seed=r)
            screen.finish(
                f"{label} {n} labels, {len(tokens)} annotators, {time.perf_counter() - t0:4.0f} s"
            )
            labels = out / f"round{r}-labels.jsonl"
            exp = cli("reward_service.cli", "feedback", "export", "--db", db, "--output", labels)
            run(screen, f"{tag} export labels", [exp], out / f"round{r}-export.log")
            new_rm = out / f"rm-round{r}"
            train = cli("reward_service.cli", "train", "--data", labels, "--init", rm)
            train += [
                "--output",
                str(new_rm),
                "--steps",
                str(args.retrain_steps),
                "--batch-size",
                "16",
            ]
            run(
                screen,
                f"{tag} retrain RM",
                [[*train, "--max-length", "64", "--bf16"]],
                out / f"round{r}-train.log",
            )
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
            result = {"round": r, "version": r + 1, "labels": n}
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
                path = out / f"eval-{run_name}-{r}.jsonl"
                cmd = sample_cmd(run_dir, policy, held, args.eval_prompts, url, model, 1234, path)
                run(screen, f"{tag} eval {run_name}", [cmd], out / f"round{r}-eval-{run_name}.log")
                result[run_name] = evaluate(path)
            rounds.append(result)
            write_report(rounds, vars(args), out)
    print("\n" + table(rounds))
    print(f"loop finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {out}")


if __name__ == "__main__":
    main()
