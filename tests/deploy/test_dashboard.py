"""The Grafana dashboard JSON is well formed and has the panels operators need, and the local
renderer (bench/dashboard.py) computes each of them the way Prometheus would."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import sys

import numpy as np
import pytest
from deploy_paths import K8S, ROOT

DASHBOARD = K8S / "monitoring" / "grafana-dashboard.json"
REQUIRED = {
    "Requests/s by status": "reward_requests_total",
    "Latency p50 / p99": "reward_request_duration_seconds_bucket",
    "Queue time per request": "reward_queue_wait_seconds",
    "Batch size": "reward_batch_size",
    "Padded tokens per batch": "reward_batch_padded_tokens",
    "429 rate": 'status="429"',
    "Replicas": "kube_horizontalpodautoscaler_status_desired_replicas",
}


def load_renderer():
    spec = importlib.util.spec_from_file_location(
        "bench_dashboard", ROOT / "bench" / "dashboard.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def renderer():
    return load_renderer()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_has_the_required_panels(dashboard: dict) -> None:
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title, needle in REQUIRED.items():
        assert title in panels, f"missing panel {title!r}"
        assert any(needle in t["expr"] for t in panels[title]["targets"]), title


def test_dashboard_panels_are_well_formed(dashboard: dict) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        assert grid["x"] + grid["w"] <= 24
        cells |= area
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            assert set(re.findall(r"\$(?:__)?(\w+)", expr)) - {"rate_interval"} <= variables


def test_every_panel_has_a_local_rendering(renderer, dashboard: dict) -> None:
    scrapes = [renderer.Scrape(float(t), True, {}) for t in range(3)]
    for panel in dashboard["panels"]:
        renderer.panel_series(panel["title"], scrapes, window=5.0)
    with pytest.raises(KeyError):
        renderer.panel_series("Not a panel", scrapes, window=5.0)


def cumulative(samples: np.ndarray, bounds: list[float]) -> list[tuple[float, float]]:
    return [(b, float(np.sum(samples <= b))) for b in bounds]


def test_histogram_quantile_interpolates_like_prometheus(renderer) -> None:
    buckets = [(1.0, 10.0), (2.0, 30.0), (4.0, 40.0), (math.inf, 40.0)]
    assert renderer.histogram_quantile(0.5, buckets) == pytest.approx(1.5)
    assert renderer.histogram_quantile(0.125, buckets) == pytest.approx(0.5)
    assert renderer.histogram_quantile(1.0, buckets) == pytest.approx(4.0)
    assert renderer.histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 100.0)]) == 1.0
    assert math.isnan(renderer.histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_histogram_quantile_tracks_the_sample_quantile(renderer) -> None:
    """Within one bucket's width of numpy's quantile on the raw samples."""
    rng = np.random.default_rng(0)
    samples = rng.exponential(0.05, size=5000)
    bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf]
    for q in (0.5, 0.9, 0.99):
        estimate = renderer.histogram_quantile(q, cumulative(samples, bounds))
        exact = float(np.quantile(samples, q))
        upper = next(b for b in bounds if b >= exact)
        lower = max([0.0, *[b for b in bounds if b < exact]])
        assert lower <= estimate <= upper


def test_panels_compute_rates_and_means_over_the_window(renderer) -> None:
    """A counter growing 10/s and a histogram of one 2 ms observation per second."""
    labels_200 = frozenset({("route", "/v1/score"), ("status", "200")})
    model = frozenset({("model", "tiny")})
    scrapes = []
    for t in range(0, 21):
        jitter = random.Random(t).uniform(-0.1, 0.1)
        samples = {
            ("reward_requests_total", labels_200): 10.0 * (t + jitter),
            ("reward_queue_wait_seconds_sum", model): 0.002 * t,
            ("reward_queue_wait_seconds_count", model): float(t),
        }
        for le in ("0.001", "0.0025", "+Inf"):
            samples[("reward_queue_wait_seconds_bucket", model | {("le", le)})] = (
                0.0 if le == "0.001" else float(t)
            )
        scrapes.append(renderer.Scrape(float(t), True, samples))
    (ok,) = renderer.panel_series("Requests/s by status", scrapes, window=5.0)
    assert ok.label == "200"
    assert ok.values[10:] == pytest.approx([10.0] * 11, rel=0.05)
    mean, p99 = renderer.panel_series("Queue time per request", scrapes, window=5.0)
    assert mean.values[5:] == pytest.approx([0.002] * 16)
    assert all(0.001 < v <= 0.0025 for v in p99.values[5:])
    assert math.isnan(mean.values[0])
