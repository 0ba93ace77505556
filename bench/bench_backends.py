"""Backends side by side: in-process texts/s, parity against fp32, and the service under load.

One run measures, on one machine and in this order:

1. **In-process texts/s** of ONNX Runtime fp32 and int8, OpenVINO f32, int8 and bf16, and
   whatever ``auto`` picks on this machine, at 64 and 256 tokens, batches of 1, 8 and 32
   (``backend.run`` on pre-tokenized feeds: the runtime alone).
2. **Parity** of each against ONNX Runtime fp32 on held-out texts: Spearman, max |Δ| and decision
   agreement on the held-out preference pairs.
3. **The service under load**: ``reward-service serve`` with each backend, 64 concurrent clients
   each sending single-item requests (bench/loadgen.py), beside the naive PyTorch server
   (bench/naive_server.py) and the **in-process ceiling** of each backend: the same texts scored
   by ``LoadedModel.score``, globally length-sorted, best of batch sizes 8 and 32 (tokenization
   included, no HTTP): the most any service could deliver from those texts on these threads.

Run (model repository from ``reward-service export``, fp32 and int8 versions of one RM, and the
HF checkpoint the naive server loads):

    .venv/bin/python bench/bench_backends.py --model-repo runs/demo/models \
        --fp32 demo --int8 demo-int8 --checkpoint runs/demo/rm \
        --eval-data runs/demo/data/eval.jsonl --output runs/bench-backends

Writes ``results.json`` and ``backends.png`` under ``--output`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402

from reward_service.backends.cpu import host_features  # noqa: E402
from reward_service.checkpoint import items_and_pairs  # noqa: E402
from reward_service.data.formats import load_groups  # noqa: E402
from reward_service.repository import discover  # noqa: E402
from reward_service.scorer import LoadedModel  # noqa: E402
from reward_service.stats import decision_agreement, spearman  # noqa: E402
from reward_service.template import Item, encode_items, pad  # noqa: E402

LENGTHS = (64, 256)
BATCHES = (1, 8, 32)
CONCURRENCY = 64
NAIVE = "naive PyTorch fp32"
CEILING_TEXTS = 256
CEILING_BATCHES = (8, 32)


@dataclass(frozen=True)
class Config:
    """One backend to measure: which graph (fp32 or int8 version) and how to run it."""

    label: str
    graph: str  # "fp32" or "int8": which exported version
    backend: str
    precision: str | None

    def options(self, threads: int) -> dict:
        options: dict = {"threads": threads}
        if self.precision:
            options["precision"] = self.precision
        return options


CONFIGS = (
    Config("ORT fp32", "fp32", "onnxruntime", None),
    Config("ORT int8", "int8", "onnxruntime", None),
    Config("OpenVINO f32", "fp32", "openvino", "f32"),
    Config("OpenVINO int8", "int8", "openvino", "f32"),
    Config("OpenVINO bf16", "fp32", "openvino", "bf16"),
    Config("auto", "fp32", "auto", None),
)


def latest_version(repo: Path, name: str) -> Path:
    folders = [f for f in discover(repo) if f.parent.name == name]
    if not folders:
        raise SystemExit(f"no model {name!r} in {repo}")
    return folders[-1]


def exact_length_feeds(model: LoadedModel, texts: list[str], length: int, batch: int) -> dict:
    """A batch of ``batch`` real texts cut to exactly ``length`` tokens (no padding at all)."""
    template = model.manifest.template.model_copy(update={"max_length": length})
    long_text = " ".join(texts)
    items = [long_text[i * 97 :] for i in range(batch)]  # distinct texts, each long enough
    encoded = encode_items(model.tokenizer, template, items)
    assert all(len(e.ids) == length for e in encoded), "texts too short for the length asked"
    return pad(encoded, model.manifest.pad_token_id).feeds(model.manifest.inputs)


def interleaved_seconds(
    runs: dict[str, Callable[[], object]], seconds: float, min_runs: int = 5
) -> dict:
    """Median seconds per call of each runner, taking turns (A B C A B C ...).

    Turns spread a shared machine's noise over every runner alike, so the ratios between them
    hold even when the absolute figures wander. Two warm-up calls each; at least five timed.
    """
    for run in runs.values():
        run()
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    deadline = time.perf_counter() + seconds * len(runs)
    while min(len(t) for t in times.values()) < min_runs or time.perf_counter() < deadline:
        for label, run in runs.items():
            started = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(t) for label, t in times.items()}


def in_process_table(
    models: dict[str, LoadedModel], texts: list[str], seconds: float
) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {label: {} for label in models}
    cells = [(n, b) for n in LENGTHS for b in BATCHES]
    for length, batch in tqdm(cells, desc="in-process texts/s"):
        runs = {}
        for label, model in models.items():
            feeds = exact_length_feeds(model, texts, length, batch)
            runs[label] = partial(model.backend.run, feeds)
        for label, median in interleaved_seconds(runs, seconds).items():
            table[label][f"{length}x{batch}"] = batch / median
    return table


def parity_table(
    models: dict[str, LoadedModel], items: list[Item], pairs: list[tuple[int, int]]
) -> dict[str, dict[str, float]]:
    reference = models["ORT fp32"].score(items)
    out = {}
    for label in tqdm(models, desc="parity vs ORT fp32"):
        scores = models[label].score(items)
        out[label] = {
            "spearman": spearman(reference, scores),
            "max_abs_diff": float(np.max(np.abs(reference - scores))),
            "decision_agreement": decision_agreement(reference, scores, pairs),
        }
    return out


def ceilings(models: dict[str, LoadedModel], texts: list[str], seconds: float) -> dict:
    """Texts/s of the best in-process batching of the same texts, tokenization included.

    ``LoadedModel.score`` sorts all the texts by length before cutting batches, so padding is
    as small as it gets; the best of two batch sizes is kept. This is the most a service could
    deliver from these texts on these threads, whatever its batcher does.
    """
    sample = texts[:CEILING_TEXTS]
    runs = {
        (label, size): partial(model.score, sample, batch_size=size)
        for label, model in models.items()
        for size in CEILING_BATCHES
    }
    per_call = interleaved_seconds(runs, seconds, min_runs=3)
    best: dict[str, float] = {}
    for (label, _), t in per_call.items():
        best[label] = max(best.get(label, 0.0), len(sample) / t)
    return best


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise SystemExit(f"server exited ({process.returncode}) before ready: {error[-2000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s")


@dataclass
class Server:
    process: subprocess.Popen
    score_url: str
    ready_url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_service(folder: Path, config: Config, threads: int) -> Server:
    """``reward-service serve`` on a repository holding only this one model version."""
    repo = Path(tempfile.mkdtemp(prefix="bench-repo-"))
    (repo / folder.parent.name).mkdir()
    (repo / folder.parent.name / folder.name).symlink_to(folder.resolve())
    port = free_port()
    command = [
        sys.executable, "-m", "reward_service.cli", "serve",
        "--model-repo", str(repo), "--port", str(port), "--threads", str(threads),
        "--backend", config.backend,
    ]  # fmt: skip
    if config.precision:
        command += ["--precision", config.precision]
    # Several services run at once here: no gRPC door, or they would all want port 8001.
    env = {**os.environ, "REWARD_SERVICE_GRPC_PORT": "0"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    return Server(process, f"{base}/v1/score", f"{base}/readyz")


def start_naive(checkpoint: Path, threads: int) -> Server:
    port = free_port()
    command = [
        sys.executable, str(ROOT / "bench" / "naive_server.py"),
        "--checkpoint", str(checkpoint), "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    return Server(process, f"{base}/v1/score", f"{base}/healthz")


def load_round(server: Server, texts: list[str], requests: int, seed: int) -> loadgen.LoadResult:
    return asyncio.run(
        loadgen.run_load(
            server.score_url,
            texts,
            concurrency=CONCURRENCY,
            max_requests=requests,
            duration=120,
            seed=seed,
        )
    )


def service_table(
    args: argparse.Namespace, models: dict[str, LoadedModel], texts: list[str]
) -> dict[str, dict]:
    """Every server up at once (idle ones cost nothing), then rounds in turn: each round loads
    each server with 64 clients, then measures every in-process ceiling."""
    servers = {
        c.label: start_service(models[c.label].folder, c, args.threads)
        for c in CONFIGS
        if c.label in models
    }
    if (ROOT / "bench" / "naive_server.py").is_file() and args.checkpoint.is_dir():
        servers[NAIVE] = start_naive(args.checkpoint, args.threads)
    rounds: dict[str, list[loadgen.LoadResult]] = {label: [] for label in servers}
    ceiling_rounds: dict[str, list[float]] = {label: [] for label in models}
    try:
        for server in servers.values():
            wait_ready(server.ready_url, server.process)
            load_round(server, texts, 2 * CONCURRENCY, seed=99)  # warm-up, not counted
        for r in tqdm(range(args.rounds), desc="service rounds"):
            for label, server in servers.items():
                rounds[label].append(load_round(server, texts, args.requests, seed=r))
            for label, rate in ceilings(models, texts, args.seconds).items():
                ceiling_rounds[label].append(rate)
    finally:
        for server in servers.values():
            server.stop()
    table = {}
    for label, results in rounds.items():
        latencies = np.concatenate([r.latencies_ms for r in results])
        table[label] = {
            "texts_per_second": statistics.median(r.items_per_second for r in results),
            "rounds": [r.items_per_second for r in results],
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "statuses": [r.statuses for r in results],
        }
        if label in ceiling_rounds:
            table[label]["ceiling"] = statistics.median(ceiling_rounds[label])
            table[label]["ceiling_rounds"] = ceiling_rounds[label]
    return table


def load_models(args: argparse.Namespace) -> dict[str, LoadedModel]:
    folders = {
        "fp32": latest_version(args.model_repo, args.fp32),
        "int8": latest_version(args.model_repo, args.int8),
    }
    models = {}
    wanted = {"ORT fp32", *(args.only or "").split(",")}
    chosen = [c for c in CONFIGS if not args.only or c.label in wanted]
    for config in tqdm(chosen, desc="load + parity gate"):
        models[config.label] = LoadedModel.open(
            folders[config.graph], backend=config.backend, **config.options(args.threads)
        )
    return models


def markdown_in_process(table: dict[str, dict[str, float]]) -> str:
    heads = [f"{n} tok b{b}" for n in LENGTHS for b in BATCHES]
    lines = ["| backend | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for label, row in table.items():
        cells = [f"{row[f'{n}x{b}']:.0f}" for n in LENGTHS for b in BATCHES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_parity(parity: dict[str, dict[str, float]], n_items: int, n_pairs: int) -> str:
    lines = [
        f"| backend | Spearman vs ORT fp32 ({n_items} texts) | max abs Δ "
        f"| decision agreement ({n_pairs} pairs) |",
        "|---|---|---|---|",
    ]
    for label, row in parity.items():
        lines.append(
            f"| {label} | {row['spearman']:.5f} | {row['max_abs_diff']:.4f} "
            f"| {row['decision_agreement']:.4f} |"
        )
    return "\n".join(lines)


def markdown_service(rows: dict[str, dict]) -> str:
    lines = [
        f"| server ({CONCURRENCY} clients, 1 text each) | texts/s | p50 ms | p99 ms "
        "| in-process ceiling texts/s | service / ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        ceiling_cells = (
            f"{row['ceiling']:.0f} | {row['texts_per_second'] / row['ceiling']:.2f}"
            if "ceiling" in row
            else "– | –"
        )
        lines.append(
            f"| {label} | {row['texts_per_second']:.0f} | {row['p50_ms']:.0f} "
            f"| {row['p99_ms']:.0f} | {ceiling_cells} |"
        )
    return "\n".join(lines)


def target_lines(
    rows: dict[str, dict], parity: dict[str, dict[str, float]], models: dict[str, LoadedModel]
) -> str:
    """Issue 9's service target as measured in this run: `auto` vs the naive PyTorch server."""
    auto = rows.get("auto")
    if auto is None or NAIVE not in rows:
        return ""
    picked = models["auto"].backend
    return "\n".join(
        [
            f"auto served with {picked.name} {picked.precision}: {models['auto'].selected_because}",
            f"auto service / naive PyTorch server: "
            f"{auto['texts_per_second'] / rows[NAIVE]['texts_per_second']:.2f} (target >= 3)",
            "auto service / its in-process ceiling: "
            f"{auto['texts_per_second'] / auto['ceiling']:.2f}",
            f"auto Spearman vs fp32 on held-out texts: {parity['auto']['spearman']:.5f}",
        ]
    )


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [rows[k]["texts_per_second"] for k in labels], 0.4, label="service")
    ax.bar(x + 0.2, [rows[k].get("ceiling", 0.0) for k in labels], 0.4, label="in-process")
    ax.set_xticks(x, labels, rotation=15)
    ax.set_ylabel("texts/s")
    ax.set_title(f"{CONCURRENCY} concurrent single-text clients")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "runs/demo/models")
    parser.add_argument("--fp32", default="demo", help="Model name of the fp32 export.")
    parser.add_argument("--int8", default="demo-int8", help="Model name of the int8 export.")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "runs/demo/rm")
    parser.add_argument("--eval-data", type=Path, default=ROOT / "runs/demo/data/eval.jsonl")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=2.0, help="Per in-process cell.")
    parser.add_argument("--requests", type=int, default=640, help="Per server per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Service rounds (median kept).")
    parser.add_argument("--skip-service", action="store_true", help="In-process parts only.")
    parser.add_argument(
        "--only",
        help="Comma-separated backend labels to measure (ORT fp32 is always the reference), "
        "e.g. 'ORT fp32,auto'; default: all.",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "runs/bench-backends")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    items, pairs = items_and_pairs(load_groups(args.eval_data)[1])
    texts = [item if isinstance(item, str) else " ".join(item) for item in items]
    models = load_models(args)
    results: dict = {
        "machine": {
            "cpu": host_features().describe(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "in_process": in_process_table(models, texts, args.seconds),
        "parity": parity_table(models, items, pairs),
    }
    print(markdown_in_process(results["in_process"]))
    print()
    print(markdown_parity(results["parity"], len(items), len(pairs)))
    if not args.skip_service:
        results["service"] = service_table(args, models, loadgen.corpus_texts())
        print()
        print(markdown_service(results["service"]))
        print()
        print(target_lines(results["service"], results["parity"], models))
        plot(results["service"], args.output / "backends.png")
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
