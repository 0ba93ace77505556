"""The models a service instance serves: loaded, verified and warmed up before it binds.

Every ``<name>/<version>`` folder of the repository is opened through
:meth:`reward_service.scorer.LoadedModel.open` (manifest, sha256, tokenizer, backend, parity
gate). With one model, a failure is fatal: the caller prints one line and exits non-zero rather
than serve nothing. With several, the failed one is kept as *unavailable* (named with its reason
in ``/readyz`` and answered with 503) so one bad export cannot take its neighbours down.

Requests name models as ``name`` (newest available version) or ``name@version``; both are
looked up in memory only, so a name from a client never reaches the filesystem. What clients see
of a failure (``/readyz``, ``/v1/models``) names the model, never a path on the server; the full
reason goes to the log.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from reward_service.repository import ModelLoadError, discover
from reward_service.scorer import LoadedModel
from reward_service.serve.batcher import Batcher, BatchLimits
from reward_service.serve.errors import ApiError, clip
from reward_service.serve.metrics import Metrics
from reward_service.serve.settings import Settings
from reward_service.template import encode_items, pad

log = logging.getLogger(__name__)

ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[\w.@+-]+/)*[\w.@+-]+")


@dataclass
class ServedModel:
    name: str
    version: int
    model: LoadedModel | None = None
    error: str | None = None  # why it is unavailable, as clients may read it
    detail: str | None = None  # the same with the paths, for the operator's log
    batcher: Batcher | None = None
    warm_tokens_per_second: float = 0.0  # measured at warm-up; seeds the batcher's estimate

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def available(self) -> bool:
        return self.model is not None and self.error is None

    @property
    def info_labels(self) -> tuple[str, str, str, str, str]:
        """``reward_model_info``'s labels: model, version and the runtime ("none" if failed)."""
        backend = self.model.backend if self.model is not None else None
        return (
            self.key,
            str(self.version),
            getattr(backend, "name", "none"),
            getattr(backend, "precision", "none"),
            getattr(backend, "device", "none"),
        )


class Registry:
    def __init__(self, served: list[ServedModel], default: str | None) -> None:
        self.models = {s.key: s for s in served}
        self.default = default
        self.retiring: list[ServedModel] = []  # replaced by a newer version, still draining

    # -- lookup -----------------------------------------------------------------------------

    def find(self, ref: str | None) -> ServedModel:
        """``None`` → the default model; ``name`` → its newest version; ``name@v`` exactly."""
        ref = ref or self.default
        if ref is None:
            names = ", ".join(sorted(self.names()))
            raise ApiError(
                422, "model_required", f"several models are served; name one of: {names}"
            )
        name, _, version = ref.partition("@")
        if version:
            served = self.models.get(f"{name}@{version}")
        else:
            versions = [s for s in self.models.values() if s.name == name]
            ready = [s for s in versions if s.available]
            served = max(ready or versions, key=lambda s: s.version, default=None)
        if served is None:
            raise ApiError(
                404, "model_not_found", f"no model {clip(ref)}; GET /v1/models lists them"
            )
        return served

    def resolve(self, ref: str | None) -> ServedModel:
        """Like :meth:`find`, and 503 when that model failed to load."""
        served = self.find(ref)
        if not served.available:
            raise ApiError(
                503, "model_unavailable", f"model {served.key} is unavailable: {served.error}"
            )
        return served

    def names(self) -> set[str]:
        return {s.name for s in self.models.values()}

    def available(self) -> list[ServedModel]:
        return [s for s in self.models.values() if s.available]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, settings: Settings, metrics: Metrics) -> None:
        """Create one batcher per available model; must run inside the event loop."""
        for served in self.available():
            start_batcher(served, settings, metrics)

    def swap_in(self, served: ServedModel) -> list[ServedModel]:
        """Serve a newly loaded version; returns the older versions of its name it replaced.

        One synchronous step of the event loop: a request resolves ``name`` to the old version
        or to this one, never to nothing. The replaced versions leave the lookup at once and
        join :attr:`retiring` while their batchers finish what they hold.
        """
        older = [
            s for s in self.models.values() if s.name == served.name and s.version < served.version
        ]
        for old in older:
            del self.models[old.key]
        self.models[served.key] = served
        self.retiring.extend(s for s in older if s.batcher is not None)
        return older

    async def stop(self) -> None:
        for served in [*self.models.values(), *self.retiring]:
            if served.batcher is not None:
                await served.batcher.stop()

    def abort_queued(self, reason: str) -> int:
        """Fail every queued request of every model, retiring ones too; returns how many."""
        every = [*self.models.values(), *self.retiring]
        return sum(s.batcher.abort(reason) for s in every if s.batcher is not None)

    def overloaded(self) -> bool:
        """Whether every available model would refuse a request now."""
        batchers = self._batchers()
        return bool(batchers) and all(b.overloaded() for b in batchers)

    def running_seconds(self) -> float:
        """How long the longest batch in progress still needs, at most (its whole estimate)."""
        return max((b.running_seconds() for b in self._batchers()), default=0.0)

    def retry_after(self) -> int:
        """Seconds until the first model is likely to take work again."""
        return min((b.retry_after() for b in self._batchers()), default=1)

    def _batchers(self) -> list[Batcher]:
        return [s.batcher for s in self.available() if s.batcher is not None]


def start_batcher(served: ServedModel, settings: Settings, metrics: Metrics) -> None:
    assert served.model is not None
    limits = batch_limits(settings, served.model.backend.device)
    served.batcher = Batcher(served.model, served.key, limits, metrics)
    served.batcher.tokens_per_second = served.warm_tokens_per_second
    served.batcher.start()


GPU_BATCH_TOKENS = 16384
CPU_BATCH_TOKENS = 512
QUEUE_BATCHES = 4


def on_cpu(device: str) -> bool:
    """ONNX Runtime names its CPU provider, OpenVINO its device: both say CPU."""
    return device.upper().startswith("CPU")


def batch_limits(settings: Settings, device: str) -> BatchLimits:
    """Limits of one model's batcher, the defaults that depend on its device resolved.

    On a CPU, throughput is flat beyond a batch of a few dozen short texts, so a bigger batch
    only adds latency for every request queued behind it; a GPU needs big batches to be busy.
    The queue then holds a few batches of work ahead of any request: a few batch-times of
    waiting, whatever the device.
    """
    batch_tokens = settings.max_batch_tokens or (
        CPU_BATCH_TOKENS if on_cpu(device) else GPU_BATCH_TOKENS
    )
    queue_tokens = settings.max_queue_tokens
    return BatchLimits(
        max_batch_tokens=batch_tokens,
        max_wait_s=settings.max_wait_ms / 1000,
        split_cost_tokens=settings.split_cost_tokens,
        max_queue=settings.max_queue,
        max_queue_tokens=QUEUE_BATCHES * batch_tokens if queue_tokens is None else queue_tokens,
        max_queue_delay_s=settings.max_queue_delay_ms / 1000,
    )


def backend_options(settings: Settings) -> dict:
    options: dict = {"threads": settings.threads}
    if settings.providers:
        options["providers"] = settings.providers
    if settings.precision:
        options["precision"] = settings.precision
    return options


def warm_up(model: LoadedModel, max_batch_tokens: int) -> float:
    """Run the largest batch the token budget allows at full length, so the first client does
    not pay for lazy allocations and kernel selection; returns the tokens per second seen."""
    max_length = model.manifest.template.max_length
    text = " ".join(["warm"] * (2 * max_length))
    (item,) = encode_items(model.tokenizer, model.manifest.template, [text])
    inputs = model.manifest.inputs
    model.backend.run(pad([item], model.manifest.pad_token_id).feeds(inputs))
    batch = pad([item] * max(1, max_batch_tokens // len(item.ids)), model.manifest.pad_token_id)
    started = time.perf_counter()
    model.backend.run(batch.feeds(inputs))
    return batch.input_ids.size / (time.perf_counter() - started)


def public_reason(message: str, folder: Path, key: str) -> str:
    """A load error as a client may read it: the folder named by its model key, no paths."""
    for path in sorted({str(folder.resolve()), str(folder)}, key=len, reverse=True):
        message = message.replace(path, key)
    return ABSOLUTE_PATH.sub("<path>", message)


def unavailable(folder: Path, name: str, version: int, reason: str) -> ServedModel:
    key = f"{name}@{version}"
    log.error("model %s is unavailable: %s", key, reason)
    return ServedModel(name, version, error=public_reason(reason, folder, key), detail=reason)


def load_one(folder: Path, settings: Settings) -> ServedModel:
    name, version = folder.parent.name, int(folder.name)
    try:
        model = LoadedModel.open(
            folder,
            backend=settings.backend,
            fallback=settings.backend_fallback,
            **backend_options(settings),
        )
    except ModelLoadError as exc:
        return unavailable(folder, name, version, str(exc))
    except Exception as exc:  # a runtime's own exception types: one line, not a traceback
        return unavailable(folder, name, version, f"{folder}: {type(exc).__name__}: {exc}")
    if (model.manifest.name, model.manifest.version) != (name, version):
        reason = f"{folder}: manifest says {model.manifest.key}, folder says {name}@{version}"
        return unavailable(folder, name, version, reason)
    served = ServedModel(name, version, model=model)
    if settings.warmup:
        batch_tokens = batch_limits(settings, model.backend.device).max_batch_tokens
        served.warm_tokens_per_second = warm_up(model, batch_tokens)
    backend = model.backend
    log.info(
        "loaded %s: %s %s on %s (warm-up: %.0f tokens/s); why: %s",
        served.key,
        backend.name,
        backend.precision,
        backend.device,
        served.warm_tokens_per_second,
        model.selected_because,
    )
    return served


def load_registry(settings: Settings) -> Registry:
    """Load every model of the repository; raises ModelLoadError when nothing can serve."""
    folders = discover(settings.model_repo)
    if not folders:
        raise ModelLoadError(
            f"model repository {settings.model_repo} holds no <name>/<version> folder; "
            "export one with `reward-service export`"
        )
    served = [load_one(folder, settings) for folder in folders]
    failed = [s for s in served if not s.available]
    if len(served) == 1 and failed:
        raise ModelLoadError(failed[0].detail or failed[0].key)
    if len(failed) == len(served):
        raise ModelLoadError(
            f"no model of {settings.model_repo} could be loaded: {failed[0].detail}"
        )
    names = {s.name for s in served}
    default = settings.default_model
    if default is not None and default.partition("@")[0] not in names:
        raise ModelLoadError(f"default model {default!r} is not in {settings.model_repo}")
    if default is None and len(names) == 1:
        default = next(iter(names))
    return Registry(served, default)
