"""Backends side by side: in-process texts/s, parity against fp32, and the service under load.

One run measures, on one machine and in this order:

1. **In-process texts/s** of ONNX Runtime fp32, ONNX Runtime int8, OpenVINO f32 and OpenVINO bf16
   at 64 and 256 tokens, batches of 1, 8 and 32 (``backend.run`` on pre-tokenized feeds: the
   runtime alone).
2. **Parity** of each against ONNX Runtime fp32 on held-out texts: Spearman, max |Δ| and decision
   agreement on the held-out preference pairs.
3. **The service under load**: ``reward-service serve`` with each backend, 64 concurrent clients
   each sending single-item requests (bench/loadgen.py), beside the naive PyTorch server
   (bench/naive_server.py) and the **in-process ceiling** of each backend: the same texts scored
   by ``LoadedModel.score`` in batches of 64 (tokenization included, no HTTP), which is the most
   a service with 64 items in flight could deliver on these threads.

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
from dataclasses import dataclass
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
    Config("OpenVINO bf16", "fp32", "openvino", "bf16"),
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


def texts_per_second(run, feeds: dict, batch: int, seconds: float) -> float:
    """Median over repeated runs, after two warm-up runs; at least five runs."""
    run(feeds)
    run(feeds)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        started = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def in_process_table(
    models: dict[str, LoadedModel], texts: list[str], seconds: float
) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    cells = [(c, n, b) for c in CONFIGS for n in LENGTHS for b in BATCHES]
    for config, length, batch in tqdm(cells, desc="in-process texts/s"):
        model = models[config.label]
        feeds = exact_length_feeds(model, texts, length, batch)
        rate = texts_per_second(model.backend.run, feeds, batch, seconds)
        table.setdefault(config.label, {})[f"{length}x{batch}"] = rate
    return table


def parity_table(
    models: dict[str, LoadedModel], items: list[Item], pairs: list[tuple[int, int]]
) -> dict[str, dict[str, float]]:
    reference = models["ORT fp32"].score(items)
    out = {}
    for config in tqdm(CONFIGS, desc="parity vs ORT fp32"):
        scores = models[config.label].score(items)
        out[config.label] = {
            "spearman": spearman(reference, scores),
            "max_abs_diff": float(np.max(np.abs(reference - scores))),
            "decision_agreement": decision_agreement(reference, scores, pairs),
        }
    return out


def ceiling(model: LoadedModel, items: list[Item], seconds: float) -> float:
    """Texts/s of in-process scoring with ``CONCURRENCY`` items per call, tokenization included."""
    model.score(items[:CONCURRENCY], batch_size=CONCURRENCY)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = items[done % len(items) :][:CONCURRENCY]
        model.score(chunk, batch_size=CONCURRENCY)
        done += len(chunk)
    return done / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base_url: str, process: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with status {process.returncode} before ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {base_url} not ready after {timeout:.0f} s")


def start_service(folder: Path, config: Config, threads: int, port: int) -> subprocess.Popen:
    """``reward-service serve`` on a repository holding only this one model version."""
    repo = Path(tempfile.mkdtemp(prefix="bench-repo-"))
    (repo / folder.parent.name).mkdir()
    (repo / folder.parent.name / folder.name).symlink_to(folder.resolve())
    command = [
        sys.executable, "-m", "reward_service.cli", "serve",
        "--model-repo", str(repo), "--port", str(port), "--threads", str(threads),
        "--backend", config.backend,
    ]  # fmt: skip
    if config.precision:
        command += ["--precision", config.precision]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_naive(checkpoint: Path, threads: int, port: int) -> subprocess.Popen:
    command = [
        sys.executable, str(ROOT / "bench" / "naive_server.py"),
        "--checkpoint", str(checkpoint), "--port", str(port), "--threads", str(threads),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def under_load(process: subprocess.Popen, url: str, texts: list[str], requests: int) -> dict:
    """64 closed-loop single-item clients; a short warm-up run first, then the measured one."""
    base = url.rsplit("/", 2)[0]
    try:
        wait_ready(base, process)
        load = loadgen.run_load
        asyncio.run(load(url, texts, concurrency=CONCURRENCY, max_requests=200, duration=30))
        result = asyncio.run(
            load(url, texts, concurrency=CONCURRENCY, max_requests=requests, duration=120)
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    return result.summary()


def service_table(
    args: argparse.Namespace, models: dict[str, LoadedModel], texts: list[str]
) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for config in tqdm(CONFIGS, desc="service under load"):
        model = models[config.label]
        port = free_port()
        process = start_service(model.folder, config, args.threads, port)
        row = under_load(process, f"http://127.0.0.1:{port}/v1/score", texts, args.requests)
        row["ceiling"] = ceiling(model, texts, args.seconds * 3)
        rows[config.label] = row
    naive = ROOT / "bench" / "naive_server.py"
    if naive.is_file() and args.checkpoint.is_dir():
        port = free_port()
        process = start_naive(args.checkpoint, args.threads, port)
        rows["naive PyTorch fp32"] = under_load(
            process, f"http://127.0.0.1:{port}/v1/score", texts, args.requests
        )
    return rows


def load_models(args: argparse.Namespace) -> dict[str, LoadedModel]:
    folders = {
        "fp32": latest_version(args.model_repo, args.fp32),
        "int8": latest_version(args.model_repo, args.int8),
    }
    models = {}
    for config in tqdm(CONFIGS, desc="load + parity gate"):
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
            f"{row['ceiling']:.0f} | {row['items_per_second'] / row['ceiling']:.2f}"
            if "ceiling" in row
            else "– | –"
        )
        lines.append(
            f"| {label} | {row['items_per_second']:.0f} | {row['p50_ms']:.0f} "
            f"| {row['p99_ms']:.0f} | {ceiling_cells} |"
        )
    return "\n".join(lines)


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [rows[k]["items_per_second"] for k in labels], 0.4, label="service")
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
    parser.add_argument("--requests", type=int, default=1500, help="Per service under load.")
    parser.add_argument("--skip-service", action="store_true", help="In-process parts only.")
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
        plot(results["service"], args.output / "backends.png")
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
