"""``POST /get_reward``: OpenRLHF's remote reward-model protocol (``--remote_rm_url``, or
``--reward.remote_url`` from OpenRLHF 0.10.2), so its trainers score against us unchanged.

Its client posts ``{"query": [...], "prompts": [...], "labels": [...]}`` and reads ``rewards``
(newer trainers also ``scores`` and ``extra_logs``). Each query is the rendered prompt and the
response joined. With ``prompts``, each query is split back into (prompt, response) with the
chat markup removed (:mod:`reward_service.serve.chat`) and scored as the reward model was
trained; a query that does not contain its prompt and carries no known markup, or a request
without ``prompts``, is scored as one text (its end, where the response is, survives
truncation). The markup is recognised by default; ``?chat_markup=chatml|llama3|none`` in the
URL, or the manifest's ``template.chat_markup``, names it instead.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request

from reward_service.serve import scoring
from reward_service.serve.chat import Markup, split_query
from reward_service.serve.schemas import GetRewardRequest, GetRewardResponse
from reward_service.serve.state import ServiceDep, require_serving
from reward_service.template import Item

log = logging.getLogger(__name__)
router = APIRouter(tags=["openrlhf"])


@router.post("/get_reward", dependencies=[Depends(require_serving)])
async def get_reward(
    body: GetRewardRequest,
    service: ServiceDep,
    request: Request,
    chat_markup: Markup | None = None,
) -> GetRewardResponse:
    scoring.check_limits(service, len(body.query), [*body.query, *(body.prompts or [])])
    served = service.registry.resolve(body.model)
    assert served.model is not None
    markup = chat_markup or served.model.manifest.template.chat_markup
    items = queries_as_items(body.query, body.prompts, markup)
    result = await scoring.score(
        service, served, items, request.receive, name_item=lambda i: f"query[{i}]"
    )
    scores = result.scores
    if service.settings.get_reward_normalize:
        scores = scoring.normalized(served, scores)
    values = scores.tolist()
    return GetRewardResponse(rewards=values, scores=values, extra_logs={})


def queries_as_items(queries: list[str], prompts: list[str] | None, markup: Markup) -> list[Item]:
    if prompts is None:
        return list(queries)
    items: list[Item] = []
    whole = 0
    for query, prompt in zip(queries, prompts, strict=True):
        pair = split_query(query, prompt, markup)
        items.append(query if pair is None else pair)
        whole += pair is None
    if whole:
        log.warning(
            "/get_reward: %d of %d queries hold neither their prompt nor known chat markup; "
            "scored as whole texts",
            whole,
            len(queries),
        )
    return items
