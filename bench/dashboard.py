"""Render the Grafana dashboard's panels from a real local run, as a PNG for the docs.

No Prometheus or Grafana runs here, so this plays both parts: it starts ``reward-service serve``,
drives a phased open-loop load with bench/loadgen.py (light, busy, overload, cool-down), scrapes
``/metrics`` every second, and evaluates each panel of k8s/monitoring/grafana-dashboard.json
with the same arithmetic PromQL would use (``rate`` over a window, ``histogram_quantile`` with
linear interpolation inside a bucket, mean = rate of ``_sum`` / rate of ``_count``). Panel
titles come from the dashboard JSON; a test fails if a panel has no local counterpart.

    python bench/dashboard.py --model-repo runs/demo/models --out docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "k8s" / "monitoring" / "grafana-dashboard.json"
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402

NON_SCORING_ROUTES = {"/healthz", "/readyz", "/metrics", "unmatched"}
# (name, requests/s as a multiple of --base-rate, seconds): enough to show batching grow with
# load, the queue and 429s under overload, and the recovery.
PHASES = (("light", 0.25, 15.0), ("busy", 1.0, 15.0), ("overload", 4.0, 10.0), ("cool", 0.1, 10.0))

Labels = frozenset[tuple[str, str]]


@dataclass
class Scrape:
    """One scrape: seconds since the start, and every sample as (name, labels) -> value."""

    t: float
    up: bool
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def total(self, name: str, keep: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
        return sum(v for (n, lab), v in self.samples.items() if n == name and keep(dict(lab)))

    def by(self, name: str, label: str, keep: Callable[[dict[str, str]], bool] = lambda _: True):
        out: dict[str, float] = {}
        for (n, lab), v in self.samples.items():
            labels = dict(lab)
            if n == name and keep(labels):
                out[labels[label]] = out.get(labels[label], 0.0) + v
        return out


def parse_exposition(text: str) -> dict[tuple[str, Labels], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' estimate from cumulative (upper bound, count) pairs sorted by bound.

    Linear interpolation inside the bucket holding rank q * total, the lowest bucket starting
    at 0; a rank in the +Inf bucket answers the highest finite bound; no observations: NaN.
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_increase(
    now: Scrape, before: Scrape, name: str, keep: Callable[[dict[str, str]], bool]
) -> list[tuple[float, float]]:
    """sum by (le) (increase(name_bucket[window])) as sorted (le, count) pairs."""
    totals: dict[float, float] = {}
    for (n, lab), v in now.samples.items():
        labels = dict(lab)
        if n != name + "_bucket" or not keep(labels):
            continue
        le = float(labels["le"])
        totals[le] = totals.get(le, 0.0) + v - before.samples.get((n, lab), 0.0)
    return sorted(totals.items())


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def everything(_: dict[str, str]) -> bool:
    return True


def scoring(labels: dict[str, str]) -> bool:
    return labels.get("route") not in NON_SCORING_ROUTES


@dataclass
class Series:
    label: str
    values: list[float]


def panel_series(title: str, scrapes: list[Scrape], window: float) -> list[Series]:
    """The local evaluation of one dashboard panel: a rate-window pair per point in time."""
    pairs = []
    for i, now in enumerate(scrapes):
        j = i
        while j > 0 and now.t - scrapes[j - 1].t <= window + 1e-9:
            j -= 1
        pairs.append((now, scrapes[j]))

    def per_second(fn: Callable[[Scrape], float]) -> list[float]:
        return [ratio(fn(now) - fn(before), now.t - before.t) for now, before in pairs]

    def mean(name: str) -> list[float]:
        return [
            ratio(
                now.total(name + "_sum") - before.total(name + "_sum"),
                now.total(name + "_count") - before.total(name + "_count"),
            )
            for now, before in pairs
        ]

    def quantile(name: str, q: float, keep=everything) -> list[float]:
        return [histogram_quantile(q, bucket_increase(now, b, name, keep)) for now, b in pairs]

    if title == "Requests/s by status":
        statuses = sorted({s for now in scrapes for s in now.by("reward_requests_total", "status")})
        return [
            Series(s, per_second(lambda x, s=s: x.by("reward_requests_total", "status").get(s, 0)))
            for s in statuses
        ]
    if title == "Latency p50 / p99":
        name = "reward_request_duration_seconds"
        return [Series(f"p{int(q * 100)}", quantile(name, q, scoring)) for q in (0.5, 0.99)]
    if title == "Queue time per request":
        name = "reward_queue_wait_seconds"
        return [Series("mean", mean(name)), Series("p99", quantile(name, 0.99))]
    if title == "Batch size":
        name = "reward_batch_size"
        return [Series("mean", mean(name)), Series("p90", quantile(name, 0.9))]
    if title == "Padded tokens per batch":
        name = "reward_batch_padded_tokens"
        return [Series("mean", mean(name)), Series("p99", quantile(name, 0.99))]
    if title == "429 rate":
        return [
            Series(
                "429/s",
                per_second(
                    lambda x: x.total("reward_requests_total", lambda la: la["status"] == "429")
                ),
            ),
            Series("rejected", per_second(lambda x: x.total("reward_rejected_total"))),
        ]
    if title == "Queue depth":
        return [Series("local pod", [now.total("reward_queue_depth") for now in scrapes])]
    if title == "Replicas":
        return [Series("scraped up", [float(now.up) for now in scrapes])]
    raise KeyError(f"no local rendering for dashboard panel {title!r}")


def dashboard_panels(path: Path = DASHBOARD) -> list[dict]:
    """Panels in the order Grafana lays them out (top to bottom, left to right)."""
    panels = json.loads(path.read_text())["panels"]
    return sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


UNIT_SCALE = {"s": (1000.0, "ms"), "reqps": (1.0, "requests/s"), "short": (1.0, "")}


def render(scrapes: list[Scrape], phases: list[tuple[str, float, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard_panels()
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.1 * rows), sharex=True)
    t = [s.t for s in scrapes]
    for ax, panel in zip(axes.flat, panels, strict=False):
        scale, unit = UNIT_SCALE[panel["fieldConfig"]["defaults"]["unit"]]
        for series in panel_series(panel["title"], scrapes, window=5.0):
            ax.plot(t, [v * scale for v in series.values], label=series.label, linewidth=1.4)
        for name, start, end in phases:
            shade = 0.15 if name.startswith("overload") else 0.05
            ax.axvspan(start, end, alpha=shade, color="tab:red")
        if panel["fieldConfig"]["defaults"].get("decimals") == 0:
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(bottom=0, top=max(2, ax.get_ylim()[1]))
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    for ax in axes[0]:
        for name, start, end in phases:
            ax.annotate(name, ((start + end) / 2, 0.97), xycoords=("data", "axes fraction"),
                        ha="center", va="top", fontsize=7, color="tab:red")  # fmt: skip
    fig.suptitle("Reward service dashboard, rendered from a local run (bench/dashboard.py)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD_SERVICE_")}
    env |= {"REWARD_SERVICE_MAX_QUEUE": str(args.max_queue), "REWARD_SERVICE_LOG_LEVEL": "warning"}
    env["REWARD_SERVICE_MAX_ITEMS"] = str(min(args.max_queue, 1024))  # a request must fit the queue
    if args.default_model:
        env["REWARD_SERVICE_DEFAULT_MODEL"] = args.default_model
    command = [
        sys.executable, "-m", "reward_service.cli", "serve",
        "--model-repo", str(args.model_repo), "--port", str(port),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def wait_ready(process: subprocess.Popen, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


class Scraper(threading.Thread):
    """Scrapes /metrics on its own thread, so a load that saturates the load generator's event
    loop cannot starve the scrapes (a real Prometheus is another process too)."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.scrapes: list[Scrape] = []
        self.started = time.perf_counter()
        self.done = threading.Event()

    def now(self) -> float:
        return time.perf_counter() - self.started

    def run(self) -> None:
        with httpx.Client(timeout=self.interval * 0.9) as client:
            while not self.done.is_set():
                t = self.now()
                try:
                    body = client.get(self.url + "/metrics").text
                    self.scrapes.append(Scrape(t, True, parse_exposition(body)))
                except httpx.HTTPError:
                    last = self.scrapes[-1].samples if self.scrapes else {}
                    self.scrapes.append(Scrape(t, False, last))
                self.done.wait(max(0.0, self.interval - (self.now() - t)))


async def drive(url: str, scraper: Scraper, base_rate: float, items: int) -> list[tuple]:
    """Runs the phases; returns (name, requests/s, start, end, loadgen summary) per phase."""
    texts = loadgen.corpus_texts()
    phases = []
    await asyncio.sleep(3 * scraper.interval)
    for name, multiple, seconds in PHASES:
        begin = scraper.now()
        rate = base_rate * multiple
        result = await loadgen.run_load(
            url + "/v1/score",
            texts,
            items=items,
            rate=rate,
            duration=seconds,
            max_requests=math.ceil(rate * seconds),
        )
        phases.append((name, rate, begin, scraper.now(), result.summary()))
    await asyncio.sleep(6 * scraper.interval)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "runs" / "demo" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    parser.add_argument(
        "--base-rate", type=float, default=12.0, help="requests/s of the 'busy' phase"
    )
    parser.add_argument("--items", type=int, default=8, help="texts per request")
    parser.add_argument("--default-model", help="model scored when the repository holds several")
    parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="REWARD_SERVICE_MAX_QUEUE: small, so overload shows 429s",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(args, port)
    try:
        wait_ready(process, url)
        scraper = Scraper(url, args.interval)
        scraper.start()
        phases = asyncio.run(drive(url, scraper, args.base_rate, args.items))
        scraper.done.set()
        scraper.join()
    finally:
        process.terminate()
        process.wait(timeout=60)
    spans = [(f"{name} {rate:g}/s", begin, end) for name, rate, begin, end, _ in phases]
    render(scraper.scrapes, spans, args.out)
    for name, rate, _, _, summary in phases:
        print(json.dumps({"phase": name, "requests_per_s": rate, **summary}))
    print(f"wrote {args.out} ({len(scraper.scrapes)} scrapes)")


if __name__ == "__main__":
    main()
