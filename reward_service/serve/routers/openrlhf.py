"""``POST /get_reward``: OpenRLHF's remote reward-model protocol, so ``--remote_rm_url`` works.

Its client posts ``{"query": [...], "prompts": [...], "labels": [...]}`` (newer versions add
``metas``) and reads ``rewards``; newer trainers also read ``scores`` and ``extra_logs``. Each
query is the prompt and response already joined with the policy's chat template, so it is scored
as one text (its end, where the response is, survives truncation).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from reward_service.serve import scoring
from reward_service.serve.auth import require_key
from reward_service.serve.schemas import GetRewardRequest, GetRewardResponse
from reward_service.serve.state import ServiceDep, require_serving

router = APIRouter(tags=["openrlhf"], dependencies=[Depends(require_key)])


@router.post("/get_reward", dependencies=[Depends(require_serving)])
async def get_reward(body: GetRewardRequest, service: ServiceDep) -> GetRewardResponse:
    scoring.check_limits(service, len(body.query), body.query)
    served = service.registry.resolve(body.model)
    result = await scoring.score(service, served, body.query)
    scores = result.scores
    if service.settings.get_reward_normalize:
        scores = scoring.normalized(served, scores)
    values = scores.tolist()
    return GetRewardResponse(rewards=values, scores=values, extra_logs={})
