"""``POST /v1/score`` and ``POST /v1/compare``: the service's own scoring API.

Keys are checked by the request guard before a body is read (``auth.py``)."""

from __future__ import annotations

from itertools import chain

import numpy as np
from fastapi import APIRouter, Depends, Request

from reward_service.serve import scoring
from reward_service.serve.schemas import (
    CompareRequest,
    CompareResponse,
    ModelScores,
    MultiScoreResponse,
    PairInput,
    ScoreRequest,
    ScoreResponse,
)
from reward_service.serve.state import ServiceDep, require_serving
from reward_service.template import Item

router = APIRouter(prefix="/v1", tags=["score"])


def _item(value: str | PairInput) -> Item:
    return value if isinstance(value, str) else (value.prompt, value.response)


def _texts(value: str | PairInput) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else (value.prompt, value.response)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) computed without overflow for large |x|."""
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), 1 - 1 / (1 + np.exp(-np.abs(x))))


@router.post("/score", dependencies=[Depends(require_serving)])
async def score(
    body: ScoreRequest, service: ServiceDep, request: Request
) -> ScoreResponse | MultiScoreResponse:
    """Score items in input order; raw scores unless ``normalize`` is set."""
    scoring.check_limits(service, len(body.inputs), chain.from_iterable(map(_texts, body.inputs)))
    if body.models is not None:
        return await _score_models(body, service, request)
    served = service.registry.resolve(body.model)
    items = [_item(v) for v in body.inputs]
    result = await scoring.score(
        service, served, items, request.receive, name_item=lambda i: f"inputs[{i}]"
    )
    scores = scoring.normalized(served, result.scores) if body.normalize else result.scores
    return ScoreResponse(
        model=served.name,
        version=served.version,
        scores=scores.tolist(),
        tokens=result.tokens,
        truncated=result.truncated,
        normalized=body.normalize,
    )


async def _score_models(
    body: ScoreRequest, service: ServiceDep, request: Request
) -> MultiScoreResponse:
    assert body.models is not None
    models = [service.registry.resolve(name) for name in body.models]
    flags = body.normalize if isinstance(body.normalize, list) else [body.normalize] * len(models)
    results = await scoring.score_models(
        service,
        models,
        [_item(v) for v in body.inputs],
        request.receive,
        name_item=lambda i: f"inputs[{i}]",
    )
    return MultiScoreResponse(
        results=[
            ModelScores(
                model=served.name,
                version=served.version,
                scores=(scoring.normalized(served, r.scores) if norm else r.scores).tolist(),
                tokens=r.tokens,
                truncated=r.truncated,
                normalized=norm,
            )
            for served, r, norm in zip(models, results, flags, strict=True)
        ]
    )


@router.post("/compare", dependencies=[Depends(require_serving)])
async def compare(body: CompareRequest, service: ServiceDep, request: Request) -> CompareResponse:
    """Margins and P(chosen ≻ rejected) = σ(r_chosen − r_rejected) for each pair."""
    pairs = body.pairs
    texts = chain.from_iterable((p.prompt, p.chosen, p.rejected) for p in pairs)
    scoring.check_limits(service, 2 * len(pairs), texts)
    served = service.registry.resolve(body.model)
    items: list[Item] = [(p.prompt, p.chosen) for p in pairs] + [
        (p.prompt, p.rejected) for p in pairs
    ]
    n = len(pairs)

    def name_item(i: int) -> str:
        return f"pairs[{i}].chosen" if i < n else f"pairs[{i - n}].rejected"

    result = await scoring.score(service, served, items, request.receive, name_item=name_item)
    chosen = result.scores[:n].astype(np.float64)
    rejected = result.scores[n:].astype(np.float64)
    margins = chosen - rejected
    cut = result.truncated
    return CompareResponse(
        model=served.name,
        version=served.version,
        chosen=chosen.tolist(),
        rejected=rejected.tolist(),
        margins=margins.tolist(),
        probabilities=sigmoid(margins).tolist(),
        truncated=[a or b for a, b in zip(cut[:n], cut[n:], strict=True)],
    )
