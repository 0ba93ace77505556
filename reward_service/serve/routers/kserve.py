"""KServe v2 / Open Inference Protocol over REST, so KServe and Triton clients plug in.

A model takes one BYTES tensor of texts (any name, shape ``[N]`` or ``[N, 1]``), or two BYTES
tensors named ``prompt`` and ``response`` of equal length, and returns one FP32 tensor named
after the manifest's output, shaped ``[N]``. Parameter ``normalize: true`` (request level)
normalizes as ``/v1/score`` does. Bodies may use the binary tensor extension
(:mod:`~reward_service.serve.rest_tensors`); the work itself is
:mod:`~reward_service.serve.open_inference`'s, shared with the gRPC service. Errors are the
protocol's ``{"error": "<message>"}`` (see :mod:`~reward_service.serve.errors`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from reward_service.serve import open_inference, rest_tensors
from reward_service.serve.auth import require_key
from reward_service.serve.errors import ApiError
from reward_service.serve.schemas import (
    InferRequest,
    InferResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    Readiness,
    ServerMetadata,
)
from reward_service.serve.state import Service, ServiceDep, require_serving

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
keyed = [Depends(require_key)]
scoring_route = dict(
    dependencies=[*keyed, Depends(require_serving)],
    response_model=None,
    responses={200: {"model": InferResponse, "description": "Scores, as JSON or binary."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": InferRequest.model_json_schema()},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "The binary tensor extension: the JSON request (its length "
                    "in Inference-Header-Content-Length), then the inputs' raw bytes.",
                },
            },
        }
    },
)


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
    return ServerMetadata(**open_inference.server_metadata())


@router.get("/models/{name}", dependencies=keyed)
async def model_metadata(name: str, service: ServiceDep) -> ModelMetadata:
    return ModelMetadata(**open_inference.model_metadata(service, name))


@router.get("/models/{name}/versions/{model_version}", dependencies=keyed)
async def model_version_metadata(
    name: str, model_version: str, service: ServiceDep
) -> ModelMetadata:
    return ModelMetadata(**open_inference.model_metadata(service, name, model_version))


@router.get("/models/{name}/ready", dependencies=keyed)
async def model_ready(name: str, service: ServiceDep) -> ModelReadiness:
    return ModelReadiness(name=name, ready=open_inference.is_model_ready(service, name))


@router.get("/models/{name}/versions/{model_version}/ready", dependencies=keyed)
async def model_version_ready(name: str, model_version: str, service: ServiceDep) -> ModelReadiness:
    ready = open_inference.is_model_ready(service, name, model_version)
    return ModelReadiness(name=name, ready=ready)


async def _infer(service: Service, request: Request, name: str, model_version: str) -> Response:
    served = open_inference.resolve(service, name, model_version)
    assert served.model is not None
    rest_tensors.check_content_type(request.headers.get("content-type"))
    body = await request.body()
    parsed = rest_tensors.parse_request(body, request.headers.get(rest_tensors.HEADER_LENGTH))
    scores = await open_inference.infer(service, served, parsed.inference)
    return rest_tensors.infer_response(
        served.name,
        str(served.version),
        parsed.inference.request_id,
        served.model.manifest.output,
        scores,
        parsed.binary_output,
    )


@router.post("/models/{name}/infer", **scoring_route)
async def infer(name: str, request: Request, service: ServiceDep) -> Response:
    return await _infer(service, request, name, "")


@router.post("/models/{name}/versions/{model_version}/infer", **scoring_route)
async def infer_version(
    name: str, model_version: str, request: Request, service: ServiceDep
) -> Response:
    return await _infer(service, request, name, model_version)
