"""The path every scoring route shares: validate → tokenize → batch → infer → scores.

Routes translate their wire format into :data:`~reward_service.template.Item` lists and back;
everything in between lives here so the limits, the tokenization and the batching behave the
same whichever protocol a client speaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

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
    try:
        scores = await served.batcher.submit(encoded)
    except QueueFull as exc:
        service.metrics.rejected.labels(served.key, "queue_full").inc()
        raise ApiError(
            429, "queue_full", str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from exc
    except InferenceFailed as exc:
        raise ApiError(500, "inference_failed", f"the model failed on this batch: {exc}") from exc
    return Scored(scores, [len(e.ids) for e in encoded], [e.truncated for e in encoded])


def normalized(served: ServedModel, scores: np.ndarray) -> np.ndarray:
    assert served.model is not None
    return served.model.normalize(scores)
