"""The models a service instance serves: loaded, verified and warmed up before it binds.

Every ``<name>/<version>`` folder of the repository is opened through
:meth:`reward_service.scorer.LoadedModel.open` (manifest, sha256, tokenizer, backend, parity
gate). With one model, a failure is fatal: the caller prints one line and exits non-zero rather
than serve nothing. With several, the failed one is kept as *unavailable* (named with its reason
in ``/readyz`` and answered with 503) so one bad export cannot take its neighbours down.

Requests name models as ``name`` (newest available version) or ``name@version``; both are
looked up in memory only, so a name from a client never reaches the filesystem.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from reward_service.repository import ModelLoadError, discover
from reward_service.scorer import LoadedModel
from reward_service.serve.batcher import Batcher, BatchLimits
from reward_service.serve.errors import ApiError
from reward_service.serve.metrics import Metrics
from reward_service.serve.settings import Settings
from reward_service.template import encode_items, pad

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    name: str
    version: int
    model: LoadedModel | None = None
    error: str | None = None  # why it is unavailable
    batcher: Batcher | None = None
    warm_tokens_per_second: float = 0.0  # measured at warm-up; seeds the batcher's estimate

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def available(self) -> bool:
        return self.model is not None and self.error is None


class Registry:
    def __init__(self, served: list[ServedModel], default: str | None) -> None:
        self.models = {s.key: s for s in served}
        self.default = default

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
            raise ApiError(404, "model_not_found", f"no model {ref!r}; GET /v1/models lists them")
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

    def start(self, limits: BatchLimits, metrics: Metrics) -> None:
        """Create one batcher per available model; must run inside the event loop."""
        for served in self.available():
            assert served.model is not None
            served.batcher = Batcher(served.model, served.key, limits, metrics)
            served.batcher.tokens_per_second = served.warm_tokens_per_second
            served.batcher.start()

    async def stop(self) -> None:
        for served in self.models.values():
            if served.batcher is not None:
                await served.batcher.stop()


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
        return ServedModel(name, version, error=str(exc))
    except Exception as exc:  # a runtime's own exception types: one line, not a traceback
        return ServedModel(name, version, error=f"{folder}: {type(exc).__name__}: {exc}")
    if (model.manifest.name, model.manifest.version) != (name, version):
        return ServedModel(
            name,
            version,
            error=f"{folder}: manifest says {model.manifest.key}, folder says {name}@{version}",
        )
    served = ServedModel(name, version, model=model)
    if settings.warmup:
        served.warm_tokens_per_second = warm_up(model, settings.max_batch_tokens)
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
    for s in failed:
        log.error("model %s is unavailable: %s", s.key, s.error)
    if len(served) == 1 and failed:
        raise ModelLoadError(failed[0].error or failed[0].key)
    if len(failed) == len(served):
        raise ModelLoadError(
            f"no model of {settings.model_repo} could be loaded: {failed[0].error}"
        )
    names = {s.name for s in served}
    default = settings.default_model
    if default is not None and default.partition("@")[0] not in names:
        raise ModelLoadError(f"default model {default!r} is not in {settings.model_repo}")
    if default is None and len(names) == 1:
        default = next(iter(names))
    return Registry(served, default)
