"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``).

Another front door onto the same service as HTTP: the same registry, batchers, limits, API keys
(metadata ``authorization: Bearer <key>``), metrics and drain, through the data plane in
:mod:`reward_service.serve.open_inference`. It runs on uvicorn's own event loop (``grpc.aio``):
:class:`GrpcFrontDoor` binds its port before HTTP starts, so a taken port stops start-up,
takes calls once the app's lifespan has started the batchers, and stops before they do.

Handlers are registered by hand rather than through generated stubs so that a request protobuf
cannot parse (say, invalid UTF-8 in a string field) is answered INVALID_ARGUMENT with a reason,
where grpcio would answer INTERNAL. Outputs mirror the inputs' form: raw inputs
(``raw_input_contents``, what tritonclient and kserve send) get ``raw_output_contents`` back,
typed inputs (``contents.bytes_contents``) get ``contents.fp32_contents``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from reward_service.serve import open_inference
from reward_service.serve.auth import bearer_token, key_matches
from reward_service.serve.errors import ApiError
from reward_service.serve.grpc import protocol as pb
from reward_service.serve.open_inference import Inference, InputTensor
from reward_service.serve.state import Service

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


HEALTH_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
HEALTH_NOT_SERVING = b"\x08\x02"


def health_service_name(request: bytes) -> str:
    """``HealthCheckRequest.service`` (field 1, a string) from its wire bytes; "" if absent."""
    if not request or request[0] != 0x0A:
        return ""
    length, shift, index = 0, 0, 1
    while index < len(request) and index < 6:
        byte = request[index]
        length |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            return request[index : index + length].decode("utf-8", "replace")
        shift += 7
    return ""


class GrpcBindError(RuntimeError):
    """The gRPC port could not be bound (in use, or not an address of this host)."""


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request protobuf that did not parse, so the handler can say so."""

    reason: str


def _parser(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Undecodable(f"the request is not a valid {message.__name__}: {exc}")

    return parse


def _parameter(parameters: Any, key: str) -> bool:
    if key not in parameters:
        return False
    value = parameters[key]
    if value.WhichOneof("parameter_choice") != "bool_param":
        raise open_inference.invalid(f"parameter {key!r} must be a boolean")
    return value.bool_param


def inference_of(request: Any) -> tuple[Inference, bool]:
    """The request as the data plane takes it, and whether its inputs came raw."""
    open_inference.check_input_count(len(request.inputs))
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise open_inference.invalid(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; one per input"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        name = open_inference.check_name(tensor.name, "an input name")
        if raw and tensor.HasField("contents"):
            raise open_inference.invalid(
                f"input {open_inference.excerpt(name)}: contents and raw_input_contents are "
                "exclusive"
            )
        source = {"raw": raw[index]} if raw else {"data": tensor.contents.bytes_contents}
        tensors.append(InputTensor(name, tensor.datatype, tensor.shape, **source))
    if len(request.outputs) > 1:
        raise open_inference.invalid(f"{len(request.outputs)} outputs requested; at most one")
    inference = Inference(
        tensors,
        request_id=open_inference.check_request_id(request.id),
        normalize=_parameter(request.parameters, "normalize"),
        outputs=[open_inference.check_name(o.name, "an output name") for o in request.outputs],
    )
    return inference, bool(raw)


class InferenceServicer:
    """The six RPCs of the protocol; health RPCs are open, the others need a key when keys
    are configured, as on HTTP."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def server_live(self, _: Any) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, _: Any) -> Message:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def model_ready(self, request: Any) -> Message:
        ready = open_inference.is_model_ready(self.service, request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, _: Any) -> Message:
        return pb.ServerMetadataResponse(**open_inference.server_metadata())

    async def model_metadata(self, request: Any) -> Message:
        meta = open_inference.model_metadata(self.service, request.name, request.version)
        tensor = pb.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def model_infer(self, request: Any) -> Message:
        if self.service.draining:
            raise ApiError(503, "draining", "the service is shutting down; retry")
        served = open_inference.resolve(self.service, request.model_name, request.model_version)
        assert served.model is not None
        inference, raw = inference_of(request)
        scores = await open_inference.infer(self.service, served, inference)
        output = pb.InferOutputTensor(
            name=served.model.manifest.output, datatype="FP32", shape=[len(scores)]
        )
        response = pb.ModelInferResponse(
            model_name=served.name,
            model_version=str(served.version),
            id=inference.request_id,
            outputs=[output],
        )
        if raw:
            response.raw_output_contents.append(open_inference.fp32_bytes(scores))
        else:
            response.outputs[0].contents.fp32_contents.extend(scores.tolist())
        return response


class GrpcFrontDoor:
    """The gRPC server's lifetime within the HTTP server's: bind, start, stop."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.servicer = InferenceServicer(service)
        self.server: grpc.aio.Server | None = None
        settings = service.settings
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.address = f"{host}:{settings.grpc_port}"

    def bind(self) -> None:
        """Create the server on the running event loop and bind its port (not serving yet)."""
        settings = self.service.settings
        server = grpc.aio.server(
            options=[
                # grpcio sets SO_REUSEPORT by default: a second server on the same port would
                # silently share its calls instead of failing to start.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", settings.max_request_bytes),
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(), self._health_handler()))
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GrpcBindError(f"cannot bind the gRPC port {self.address}: {exc}") from None
        self.server = server

    async def start(self) -> None:
        assert self.server is not None
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) on %s", self.address)

    async def stop(self, grace: float) -> None:
        if self.server is not None:
            await self.server.stop(grace)

    def _handlers(self) -> grpc.GenericRpcHandler:
        s = self.servicer
        methods = {
            "ServerLive": (s.server_live, pb.ServerLiveRequest, False),
            "ServerReady": (s.server_ready, pb.ServerReadyRequest, False),
            "ModelReady": (s.model_ready, pb.ModelReadyRequest, True),
            "ServerMetadata": (s.server_metadata, pb.ServerMetadataRequest, True),
            "ModelMetadata": (s.model_metadata, pb.ModelMetadataRequest, True),
            "ModelInfer": (s.model_infer, pb.ModelInferRequest, True),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._call(name, method, keyed),
                request_deserializer=_parser(message),
                response_serializer=lambda response: response.SerializeToString(),
            )
            for name, (method, message, keyed) in methods.items()
        }
        return grpc.method_handlers_generic_handler(pb.SERVICE_NAME, handlers)

    def _health_handler(self) -> grpc.GenericRpcHandler:
        """gRPC's standard health check (``grpc.health.v1.Health/Check``), so Kubernetes' gRPC
        probes and grpc_health_probe reach this door. As the health protocol intends, the
        server as a whole (service ``""``) is SERVING while the process answers, a liveness
        check that a drain does not fail; the inference service is SERVING only when ready.
        Both messages are a single field, read and written by hand."""
        ready_services = {pb.SERVICE_NAME}

        async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            service = health_service_name(request)
            if service == "":
                return HEALTH_SERVING
            if service not in ready_services:
                await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            return HEALTH_SERVING if self.service.ready else HEALTH_NOT_SERVING

        method = grpc.unary_unary_rpc_method_handler(check)  # bytes in, bytes out
        return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": method})

    def _call(
        self, name: str, method: Callable[[Any], Awaitable[Message]], keyed: bool
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]:
        """One RPC wrapped like an HTTP route: counted in flight (the drain waits for it),
        timed and counted in the metrics, authorized, its errors turned into status codes."""
        service = self.service
        route = f"/{pb.SERVICE_NAME}/{name}"

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Message:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            service.in_flight += 1
            try:
                if keyed:
                    self._authorize(context)
                if isinstance(request, Undecodable):
                    raise ApiError(400, "bad_request", request.reason)
                return await method(request)
            except ApiError as exc:
                code = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
                message = exc.message
                retry_after = (exc.headers or {}).get("Retry-After")
                if retry_after is not None:
                    message += f"; retry after {retry_after} s"
                    context.set_trailing_metadata(
                        (
                            ("retry-after", retry_after),
                            ("grpc-retry-pushback-ms", str(int(retry_after) * 1000)),
                        )
                    )
                await context.abort(code, message)
            except Exception as exc:
                log.exception("unhandled error in %s", route)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, f"internal error: {type(exc).__name__}")
            finally:
                service.in_flight -= 1
                service.metrics.requests.labels(route, code.name).inc()
                service.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

        return call

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        keys = self.service.api_keys
        if not keys:
            return
        metadata = dict(context.invocation_metadata() or ())
        token = bearer_token(metadata.get("authorization"))
        if token is None or not key_matches(token, keys):
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key; send metadata 'authorization: Bearer <key>'",
            )
