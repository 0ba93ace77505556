"""The Open Inference Protocol's REST body, in JSON or with the binary tensor extension.

With ``Inference-Header-Content-Length: N`` the first N bytes of the body are the JSON request
and the rest are the inputs' raw bytes, in input order, each input saying how many are its own
with ``"parameters": {"binary_data_size": ...}`` (tritonclient and kserve send numpy inputs so
by default). Outputs come back the same way when asked, per output (``"binary_data": true``) or
for all (request parameter ``"binary_data_output": true``), with the response header giving the
JSON part's length.

Only the body-size guard stands before this parser, so everything is checked here in the order
that keeps the work bounded: the header length against the body, the number of inputs before
any input is read, each ``binary_data_size`` against the bytes left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Response

from reward_service.serve import open_inference
from reward_service.serve.errors import ApiError
from reward_service.serve.open_inference import (
    Inference,
    InputTensor,
    check_name,
    check_request_id,
    excerpt,
    invalid,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
# A cross-site HTML form can post these without a CORS preflight; a tensor request never uses them.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


@dataclass(frozen=True)
class RestInference:
    inference: Inference
    binary_output: bool


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in FORM_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the request as application/json, or as application/octet-stream with "
            f"an {HEADER_LENGTH} header",
        )


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part that follows it."""
    if header_length is None:
        return body, memoryview(b"")
    digits = header_length.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 12) or int(digits) > len(body):
        raise bad_request(
            f"{HEADER_LENGTH} must be a byte count within the body's {len(body)} bytes"
        )
    length = int(digits)
    return body[:length], memoryview(body)[length:]


def parse_json(header: bytes) -> dict[str, Any]:
    try:
        document = json.loads(header)
    except RecursionError:
        raise bad_request("the JSON is nested too deeply") from None
    except ValueError as exc:  # also invalid UTF-8 and integers of thousands of digits
        raise bad_request(f"the body is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise invalid("the body must be a JSON object with an 'inputs' list")
    return document


def _field(obj: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise invalid(f"{where}: '{key}' must be a {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES = {str: "string", list: "list", dict: "JSON object", bool: "boolean"}


def _input(obj: Any, index: int, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    """One input tensor, and the offset in the binary part after its bytes."""
    where = f"input {index}"
    if not isinstance(obj, dict):
        raise invalid(f"{where} must be a JSON object")
    name = check_name(_field(obj, "name", str, where, ""), "an input name")
    datatype = _field(obj, "datatype", str, where, "")
    shape = _field(obj, "shape", list, where)
    if shape is None:
        raise invalid(f"{where}: 'shape' is required")
    parameters = _field(obj, "parameters", dict, where) or {}
    size = parameters.get("binary_data_size")
    if size is None:
        data = _field(obj, "data", list, where)
        if data is None:
            raise invalid(f"input {excerpt(name)}: 'data' or binary_data_size is required")
        return InputTensor(name, datatype, shape, data=data), offset
    if "data" in obj:
        raise invalid(f"input {excerpt(name)}: 'data' and binary_data_size are exclusive")
    if type(size) is not int or not 0 <= size <= len(binary) - offset:
        raise invalid(
            f"input {excerpt(name)}: binary_data_size must count bytes within the "
            f"{len(binary) - offset} left after the JSON header"
        )
    return InputTensor(name, datatype, shape, raw=binary[offset : offset + size]), offset + size


def _binary_flag(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"{where}: '{key}' must be a boolean")
    return value


def parse_request(body: bytes, header_length: str | None) -> RestInference:
    header, binary = split_body(body, header_length)
    document = parse_json(header)
    inputs = _field(document, "inputs", list, "the request")
    if inputs is None:
        raise invalid("the request needs an 'inputs' list")
    open_inference.check_input_count(len(inputs))
    tensors, offset = [], 0
    for index, obj in enumerate(inputs):
        tensor, offset = _input(obj, index, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise invalid(f"{len(binary) - offset} bytes after the JSON header belong to no input")
    request_id = check_request_id(_field(document, "id", str, "the request", ""))
    parameters = _field(document, "parameters", dict, "the request") or {}
    normalize = _binary_flag(parameters, "normalize", "the request parameters") or False
    binary_output = _binary_flag(parameters, "binary_data_output", "the request parameters")
    requested = _field(document, "outputs", list, "the request") or []
    if len(requested) > 1:
        raise invalid(f"{len(requested)} outputs requested; this model has one")
    names = []
    for index, obj in enumerate(requested):
        where = f"output {index}"
        if not isinstance(obj, dict):
            raise invalid(f"{where} must be a JSON object")
        names.append(check_name(_field(obj, "name", str, where, ""), "an output name"))
        own = _binary_flag(_field(obj, "parameters", dict, where) or {}, "binary_data", where)
        binary_output = own if own is not None else binary_output
    return RestInference(
        Inference(tensors, request_id, normalize, names), binary_output=bool(binary_output)
    )


def infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    output: str,
    scores: np.ndarray,
    binary_output: bool,
) -> Response:
    tensor: dict[str, Any] = {"name": output, "datatype": "FP32", "shape": [len(scores)]}
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        document["id"] = request_id
    document["outputs"] = [tensor]
    if not binary_output:
        tensor["data"] = scores.tolist()
        return Response(json.dumps(document).encode(), media_type="application/json")
    raw = open_inference.fp32_bytes(scores)
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(document).encode()
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )
