"""Retraining on one round of labels: held-out accuracy by how the run is sized or started.

Two rounds of 300 four-way rankings are labeled through the labeling app's JSON API by a
simulated annotator (VADER sentiment as the gold labeler, Plackett–Luce noise at temperature
0.1, like the demo's pairs), exported with ``feedback export --format rankings`` and trained
with ``reward-service train`` at default settings (MiniLM, batch 16, lr 5e-5) except for the
sizing flags under test. Every model is scored on the same 500 held-out pairs whose gold scores
differ by at least 0.3 (noiseless order), from fortunes never used for training.

    .venv/bin/python bench/bench_feedback_retrain.py --out runs/bench-retrain

Rerunning with the same ``--out`` reuses the labeled rounds and every finished training run
(its report.json), so a long benchmark on a busy machine can be resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from reward_service.data.corpus import FORTUNES_DIR, read_entries, split_entries
from reward_service.data.gold import get_gold

CLI = [sys.executable, "-m", "reward_service.cli"]
TEMPERATURE = 0.1


def fragment(entry: str, rng: random.Random) -> tuple[str, str]:
    words = entry.split()
    k = min(rng.randint(2, 4), max(1, len(words) - 1))
    return " ".join(words[:k]), " ".join(words[k : k + rng.randint(6, 24)])


def ranking_tasks(entries: list[str], n: int, k: int, gold, rng: random.Random) -> list[dict]:
    """Prompts with the entry's own continuation and k-1 continuations of other entries."""
    tasks = []
    while len(tasks) < n:
        prompt, own = fragment(rng.choice(entries), rng)
        responses = [own] + [fragment(rng.choice(entries), rng)[1] for _ in range(k - 1)]
        if len(set(responses)) < k or not all(responses):
            continue
        if all(score == 0 for score in gold(responses)):
            continue  # no sentiment anywhere: nothing for the gold labeler to prefer
        rng.shuffle(responses)
        tasks.append({"prompt": prompt, "responses": responses})
    return tasks


def eval_pairs(entries: list[str], n: int, gold, rng: random.Random) -> list[dict]:
    pairs = []
    while len(pairs) < n:
        prompt, a = fragment(rng.choice(entries), rng)
        b = fragment(rng.choice(entries), rng)[1]
        if not a or not b or a == b:
            continue
        ga, gb = gold([a, b])
        if abs(ga - gb) >= 0.3:
            # A ranking of two: the trainer reads held-out data in the training data's format.
            pairs.append({"prompt": prompt, "responses": [a, b] if ga > gb else [b, a]})
    return pairs


def plackett_luce(scores: list[float], rng: random.Random) -> list[int]:
    """A noisy best-first order: each place drawn with probability ∝ exp(gold / T)."""
    left, order = list(range(len(scores))), []
    while left:
        weights = [math.exp(scores[i] / TEMPERATURE) for i in left]
        pick = rng.choices(left, weights)[0]
        order.append(pick)
        left.remove(pick)
    return order


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def feedback(*args: str) -> str:
    return subprocess.run(
        [*CLI, "feedback", *args], check=True, capture_output=True, text=True
    ).stdout


def label_round(out: Path, name: str, tasks: list[dict], gold, seed: int) -> Path:
    """Import, label every task through the JSON API as a gold annotator, export rankings."""
    db = str(out / f"{name}.db")
    tasks_file = out / f"{name}-tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    feedback("import", "--db", db, "--tasks", str(tasks_file))
    token = feedback("annotator", "--db", db, "--name", "gold").strip().split("token=")[1]
    port = free_port()
    log = (out / f"{name}-serve.log").open("w")
    server = subprocess.Popen(
        [*CLI, "feedback", "serve", "--db", db, "--port", str(port)], stdout=log, stderr=log
    )
    rng = random.Random(seed)
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        for _ in range(300):
            try:
                client.get("/api/v1/me").raise_for_status()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        while (task := client.get("/api/v1/next").json()["task"]) is not None:
            order = plackett_luce(gold(task["responses"]), rng)
            body = {"task_id": task["id"], "answer": order}
            client.post("/api/v1/labels", json=body).raise_for_status()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    export = out / f"{name}.jsonl"
    feedback("export", "--db", db, "--output", str(export), "--format", "rankings")
    return export


def train(out: Path, name: str, data: Path, eval_data: Path, *flags: str) -> dict:
    folder = out / name
    if not (folder / "report.json").is_file():
        done = subprocess.run(
            [*CLI, "train", "--data", str(data), "--eval-data", str(eval_data), "--output",
             str(folder), "--eval-every", "1000", *flags],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"train {name} failed:\n{done.stderr}")
    report = json.loads((folder / "report.json").read_text())
    return {
        "run": name,
        "flags": " ".join(flags),
        "steps": report["steps"],
        "accuracy": report["metrics"]["pairwise_accuracy"],
        "warned_too_short": bool(report["warnings"]),
        "train_s": report["seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench-retrain"))
    p.add_argument("--rankings", type=int, default=300, help="rankings per round")
    p.add_argument("--k", type=int, default=4, help="responses per ranking")
    p.add_argument("--corpus", type=Path, default=FORTUNES_DIR)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    eval_file = args.out / "eval.jsonl"
    rounds = [args.out / f"round{i}.jsonl" for i in range(2)]
    if not all(p.is_file() for p in (eval_file, *rounds)):
        gold = get_gold("vader")
        rng = random.Random(args.seed)
        train_entries, held_entries = split_entries(read_entries(args.corpus), 0.1, args.seed)
        pairs = eval_pairs(held_entries, 500, gold, rng)
        eval_file.write_text("".join(json.dumps(r) + "\n" for r in pairs))
        for i in range(2):
            tasks = ranking_tasks(train_entries, args.rankings, args.k, gold, rng)
            label_round(args.out, f"round{i}", tasks, gold, args.seed + i)
    served = train(args.out, "round0-steps100", rounds[0], eval_file, "--steps", "100")
    warm = ("--init", str(args.out / "round0-steps100"), "--epochs", "1")
    results = [
        {**served, "run": "round 0 alone (the served RM)"},
        train(args.out, "epoch1", rounds[1], eval_file, "--epochs", "1"),
        train(args.out, "init-epoch1", rounds[1], eval_file, *warm),
        train(args.out, "steps100", rounds[1], eval_file, "--steps", "100"),
        train(args.out, "epochs10", rounds[1], eval_file, "--epochs", "10"),
    ]
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| run | flags | steps | held-out pairwise accuracy | warned | train s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['run']} | `{r['flags']}` | {r['steps']} | {r['accuracy']:.3f} | "
            f"{'yes' if r['warned_too_short'] else 'no'} | {r['train_s']} |"
        )


if __name__ == "__main__":
    main()
