"""The path every scoring route shares: validate → tokenize → batch → infer → scores.

Routes translate their wire format into :data:`~reward_service.template.Item` lists and back;
everything in between lives here so the limits, the tokenization and the batching behave the
same whichever protocol a client speaks.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reward_service.repository import TOKENIZER_FILE
from reward_service.scorer import LoadedModel
from reward_service.serve.batcher import InferenceFailed, QueueFull
from reward_service.serve.errors import ApiError
from reward_service.serve.registry import ServedModel
from reward_service.serve.state import Service
from reward_service.template import Item, encode_items


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # (N,) float32 raw
    tokens: list[int]
    truncated: list[bool]


def check_limits(service: Service, n_items: int, texts: Iterable[str]) -> None:
    """413 for too many items or an over-long text: the client must split or shorten."""
    settings = service.settings
    if n_items > settings.max_items:
        raise ApiError(
            413, "too_many_items", f"{n_items} items; at most {settings.max_items} per request"
        )
    limit = settings.max_text_chars
    for text in texts:
        if len(text) > limit:
            raise ApiError(
                413, "text_too_long", f"a text of {len(text)} characters; at most {limit}"
            )


async def score(service: Service, served: ServedModel, items: Sequence[Item]) -> Scored:
    assert served.model is not None and served.batcher is not None
    model = served.model
    loop = asyncio.get_running_loop()
    # tokenizers' batch encode releases the GIL: other requests are parsed meanwhile.
    encoded = await loop.run_in_executor(
        service.tokenize_pool, encode_items, model.tokenizer, model.manifest.template, items
    )
    scores = await _infer(service, served, encoded)
    return Scored(scores, [len(e.ids) for e in encoded], [e.truncated for e in encoded])


async def score_models(
    service: Service, models: Sequence[ServedModel], items: Sequence[Item]
) -> list[Scored]:
    """The same items through several models, e.g. a reward model and a cost model.

    Items are tokenized once per distinct tokenizer and template (models fine-tuned from one
    backbone share them), then handed to every model's batcher at once, so each model still
    batches them with other requests' items and the models run side by side.
    """
    loop = asyncio.get_running_loop()
    keys = [tokenization_key(served) for served in models]
    firsts: dict[tuple[str, str], LoadedModel] = {}
    for key, served in zip(keys, models, strict=True):
        assert served.model is not None
        firsts.setdefault(key, served.model)
    encodings = await asyncio.gather(
        *(
            loop.run_in_executor(
                service.tokenize_pool, encode_items, m.tokenizer, m.manifest.template, items
            )
            for m in firsts.values()
        )
    )
    encoded = dict(zip(firsts, encodings, strict=True))
    outcomes = await asyncio.gather(
        *(_infer(service, s, encoded[k]) for s, k in zip(models, keys, strict=True)),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [
        Scored(scores, [len(e.ids) for e in encoded[k]], [e.truncated for e in encoded[k]])
        for scores, k in zip(outcomes, keys, strict=True)
    ]


def tokenization_key(served: ServedModel) -> tuple[str, str]:
    """Two models with equal keys turn the same items into the same token ids."""
    assert served.model is not None
    model = served.model
    return _file_digest(model.folder / TOKENIZER_FILE), model.manifest.template.model_dump_json()


@functools.lru_cache(maxsize=256)
def _file_digest(path: Path) -> str:
    """A version folder never changes once published, so its tokenizer is hashed once."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _infer(service: Service, served: ServedModel, encoded: list) -> np.ndarray:
    """One model's batcher, with its refusals turned into the API's errors."""
    assert served.batcher is not None
    try:
        return await served.batcher.submit(encoded)
    except QueueFull as exc:
        service.metrics.rejected.labels(served.key, "queue_full").inc()
        raise ApiError(
            429, "queue_full", str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from exc
    except InferenceFailed as exc:
        raise ApiError(500, "inference_failed", f"the model failed on this batch: {exc}") from exc


def normalized(served: ServedModel, scores: np.ndarray) -> np.ndarray:
    assert served.model is not None
    return served.model.normalize(scores)
