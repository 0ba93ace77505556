"""kserve's InferenceRESTClient and InferenceGRPCClient against a running server, in a process
of their own (kserve cannot share one with tritonclient.grpc); run by test_kserve_clients.py.

    python kserve_clients.py rest|grpc HTTP_URL GRPC_ADDRESS KEY EXPECTED_SCORES_JSON

Exits 0 after printing "<check>: ok"; any failed expectation raises with its reason.
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelMetadataRequest

TEXTS = ["the day is wonderful and lovely.", "the day is awful and gloomy.", "a plain text"]
MAX_ITEMS = 16


def request(texts: list[str], binary: bool, model: str = "tiny") -> InferRequest:
    tensor = InferInput(name="text", shape=[len(texts)], datatype="BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary)
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id="k-1")


async def rest(url: str, key: str, expected: list[float]) -> None:
    auth = {"authorization": f"Bearer {key}"}
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        assert await client.is_server_live(url)
        assert await client.is_server_ready(url)
        assert await client.is_model_ready(url, "tiny", headers=auth)
        assert not await client.is_model_ready(url, "tiny")  # 401 without the key
        for binary in (True, False):  # kserve's default for numpy, then its JSON form
            response = await client.infer(url, request(TEXTS, binary), "tiny", headers=dict(auth))
            np.testing.assert_allclose(response.outputs[0].as_numpy(), expected, atol=1e-5)
            assert response.id == "k-1"
        failures = [
            ("nope", request(["x"], True), auth, 404, "no model 'nope'"),
            ("tiny", request(["x"], True), {}, 401, "API key"),
            ("tiny", request(["x"] * (MAX_ITEMS + 1), True), auth, 413, f"at most {MAX_ITEMS}"),
            ("tiny", request(["x" * 70_000], True), auth, 413, "over 65536 bytes"),
        ]
        for model, body, headers, status, words in failures:
            try:
                await client.infer(url, body, model, headers=dict(headers))
            except httpx.HTTPStatusError as error:
                assert error.response.status_code == status, (status, str(error))
                assert words in str(error), str(error)  # kserve quotes our {"error": str}
            else:
                raise AssertionError(f"no error for {model} {status}")
    finally:
        await client.close()


async def grpc_check(address: str, key: str, expected: list[float]) -> None:
    auth = [("authorization", f"Bearer {key}")]
    async with InferenceGRPCClient(address, retries=0) as client:
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("tiny", headers=auth)
        # The client wraps no metadata call; its own stub carries the RPC.
        meta = await client._client_stub.ModelMetadata(
            ModelMetadataRequest(name="tiny"), metadata=auth
        )
        assert meta.name == "tiny" and meta.outputs[0].name == "score", meta
        response = await client.infer(request(TEXTS, True), headers=auth)
        np.testing.assert_allclose(response.outputs[0].as_numpy(), expected, atol=1e-5)
        assert response.id == "k-1"
        failures = [
            (request(["x"], True, model="nope"), auth, grpc.StatusCode.NOT_FOUND),
            (request(["x"], True), [], grpc.StatusCode.UNAUTHENTICATED),
            (request(["x"] * (MAX_ITEMS + 1), True), auth, grpc.StatusCode.INVALID_ARGUMENT),
            (request(["x" * 70_000], True), auth, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ]
        for body, headers, code in failures:
            try:
                await client.infer(body, headers=headers)
            except grpc.aio.AioRpcError as error:
                assert error.code() == code, (code, error.code(), error.details())
                assert error.details(), "a status without a message"
            else:
                raise AssertionError(f"no error for {code}")


def main() -> None:
    check, url, address, key, expected = sys.argv[1:6]
    scores = json.loads(expected)
    if check == "rest":
        asyncio.run(rest(url, key, scores))
    else:
        asyncio.run(grpc_check(address, key, scores))
    print(f"{check}: ok")


if __name__ == "__main__":
    main()
