"""Prometheus metrics of the service; names are the serving contract of docs/architecture.md.

Each app owns its own ``CollectorRegistry`` so several apps (tests, benchmarks) can live in one
process without clashing. Buckets are chosen for the quantities at hand: latencies from 1 ms to
a minute, batch sizes and padded tokens in powers of two.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SIZE_BUCKETS = tuple(float(2**k) for k in range(0, 11))
TOKEN_BUCKETS = tuple(float(2**k) for k in range(4, 18))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "reward_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "reward_request_duration_seconds",
            "Request latency, first byte in to last byte out.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "reward_queue_wait_seconds",
            "Time an item waits in the batcher queue before its batch runs.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "reward_inference_seconds",
            "Backend time of one batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "reward_batch_size",
            "Items per backend run.",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_padded_tokens = Histogram(
            "reward_batch_padded_tokens",
            "Padded tokens (items x longest item) per backend run.",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "reward_queue_depth", "Items waiting in the batcher queue.", ["model"], registry=r
        )
        self.tokens_scored = Counter(
            "reward_tokens_scored", "Real (unpadded) tokens scored.", ["model"], registry=r
        )
        self.rejected = Counter(
            "reward_rejected", "Requests refused before scoring.", ["model", "reason"], registry=r
        )
        self.failed_items = Counter(
            "reward_failed_items",
            "Items that got no score: non_finite (NaN or infinity), error (the backend raised on "
            "them even alone).",
            ["model", "kind"],
            registry=r,
        )
        self.cancelled_items = Counter(
            "reward_cancelled_items",
            "Queued items dropped unscored because their client disconnected.",
            ["model"],
            registry=r,
        )
        self.timeouts = Counter(
            "reward_timeouts",
            "Connections closed for sending headers too slowly, requests refused (408) for "
            "sending their body too slowly.",
            ["phase"],
            registry=r,
        )
        self.reloads = Counter(
            "reward_model_reloads",
            "Versions found in the model repository while serving: loaded (now served) or "
            "refused (sha256, parity gate or load failed; the previous version keeps serving).",
            ["model", "outcome"],
            registry=r,
        )
        self.serving_version = Gauge(
            "reward_model_serving_version",
            "The version a request naming the model without a version gets.",
            ["name"],
            registry=r,
        )
        self.model_info = Gauge(
            "reward_model_info",
            "Loaded models (1: serving, 0: unavailable) with their runtime.",
            ["model", "version", "backend", "precision", "device"],
            registry=r,
        )
