"""The Open Inference Protocol's pure parts: bounds, BYTES decoding, and the compiled proto."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from reward_service.serve.errors import ApiError
from reward_service.serve.grpc import protocol
from reward_service.serve.open_inference import (
    InputTensor,
    element_count,
    excerpt,
    flat_elements,
    split_bytes,
    texts_of,
)
from reward_service.serve.rest_tensors import parse_request, split_body

ROOT = Path(__file__).resolve().parents[2]


class Untouchable(Sequence):
    """A shape of a million dimensions that fails the test if any dimension is read."""

    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, index):
        raise AssertionError("a dimension was read before the number of dimensions was checked")


def test_shape_bounds_come_before_any_arithmetic():
    with pytest.raises(ApiError, match="1000000 dimensions; at most 8"):
        element_count(InputTensor("t", "BYTES", Untouchable()), max_items=10)
    assert element_count(InputTensor("t", "BYTES", [3, 1]), max_items=10) == 3
    assert element_count(InputTensor("t", "BYTES", [0, 2**62]), max_items=10) == 0
    with pytest.raises(ApiError) as error:
        element_count(InputTensor("t", "BYTES", [2**62] * 8), max_items=10)
    assert error.value.status == 413 and str(2**62) not in error.value.message


def naive_split(raw: bytes) -> list[bytes]:
    out = []
    while raw:
        (n,) = struct.unpack("<I", raw[:4])
        out.append(raw[4 : 4 + n])
        raw = raw[4 + n :]
    return out


def test_split_bytes_matches_a_naive_reader_and_checks_every_prefix():
    rng = np.random.default_rng(0)
    elements = [bytes(rng.integers(0, 256, rng.integers(0, 40), dtype=np.uint8)) for _ in range(50)]
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    assert split_bytes(raw, len(elements), "t") == naive_split(raw) == elements
    for cut in range(1, len(raw)):  # every truncation is refused, never mis-sliced
        with pytest.raises(ApiError):
            split_bytes(raw[:cut], len(elements), "t")
    with pytest.raises(ApiError, match="claims 4294967295 bytes"):
        split_bytes(struct.pack("<I", 2**32 - 1), 1, "t")


def test_flat_elements_row_major_and_bounded():
    assert flat_elements([["a"], ["b", ["c"]], "d"], 4, "t") == ["a", "b", "c", "d"]
    assert flat_elements([], 0, "t") == []
    with pytest.raises(ApiError, match="more values than its shape holds"):
        flat_elements([["x"] * 10**6], 3, "t")
    with pytest.raises(ApiError, match="2 values where its shape holds 3"):
        flat_elements(["a", ["b"]], 3, "t")


def test_texts_decode_strictly():
    assert texts_of(InputTensor("t", "BYTES", [2], data=[b"caf\xc3\xa9", "ok"]), 8) == [
        "café",
        "ok",
    ]
    for bad in (b"\xff", "\ud800"):
        with pytest.raises(ApiError) as error:
            texts_of(InputTensor("t", "BYTES", [1], data=[bad]), 8)
        assert error.value.status == 400
    assert excerpt("\ud800" * 100).startswith("'\\ud800") and len(excerpt("x" * 10**6)) < 50


def test_binary_body_split_and_binary_output_flags():
    header = b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}],'
    header += b' "outputs": [{"name": "score", "parameters": {"binary_data": false}}],'
    header += b' "parameters": {"binary_data_output": true}}'
    parsed = parse_request(header, None)
    assert parsed.binary_output is False  # the output's own flag wins over the request's
    assert parse_request(header.replace(b"false", b"true"), None).binary_output is True
    json_part, rest = split_body(header + b"tail", str(len(header)))
    assert json_part == header and bytes(rest) == b"tail"


def test_descriptor_set_matches_the_proto(tmp_path):
    """grpc_predict_v2.desc is proto/grpc_predict_v2.proto compiled; recompile after editing:
    python -m grpc_tools.protoc -Iproto --descriptor_set_out=reward_service/serve/grpc/
    grpc_predict_v2.desc grpc_predict_v2.proto"""
    out = tmp_path / "fresh.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--descriptor_set_out={out}", "grpc_predict_v2.proto"],
        check=True,
    )  # fmt: skip
    assert out.read_bytes() == protocol.DESCRIPTOR_SET.read_bytes()
    assert protocol.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"


def test_grpc_port_is_checked_against_the_http_port():
    from pydantic import ValidationError

    from reward_service.serve.settings import Settings

    with pytest.raises(ValidationError, match="also the HTTP port"):
        Settings(port=9000, grpc_port=9000)
    assert Settings(port=9000, grpc_port=0).grpc_port == 0
    assert Settings.model_fields["grpc_port"].default == 8001
