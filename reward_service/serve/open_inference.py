"""The Open Inference Protocol (KServe v2) data plane that both of its front doors share.

The REST routes (``routers/kserve.py`` with ``rest_tensors.py``) and the gRPC service
(``grpc/server.py``) only translate their wire formats into an :class:`Inference` and back.
Everything between lives here: bounding each size that drives work *before* the work is done
(tensor count, dimensions, element count, every length prefix of a binary BYTES buffer),
decoding BYTES elements into text, mapping one text tensor or a ``prompt``/``response`` pair of
tensors onto items, and scoring them through :mod:`reward_service.serve.scoring`, so limits,
batching and metrics are exactly the HTTP path's own.

Errors are :class:`~reward_service.serve.errors.ApiError` with an HTTP status; each front door
renders them in its protocol's shape. A message quotes at most a short, escaped excerpt of what
the client sent, never a whole field.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from reward_service.serve import scoring
from reward_service.serve.errors import ApiError
from reward_service.serve.registry import ServedModel
from reward_service.serve.state import Service
from reward_service.template import Item

MAX_DIMS = 8  # a text tensor needs two; the bound stops shape arithmetic on absurd shapes
MAX_NAME_CHARS = 256  # tensor, model and version names
MAX_ID_CHARS = 1024  # the request id, echoed in the response
INT64_MAX = 2**63 - 1  # the protocol's shapes are int64
PAIR = ("prompt", "response")
EXTENSIONS = ["binary_tensor_data"]
LENGTH_PREFIX = struct.Struct("<I")  # each binary BYTES element: its length, little-endian


@dataclass(frozen=True)
class InputTensor:
    """One input as the wire gave it; exactly one of ``data`` and ``raw`` is set.

    ``data`` holds JSON's (possibly nested) list of strings or gRPC's ``bytes_contents``;
    ``raw`` holds the binary form: each element a 4-byte little-endian length, then its bytes.
    """

    name: str
    datatype: str
    shape: Sequence[Any]
    data: Sequence[Any] | None = None
    raw: bytes | memoryview | None = None


@dataclass(frozen=True)
class Inference:
    inputs: Sequence[InputTensor]
    request_id: str = ""
    normalize: bool = False
    outputs: Sequence[str] = field(default_factory=list)  # requested output names; empty: all


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def excerpt(value: str, limit: int = 40) -> str:
    """``repr`` of at most ``limit`` characters: safe in any error message, since it is short
    and escapes what UTF-8 cannot carry (a lone surrogate comes out as ``\\ud800``)."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def check_name(value: str, what: str) -> str:
    if len(value) > MAX_NAME_CHARS:
        raise invalid(f"{what} is {len(value)} characters long; at most {MAX_NAME_CHARS}")
    return value


def check_request_id(value: str) -> str:
    if len(value) > MAX_ID_CHARS:
        raise invalid(f"the request id is {len(value)} characters long; at most {MAX_ID_CHARS}")
    if not value.isascii():
        utf8_text(value, "the request id")
    return value


def utf8_text(value: str, where: str) -> str:
    """A text the tokenizer and every JSON encoder can take: no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400, "invalid_text", f"{where} is not valid Unicode text ({exc.reason})"
        ) from None
    return value


def element_count(tensor: InputTensor, max_items: int) -> int:
    """Elements the shape declares; the number of dimensions, each dimension's type and range
    and the product are all checked before anything else is read."""
    where = f"input {excerpt(tensor.name)}"
    shape = tensor.shape
    if len(shape) > MAX_DIMS:
        raise invalid(f"{where}: its shape has {len(shape)} dimensions; at most {MAX_DIMS}")
    count = 1
    for dim in shape:
        if type(dim) is not int or not 0 <= dim <= INT64_MAX:
            raise invalid(f"{where}: shape dimensions must be integers from 0 to 2^63-1")
        count *= dim  # at most 8 factors below 2^63: cheap whatever the values
    if count > max_items:
        raise ApiError(
            413,
            "too_many_items",
            f"{where}: its shape holds more than {max_items} elements; "
            f"at most {max_items} items per request",
        )
    return count


def split_bytes(raw: bytes | memoryview, count: int, where: str) -> list[bytes]:
    """The ``count`` length-prefixed elements of a binary BYTES buffer; each length is checked
    against what is left of the buffer before anything is sliced."""
    data = bytes(raw)  # one copy of the tensor's bytes; each slice below is then one more
    size, offset, elements = len(data), 0, []
    unpack = LENGTH_PREFIX.unpack_from
    for index in range(count):
        if size - offset < 4:
            raise invalid(f"{where}: the binary data ends inside the length of element {index}")
        (length,) = unpack(data, offset)
        offset += 4
        if length > size - offset:
            raise invalid(
                f"{where}: element {index} claims {length} bytes but {size - offset} remain"
            )
        elements.append(data[offset : offset + length])
        offset += length
    if offset != size:
        raise invalid(f"{where}: {size - offset} bytes are left after its {count} elements")
    return elements


def flat_elements(data: Sequence[Any], count: int, where: str) -> list[Any]:
    """Row-major flattening of nested lists, stopped as soon as it passes ``count``."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
            if len(flat) > count:
                raise invalid(f"{where}: more values than its shape holds ({count})")
        else:
            stack.pop()
    if len(flat) != count:
        raise invalid(f"{where}: {len(flat)} values where its shape holds {count}")
    return flat


def as_text(value: Any, where: str, index: int) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            message = f"{where}, element {index}, is not valid UTF-8 text"
            raise ApiError(400, "invalid_text", message) from None
    if isinstance(value, str):
        return value if value.isascii() else utf8_text(value, f"{where}, element {index},")
    raise invalid(f"{where}, element {index}, must be a string, not {type(value).__name__}")


def texts_of(tensor: InputTensor, max_items: int) -> list[str]:
    where = f"input {excerpt(tensor.name)}"
    if tensor.datatype != "BYTES":
        raise invalid(f"{where} must be BYTES (text), not {excerpt(tensor.datatype)}")
    count = element_count(tensor, max_items)
    if tensor.raw is not None:
        values: list[Any] = split_bytes(tensor.raw, count, where)
    elif tensor.data is not None:
        values = flat_elements(tensor.data, count, where)
    else:
        raise invalid(f"{where} carries no data")
    return [as_text(value, where, i) for i, value in enumerate(values)]


def items_of(inputs: Sequence[InputTensor], max_items: int) -> tuple[list[Item], list[str]]:
    """Items to score and every text in them (for the length limit)."""
    if len(inputs) == 2 and {t.name for t in inputs} == set(PAIR):
        by_name = {t.name: t for t in inputs}
        prompts, responses = (texts_of(by_name[name], max_items) for name in PAIR)
        if len(prompts) != len(responses):
            raise invalid("the prompt and response tensors hold different numbers of texts")
        return list(zip(prompts, responses, strict=True)), prompts + responses
    if len(inputs) != 1:
        raise invalid(
            f"{len(inputs)} input tensors; send one BYTES tensor of texts, "
            "or two named prompt and response"
        )
    texts = texts_of(inputs[0], max_items)
    return list(texts), texts


def check_input_count(count: int) -> None:
    """Called by the front doors before they convert a single tensor."""
    if count > len(PAIR):
        raise invalid(
            f"{count} input tensors; send one BYTES tensor of texts, "
            "or two named prompt and response"
        )


def check_outputs(requested: Sequence[str], output: str) -> None:
    if len(requested) > 1:
        raise invalid(f"{len(requested)} outputs requested; this model has one, {output!r}")
    if requested and requested[0] != output:
        raise invalid(f"unknown output {excerpt(requested[0])}; this model has one, {output!r}")


def resolve(service: Service, name: str, model_version: str = "") -> ServedModel:
    """The served model for a v2 name and optional version ("" is the newest)."""
    check_name(name, "the model name")
    check_name(model_version, "the model version")
    return service.registry.resolve(f"{name}@{model_version}" if model_version else name)


def is_model_ready(service: Service, name: str, model_version: str = "") -> bool:
    check_name(name, "the model name")
    check_name(model_version, "the model version")
    served = service.registry.find(f"{name}@{model_version}" if model_version else name)
    return served.available and not service.draining


async def infer(service: Service, served: ServedModel, request: Inference) -> np.ndarray:
    """FP32 scores, one per item, in input order."""
    assert served.model is not None
    max_items = service.settings.max_items
    check_outputs(request.outputs, served.model.manifest.output)
    items, texts = items_of(request.inputs, max_items)
    scoring.check_limits(service, len(items), texts)
    scores = (await scoring.score(service, served, items)).scores
    if request.normalize:
        scores = scoring.normalized(served, scores)
    return np.asarray(scores, dtype=np.float32)


def fp32_bytes(scores: np.ndarray) -> bytes:
    """The protocol's raw FP32 form: little-endian, row-major, no padding."""
    return np.ascontiguousarray(scores, dtype="<f4").tobytes()


def server_metadata() -> dict[str, Any]:
    try:
        release = version("rlhf-reward-service")
    except PackageNotFoundError:
        release = "unknown"
    return {"name": "reward-service", "version": release, "extensions": EXTENSIONS}


def model_metadata(service: Service, name: str, model_version: str = "") -> dict[str, Any]:
    served = resolve(service, name, model_version)
    assert served.model is not None
    versions = sorted(
        s.version for s in service.registry.models.values() if s.name == served.name and s.available
    )
    return {
        "name": served.name,
        "versions": [str(v) for v in versions],
        "platform": f"{served.model.backend.name}_onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": served.model.manifest.output, "datatype": "FP32", "shape": [-1]}],
    }
