"""Overload and long texts at DEFAULT settings, side by side with a baseline build (issue 10).

    cd bench && python bench_overload.py --model-repo ../runs/bench/models \\
        --baseline /tmp/serve-base --output results/overload.json

Each server is ``reward-service serve`` with no flag but the repository and a port. Phases:

  capacity    2 closed-loop clients, 32-item requests (one queued while the other runs, within
              the default latency bound), sleeping Retry-After on a 429: accepted items/s, so
              C = capacity in 32-item requests per second
  unloaded    1 client, 32-item requests one after another, for ``--unloaded-seconds`` (enough
              answers for a p99 on a noisy machine): the unloaded p50/p99
  open 4x     open-loop Poisson arrivals at 4 C requests/s
  256 polite  256 closed-loop clients that sleep Retry-After on a 429 (RewardClient does)
  256 hammer  256 closed-loop clients that resend at once (the worst case)
  long texts  a fresh server: four concurrent 4 MB requests of 256 16,000-character texts, at
              default settings and, for this tree, also with the latency bound off
              (``--max-queue-tokens 0``) so that all four are admitted, the baseline's default

For each: answers by status, p50/p99 of accepted (200) requests, 429s without Retry-After, and
the server's RSS before the run and its peak (VmHWM) after the phase. ``--baseline SRC`` runs
the same phases, in the same run, against the server from another source tree (e.g. the commit
before issue 10, unpacked with ``git archive``), started from that tree with the same venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_serving import free_port, peak_rss_mib, start, stop
from loadgen import corpus_texts, run_load

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 32


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(
    src: Path, repo: Path, log: Path, flags: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "reward_service.cli", "serve", "--model-repo", str(repo),
               "--port", str(port), *flags]  # fmt: skip
    os.environ["PYTHONPATH"] = str(src)
    try:
        process = start(command, f"http://127.0.0.1:{port}", log, "/readyz")
    finally:
        del os.environ["PYTHONPATH"]
    return process, f"http://127.0.0.1:{port}"


def phase(url: str, texts: list[str], pid: int, seconds: float, **load) -> dict:
    result = asyncio.run(
        run_load(url + "/v1/score", texts, items=ITEMS, duration=seconds, max_requests=10**6,
                 **load)
    )  # fmt: skip
    summary = result.summary()
    summary["server_5xx"] = sum(n for code, n in result.statuses.items() if code.startswith("5"))
    summary["server_peak_rss_mib"] = peak_rss_mib(pid)
    print(
        f"    {json.dumps({k: summary[k] for k in ('statuses', 'p50_ms', 'p99_ms')})} "
        f"{summary['items_per_second']:.0f} items/s, peak RSS {summary['server_peak_rss_mib']:.0f}"
        " MiB",
        flush=True,
    )
    return summary


def overload(src: Path, repo: Path, texts: list[str], args: argparse.Namespace, out: Path) -> dict:
    seconds = args.seconds
    process, url = serve(src, repo, out / f"overload-{src.name}.log")
    try:
        runtime = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["runtime"]
        report: dict = {"runtime": runtime, "rss_before_mib": rss_mib(process.pid)}
        print(f"  {src}: {runtime}, RSS {report['rss_before_mib']:.0f} MiB", flush=True)
        print("  capacity", flush=True)
        report["capacity"] = phase(
            url, texts, process.pid, seconds, concurrency=2, honor_retry_after=True
        )
        capacity_rps = report["capacity"]["requests_per_second"]
        print("  unloaded", flush=True)
        report["unloaded"] = phase(url, texts, process.pid, args.unloaded_seconds, concurrency=1)
        print(f"  open loop at 4x ({4 * capacity_rps:.1f} requests/s)", flush=True)
        report["open_4x"] = phase(url, texts, process.pid, seconds, rate=4 * capacity_rps)
        print("  256 clients honouring Retry-After", flush=True)
        report["polite_256"] = phase(
            url, texts, process.pid, seconds, concurrency=256, honor_retry_after=True
        )
        print("  256 clients resending at once", flush=True)
        report["hammer_256"] = phase(url, texts, process.pid, seconds, concurrency=256)
        report["alive_after"] = httpx.get(url + "/healthz", timeout=30).status_code == 200
        report["load_average_after"] = os.getloadavg()
        unloaded = report["unloaded"]["p99_ms"]
        report["p99_over_unloaded"] = {
            name: report[name]["p99_ms"] / unloaded
            for name in ("open_4x", "polite_256", "hammer_256")
        }
    finally:
        stop(process)
    return report


def long_texts(src: Path, repo: Path, out: Path, flags: tuple[str, ...] = ()) -> dict:
    texts = [" ".join(f"w{(i * 7 + j) % 997}" for j in range(3200))[:16000] for i in range(256)]
    body = json.dumps({"inputs": texts}).encode()
    process, url = serve(src, repo, out / f"long-{src.name}.log", flags)
    try:
        httpx.post(url + "/v1/score", json={"inputs": texts[:4]}, timeout=300)
        before, hwm_before = rss_mib(process.pid), peak_rss_mib(process.pid)

        async def four() -> list[int]:
            async with httpx.AsyncClient(timeout=600) as client:
                responses = await asyncio.gather(*(
                    client.post(url + "/v1/score", content=body,
                                headers={"content-type": "application/json"})
                    for _ in range(4)
                ))  # fmt: skip
            return [r.status_code for r in responses]

        started = time.perf_counter()
        statuses = asyncio.run(four())
        report = {
            "flags": list(flags),
            "request_bytes": len(body),
            "statuses": statuses,
            "seconds": time.perf_counter() - started,
            "rss_before_mib": before,
            "peak_rss_mib": peak_rss_mib(process.pid),
        }
        report["peak_growth_mib"] = report["peak_rss_mib"] - max(before, hwm_before)
        print(f"  {src}: {json.dumps(report)}", flush=True)
    finally:
        stop(process)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "runs" / "bench" / "models")
    parser.add_argument("--baseline", type=Path, help="another source tree to run side by side")
    parser.add_argument("--seconds", type=float, default=15.0, help="per load phase")
    parser.add_argument("--unloaded-seconds", type=float, default=45.0)
    parser.add_argument("--output", type=Path, default=Path("results/overload.json"))
    args = parser.parse_args()
    out = args.output.parent
    out.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts()
    sources = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model_repo": str(args.model_repo),
        "items_per_request": ITEMS,
        "seconds_per_phase": args.seconds,
        "load_average_before": os.getloadavg(),
        "overload": {},
        "long_texts": {},
    }
    for src in sources:
        print(f"[overload] {src}", flush=True)
        report["overload"][str(src)] = overload(src, args.model_repo, texts, args, out)
    runs = [(ROOT, ()), (ROOT, ("--max-queue-tokens", "0"))]
    runs += [(src, ()) for src in sources[1:]]
    for src, flags in runs:
        print(f"[long texts] {src} {' '.join(flags)}", flush=True)
        name = f"{src} {' '.join(flags)}".strip()
        report["long_texts"][name] = long_texts(src, args.model_repo, out, flags)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
