"""The path every scoring route shares: validate → admit → tokenize → batch → infer → scores.

Routes translate their wire format into :data:`~reward_service.template.Item` lists and back;
everything in between lives here so the limits, the tokenization and the batching behave the
same whichever protocol a client speaks. The order matters for an overloaded service: cheap
checks first, then admission (which may refuse with 429), and only an admitted request costs
tokenization. A client that disconnects while it waits has its queued items dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from starlette.types import Receive

from reward_service.serve.batcher import Aborted, ItemsFailed, QueueFull, Ticket
from reward_service.serve.errors import ApiError
from reward_service.serve.registry import ServedModel
from reward_service.serve.state import Service
from reward_service.template import EncodedItem, Item, encode_items

T = TypeVar("T")
CHARS_PER_TOKEN_GUESS = 4  # English text, for admission before the tokenizer has run
NAMED_ITEMS = 8


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # (N,) float32 raw
    tokens: list[int]
    truncated: list[bool]


class ClientGone(Exception):
    """The client closed its connection before its scores were ready."""


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


def estimate_tokens(items: Sequence[Item], max_length: int) -> int:
    """Tokens the items will probably take, without tokenizing them."""
    total = 0
    for item in items:
        chars = len(item) if isinstance(item, str) else len(item[0]) + len(item[1])
        total += min(max_length, chars // CHARS_PER_TOKEN_GUESS + 3)
    return total


async def score(
    service: Service,
    served: ServedModel,
    items: Sequence[Item],
    receive: Receive | None = None,
    name_item: Callable[[int], str] = lambda i: f"item {i}",
) -> Scored:
    """Scores of ``items`` in order, or the ApiError that tells the client why not.

    ``receive`` is the request's ASGI receive: given, a client that disconnects while it waits
    has its queued items dropped.
    """
    assert served.model is not None and served.batcher is not None
    try:
        ticket = served.batcher.admit(
            len(items), estimate_tokens(items, served.model.manifest.template.max_length)
        )
    except QueueFull as exc:
        raise _refused(service, served, exc) from exc
    except Aborted as exc:
        raise _stopped(exc) from exc
    work = _tokenize_and_run(service, served, items, ticket)
    encoded, scores = await _finish(work, receive, name_item)
    return Scored(scores, [len(e.ids) for e in encoded], [e.truncated for e in encoded])


async def score_models(
    service: Service,
    models: Sequence[ServedModel],
    items: Sequence[Item],
    receive: Receive | None = None,
    name_item: Callable[[int], str] = lambda i: f"item {i}",
) -> list[Scored]:
    """The same items through several models, e.g. a reward model and a cost model.

    Every model admits the request first (one 429 refuses the whole request before any work);
    the items are then tokenized once per distinct tokenizer and template (models fine-tuned
    from one backbone share them) and handed to every model's batcher at once, so each model
    still batches them with other requests' items and the models run side by side.
    """
    tickets: list[tuple[ServedModel, Ticket]] = []
    try:
        for served in models:
            assert served.model is not None and served.batcher is not None
            estimate = estimate_tokens(items, served.model.manifest.template.max_length)
            tickets.append((served, served.batcher.admit(len(items), estimate)))
    except QueueFull as exc:
        for served, ticket in tickets:
            served.batcher.release(ticket)
        raise _refused(service, models[len(tickets)], exc) from exc
    except Aborted as exc:
        for served, ticket in tickets:
            served.batcher.release(ticket)
        raise _stopped(exc) from exc
    work = _tokenize_once_and_run(service, tickets, items)
    return await _finish(work, receive, name_item)


def tokenization_key(served: ServedModel) -> tuple[str, str]:
    """Two models with equal keys turn the same items into the same token ids.

    Manifests from before the tokenizer's sha256 was recorded are keyed by their own folder:
    correct, only not shared.
    """
    assert served.model is not None
    manifest = served.model.manifest
    return manifest.tokenizer_sha256 or str(
        served.model.folder
    ), manifest.template.model_dump_json()


async def _tokenize_once_and_run(
    service: Service, tickets: list[tuple[ServedModel, Ticket]], items: Sequence[Item]
) -> list[Scored]:
    loop = asyncio.get_running_loop()
    keys = [tokenization_key(served) for served, _ in tickets]
    firsts: dict[tuple[str, str], ServedModel] = {}
    for key, (served, _) in zip(keys, tickets, strict=True):
        firsts.setdefault(key, served)
    try:
        encodings = await asyncio.gather(
            *(
                loop.run_in_executor(
                    service.tokenize_pool,
                    encode_items,
                    s.model.tokenizer,
                    s.model.manifest.template,
                    items,
                )
                for s in firsts.values()
                if s.model is not None
            )
        )
    finally:
        for served, ticket in tickets:
            assert served.batcher is not None
            served.batcher.release(ticket)
    encoded = dict(zip(firsts, encodings, strict=True))
    runs = [
        served.batcher.submit(encoded[key])
        for (served, _), key in zip(tickets, keys, strict=True)
        if served.batcher is not None
    ]
    outcomes = await asyncio.gather(*runs, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [
        Scored(scores, [len(e.ids) for e in encoded[k]], [e.truncated for e in encoded[k]])
        for scores, k in zip(outcomes, keys, strict=True)
    ]


async def _tokenize_and_run(
    service: Service, served: ServedModel, items: Sequence[Item], ticket: Ticket
) -> tuple[list[EncodedItem], np.ndarray]:
    assert served.model is not None and served.batcher is not None
    model = served.model
    loop = asyncio.get_running_loop()
    try:
        # tokenizers' batch encode releases the GIL: other requests are parsed meanwhile.
        encoded = await loop.run_in_executor(
            service.tokenize_pool, encode_items, model.tokenizer, model.manifest.template, items
        )
    finally:
        served.batcher.release(ticket)
    return encoded, await served.batcher.submit(encoded)


async def _finish(
    work: Coroutine[Any, Any, T], receive: Receive | None, name_item: Callable[[int], str]
) -> T:
    """Await queued scoring work, watching for the client leaving; its failures become the
    API errors every scoring route answers with."""
    try:
        return await (work if receive is None else unless_client_leaves(receive, work))
    except ClientGone as exc:
        raise ApiError(499, "client_gone", "the client closed the connection") from exc
    except ItemsFailed as exc:
        raise _failure(exc, name_item) from exc
    except Aborted as exc:
        raise _stopped(exc) from exc


async def unless_client_leaves(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` until it finishes or the client disconnects, whichever comes first.

    The request body has been read by now, so the next ASGI message can only say that the
    connection closed; cancelling ``work`` then cancels the batcher future, and the batcher
    skips the items still queued.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _refused(service: Service, served: ServedModel, exc: QueueFull) -> ApiError:
    service.metrics.rejected.labels(served.key, "queue_full").inc()
    return ApiError(429, "queue_full", str(exc), headers={"Retry-After": str(exc.retry_after)})


def _stopped(exc: Aborted) -> ApiError:
    return ApiError(
        503, "draining", f"the service stopped: {exc}; retry", headers={"Retry-After": "1"}
    )


def _failure(exc: ItemsFailed, name_item: Callable[[int], str]) -> ApiError:
    named = ", ".join(name_item(i) for i in exc.items[:NAMED_ITEMS])
    if len(exc.items) > NAMED_ITEMS:
        named += f" and {len(exc.items) - NAMED_ITEMS} more"
    if exc.kind == "non_finite":
        return ApiError(
            422,
            "non_finite_score",
            f"the model gave no finite score ({exc.detail}) for {named}; the request was not "
            "scored",
        )
    return ApiError(
        422,
        "inference_failed",
        f"the model failed on {named} ({exc.detail}); the request was not scored",
    )


def normalized(served: ServedModel, scores: np.ndarray) -> np.ndarray:
    assert served.model is not None
    return served.model.normalize(scores)
