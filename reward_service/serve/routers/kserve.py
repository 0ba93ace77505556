"""KServe v2 / Open Inference Protocol (JSON), so KServe and Triton clients plug in.

A model takes one BYTES tensor of texts (any name, shape ``[N]`` or ``[N, 1]``), or two BYTES
tensors named ``prompt`` and ``response`` of equal length, and returns one FP32 tensor named
after the manifest's output, shaped ``[N]``. Parameter ``normalize: true`` (request level)
normalizes as ``/v1/score`` does. Errors keep the service's one error shape.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Depends

from reward_service.serve import scoring
from reward_service.serve.auth import require_key
from reward_service.serve.errors import ApiError
from reward_service.serve.registry import ServedModel
from reward_service.serve.schemas import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    Readiness,
    ServerMetadata,
    TensorMetadata,
)
from reward_service.serve.state import Service, ServiceDep, require_serving
from reward_service.template import Item

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
keyed = [Depends(require_key)]


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major flattening of the nested-list form the protocol also allows."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def texts_of(tensor: InferInput) -> list[str]:
    if tensor.datatype != "BYTES":
        raise ApiError(
            422, "invalid_request", f"input {tensor.name!r} must be BYTES, not {tensor.datatype}"
        )
    values = _flatten(tensor.data)
    expected = 1
    for dim in tensor.shape:
        expected *= dim
    if any(dim < 0 for dim in tensor.shape) or expected != len(values):
        raise ApiError(
            422,
            "invalid_request",
            f"input {tensor.name!r}: shape {tensor.shape} does not match {len(values)} values",
        )
    if not all(isinstance(v, str) for v in values):
        raise ApiError(
            422, "invalid_request", f"input {tensor.name!r}: every element must be a string"
        )
    return values


def items_of(request: InferRequest) -> tuple[list[Item], list[str]]:
    """Items to score and every text in them (for the length limit)."""
    by_name = {t.name: t for t in request.inputs}
    if len(request.inputs) == 2 and set(by_name) == {"prompt", "response"}:
        prompts, responses = texts_of(by_name["prompt"]), texts_of(by_name["response"])
        if len(prompts) != len(responses):
            raise ApiError(422, "invalid_request", "prompt and response tensors differ in length")
        return list(zip(prompts, responses, strict=True)), prompts + responses
    if len(request.inputs) != 1:
        raise ApiError(
            422,
            "invalid_request",
            "send one BYTES tensor of texts, or two named prompt and response",
        )
    texts = texts_of(request.inputs[0])
    return list(texts), texts


def _version(served: ServedModel) -> str:
    return str(served.version)


def _resolve(service: Service, name: str, model_version: str | None = None) -> ServedModel:
    return service.registry.resolve(f"{name}@{model_version}" if model_version else name)


@router.get("/health/live")
async def live() -> Liveness:
    return Liveness(live=True)


@router.get("/health/ready", responses={503: {"description": "Not ready or draining."}})
async def ready(service: ServiceDep) -> Readiness:
    if not service.ready:
        raise ApiError(503, "not_ready", "draining, or no model is available")
    return Readiness(ready=True)


@router.get("", dependencies=keyed)
async def server_metadata() -> ServerMetadata:
    try:
        release = version("rlhf-reward-service")
    except PackageNotFoundError:
        release = "unknown"
    return ServerMetadata(name="reward-service", version=release, extensions=[])


@router.get("/models/{name}", dependencies=keyed)
async def model_metadata(name: str, service: ServiceDep) -> ModelMetadata:
    served = _resolve(service, name)
    assert served.model is not None
    versions = sorted(
        str(s.version)
        for s in service.registry.models.values()
        if s.name == served.name and s.available
    )
    return ModelMetadata(
        name=served.name,
        versions=versions,
        platform=f"{served.model.backend.name}_onnx",
        inputs=[TensorMetadata(name="text", datatype="BYTES", shape=[-1])],
        outputs=[TensorMetadata(name=served.model.manifest.output, datatype="FP32", shape=[-1])],
    )


@router.get("/models/{name}/ready", dependencies=keyed)
async def model_ready(name: str, service: ServiceDep) -> ModelReadiness:
    served = _resolve(service, name)
    return ModelReadiness(name=served.name, ready=served.available and not service.draining)


async def _infer(service: Service, served: ServedModel, request: InferRequest) -> InferResponse:
    assert served.model is not None
    items, texts = items_of(request)
    scoring.check_limits(service, len(items), texts)
    result = await scoring.score(service, served, items)
    scores = result.scores
    if (request.parameters or {}).get("normalize") is True:
        scores = scoring.normalized(served, scores)
    output = InferOutput(
        name=served.model.manifest.output, shape=[len(items)], data=scores.tolist()
    )
    return InferResponse(
        model_name=served.name, model_version=_version(served), id=request.id, outputs=[output]
    )


@router.post("/models/{name}/infer", dependencies=[*keyed, Depends(require_serving)])
async def infer(name: str, body: InferRequest, service: ServiceDep) -> InferResponse:
    return await _infer(service, _resolve(service, name), body)


@router.post(
    "/models/{name}/versions/{model_version}/infer",
    dependencies=[*keyed, Depends(require_serving)],
)
async def infer_version(
    name: str, model_version: str, body: InferRequest, service: ServiceDep
) -> InferResponse:
    return await _infer(service, _resolve(service, name, model_version), body)
