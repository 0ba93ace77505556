"""Serving throughput and latency, side by side in one run (docs/benchmarks.md, issue 3).

For each model of the repository (fp32 and int8):
  (a) in-process ONNX Runtime through ``LoadedModel.score`` at its best batch size: the ceiling,
      no HTTP at all;
  (b) our service (``reward-service serve``, ONNX Runtime backend, dynamic batching);
and once:
  (c) the naive server (``bench/naive_server.py``: FastAPI + transformers PyTorch fp32, one
      request at a time),
each driven by ``bench/loadgen.py`` at concurrency 1/8/64 with 1-item and 32-item requests of
the same fortunes texts. Then an overload run: open-loop arrivals at 4x the measured capacity of
(b), against its unloaded (0.5x capacity) latency, with the server's peak memory.

    python bench/bench_serving.py --checkpoint runs/demo/rm --model-repo runs/demo/models \\
        --models demo demo-int8 --output bench/results/serving.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from loadgen import corpus_texts, run_load

from reward_service.repository import discover
from reward_service.scorer import LoadedModel

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], url: str, log: Path, ready_path: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[:4]} exited {process.returncode}; see {log}")
        try:
            if httpx.get(url + ready_path, timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{command[:4]} not ready in 300 s; see {log}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process(folder: Path, texts: list[str], batches: list[int], seconds: float) -> dict:
    """(a): tokenize + length-sorted batches + ORT, no HTTP; best items/s over batch sizes."""
    model = LoadedModel.open(folder, backend="onnxruntime")
    model.score(texts[:64], batch_size=64)  # warm-up
    by_batch = {}
    for batch in batches:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunk = texts[done % len(texts) :][: batch * 8]
            model.score(chunk, batch_size=batch)
            done += len(chunk)
        by_batch[batch] = done / (time.perf_counter() - started)
    best = max(by_batch, key=by_batch.get)
    return {"items_per_second": by_batch[best], "best_batch": best, "by_batch": by_batch}


def grid(url: str, texts: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    for items in args.items:
        for concurrency in args.concurrency:
            result = asyncio.run(
                run_load(
                    url,
                    texts,
                    items=items,
                    concurrency=concurrency,
                    max_requests=args.max_requests,
                    duration=args.seconds,
                )
            )
            rows.append(result.summary())
            print(
                f"  c={concurrency:<3} items={items:<3} {result.items_per_second:8.1f} items/s "
                f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  {result.statuses}",
                flush=True,
            )
    return rows


def serve_ours(folder: Path, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """Our service on a one-model repository (a symlink), ONNX Runtime like (a)."""
    repo = Path(tempfile.mkdtemp(prefix="bench-repo-"))
    (repo / folder.parent.name).mkdir()
    (repo / folder.parent.name / folder.name).symlink_to(folder.resolve())
    port = free_port()
    command = [sys.executable, "-m", "reward_service.cli", "serve", "--model-repo", str(repo),
               "--port", str(port), "--backend", "onnxruntime", *extra]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    return start(command, url, log, "/readyz"), url


def overload(folder: Path, texts: list[str], capacity_rps: float, args, out: Path) -> dict:
    """Open loop at 0.5x (unloaded) then 4x capacity, single-item requests."""
    process, url = serve_ours(folder, out / "overload.log", args.overload_flags)
    try:
        runs = {}
        for name, factor in (("unloaded", 0.5), ("overload", 4.0)):
            result = asyncio.run(
                run_load(
                    url + "/v1/score",
                    texts,
                    items=1,
                    rate=capacity_rps * factor,
                    max_requests=int(capacity_rps * factor * args.seconds),
                    duration=args.seconds,
                )
            )
            runs[name] = result.summary()
            print(f"  {name} ({factor}x): {result.summary()}", flush=True)
        alive = httpx.get(url + "/healthz", timeout=10).status_code == 200
        runs["server_alive_after"] = alive
        runs["server_peak_rss_mib"] = peak_rss_mib(process.pid)
        runs["p99_ratio"] = runs["overload"]["p99_ms"] / runs["unloaded"]["p99_ms"]
    finally:
        stop(process)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/rm"))
    parser.add_argument("--model-repo", type=Path, default=Path("runs/demo/models"))
    parser.add_argument("--models", nargs="+", default=["demo", "demo-int8"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--items", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=12.0, help="per measurement")
    parser.add_argument("--max-requests", type=int, default=4000)
    parser.add_argument("--serve-flags", nargs="*", default=[], help="extra `serve` flags")
    parser.add_argument(
        "--overload-flags", nargs="*", default=["--max-queue-delay-ms", "100"],
        help="`serve` flags for the overload run",
    )  # fmt: skip
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("bench/results/serving.json"))
    args = parser.parse_args()

    texts = corpus_texts()
    out = args.output.parent
    out.mkdir(parents=True, exist_ok=True)
    folders = {f.parent.name: f for f in discover(args.model_repo)}
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "texts": len(texts),
        "models": {},
    }
    for name in args.models:
        folder = folders[name]
        print(f"[{name}] (a) in-process ONNX Runtime", flush=True)
        ceiling = in_process(folder, texts, args.batches, args.seconds / 2)
        print(f"  best batch {ceiling['best_batch']}: {ceiling['items_per_second']:.1f} items/s")
        print(f"[{name}] (b) reward-service", flush=True)
        process, url = serve_ours(folder, out / f"serve-{name}.log", args.serve_flags)
        try:
            rows = grid(url + "/v1/score", texts, args)
        finally:
            stop(process)
        report["models"][name] = {"in_process": ceiling, "service": rows}
    if not args.skip_naive:
        print("(c) naive FastAPI + transformers server", flush=True)
        port = free_port()
        command = [sys.executable, str(ROOT / "bench" / "naive_server.py"),
                   "--checkpoint", str(args.checkpoint), "--port", str(port)]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        process = start(command, url, out / "naive.log", "/healthz")
        try:
            report["naive"] = grid(url + "/v1/score", texts, args)
        finally:
            stop(process)
    first = args.models[0]
    best_c = max(args.concurrency)
    b64 = next(r for r in report["models"][first]["service"]
               if r["concurrency"] == best_c and r["items_per_request"] == 1)  # fmt: skip
    print(f"[{first}] overload at 4x {b64['requests_per_second']:.0f} req/s", flush=True)
    report["overload"] = overload(folders[first], texts, b64["requests_per_second"], args, out)
    report["ratios"] = ratios(report, best_c)
    print(json.dumps(report["ratios"], indent=2))
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


def ratios(report: dict, concurrency: int) -> dict:
    """(b)/(a) and (b)/(c) with single-item requests at the highest concurrency."""

    def pick(rows: list[dict]) -> float:
        return next(r["items_per_second"] for r in rows
                    if r["concurrency"] == concurrency and r["items_per_request"] == 1)  # fmt: skip

    out = {}
    naive = pick(report["naive"]) if "naive" in report else None
    for name, entry in report["models"].items():
        service = pick(entry["service"])
        out[name] = {
            "service_over_in_process": service / entry["in_process"]["items_per_second"],
            "service_over_naive": service / naive if naive else None,
        }
    return out


if __name__ == "__main__":
    main()
