"""KServe v2 over REST JSON, REST binary and gRPC: the same model on one server, side by side.

1. **Under load**: 64 concurrent closed-loop clients, each sending single-text requests, per
   protocol in turn on one ``reward-service serve`` (default settings, gRPC on): texts/s and
   p50/p99 latency. Clients are as light as each protocol allows (pre-encoded requests over a raw
   HTTP/1.1 keep-alive connection per client; one grpc.aio channel with bytes in and out), so on
   a 2-core machine the load generator takes as little as possible from the server.
   Rounds alternate the protocols (A B C A B C) so a noisy neighbour hits all of them alike.
2. **Server-side cost of one 256-text request**: the server's own parse (body → texts) and
   serialize (scores → body) functions per protocol, timed in-process (median of repeats).

    .venv/bin/python bench/bench_protocols.py --model-repo runs/bench-model --out runs/protocols

Texts are fortunes (apt-get install fortunes). Prints and writes ``<out>/protocols.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from loadgen import corpus_texts  # noqa: E402

from reward_service.serve import open_inference, rest_tensors  # noqa: E402
from reward_service.serve.grpc import protocol as pb  # noqa: E402
from reward_service.serve.grpc.server import inference_of  # noqa: E402

MODEL = "demo"
GRPC_INFER = f"/{pb.SERVICE_NAME}/ModelInfer"
HEADER = rest_tensors.HEADER_LENGTH


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def elements(texts: list[str]) -> bytes:
    """The BYTES tensor's binary form: a 4-byte little-endian length before each text."""
    return b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in texts))


def rest_json_request(texts: list[str]) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
    return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}


def rest_binary_request(texts: list[str]) -> tuple[bytes, dict[str, str]]:
    """What tritonclient sends for a numpy BYTES input with its defaults (binary in and out)."""
    raw = elements(texts)
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)]}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return header + raw, {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


def grpc_request(texts: list[str], model: str) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(elements(texts))
    return request.SerializeToString()


class RestClient:
    """One keep-alive HTTP/1.1 connection that returns the response body."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}"
        self.writer.write(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status = int((await self.reader.readline()).split()[1])
        fields = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            fields[name.strip().lower()] = value.strip()
        content = await self.reader.readexactly(int(fields.get("content-length", 0)))
        return status, content, fields

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def rest_scores(content: bytes, fields: dict) -> list[float]:
    length = int(fields.get(HEADER.lower(), len(content)))
    document = json.loads(content[:length])
    output = document["outputs"][0]
    if "data" in output:
        return output["data"]
    return np.frombuffer(content[length:], dtype="<f4").tolist()


async def closed_loop(
    send: Callable[[int], object], concurrency: int, seconds: float, warmup: float
) -> dict:
    """``concurrency`` clients each send, wait, send again; latencies after the warm-up."""
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()
    stop_at = start + warmup + seconds

    async def client(index: int) -> None:
        nonlocal failures
        n = index
        while (now := time.perf_counter()) < stop_at:
            try:
                await send(n)
            except Exception:
                failures += 1
            if now - start >= warmup:
                latencies.append(time.perf_counter() - now)
            n += concurrency

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    lat = np.array(latencies) * 1000
    return {
        "texts_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "requests": len(latencies),
        "failures": failures,
    }


async def load_rest(port: int, texts: list[str], binary: bool, args) -> dict:
    make = rest_binary_request if binary else rest_json_request
    bodies = [make([t]) for t in texts]
    clients = [
        RestClient("127.0.0.1", port, f"/v2/models/{args.model}/infer")
        for _ in range(args.concurrency)
    ]

    async def send(n: int) -> None:
        status, _, _ = await clients[n % len(clients)].post(*bodies[n % len(bodies)])
        if status != 200:
            raise RuntimeError(status)

    try:
        return await closed_loop(send, args.concurrency, args.seconds, args.warmup)
    finally:
        for c in clients:
            c.close()


async def load_grpc(port: int, texts: list[str], args) -> dict:
    bodies = [grpc_request([t], args.model) for t in texts]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary(GRPC_INFER)  # bytes in, bytes out: no client-side protobuf

        async def send(n: int) -> None:
            await infer(bodies[n % len(bodies)], timeout=60)

        return await closed_loop(send, args.concurrency, args.seconds, args.warmup)


async def agreement(http_port: int, grpc_port: int, texts: list[str], model: str) -> float:
    """Largest difference between the protocols' scores for the same texts (should be ~0)."""
    client = RestClient("127.0.0.1", http_port, f"/v2/models/{model}/infer")
    json_scores = rest_scores(*(await client.post(*rest_json_request(texts)))[1:])
    binary_scores = rest_scores(*(await client.post(*rest_binary_request(texts)))[1:])
    client.close()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        raw = await channel.unary_unary(GRPC_INFER)(grpc_request(texts, model), timeout=60)
    response = pb.ModelInferResponse.FromString(raw)
    grpc_scores = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    return float(
        max(
            np.abs(np.array(json_scores) - grpc_scores).max(),
            np.abs(np.array(binary_scores) - grpc_scores).max(),
        )
    )


def median_us(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 1)


def server_side_costs(texts: list[str], repeats: int) -> dict:
    """The server's own parse and serialize code on one request of ``len(texts)`` texts."""
    scores = np.random.default_rng(0).standard_normal(len(texts)).astype(np.float32)
    max_items = len(texts)
    json_body, _ = rest_json_request(texts)
    binary_body, binary_headers = rest_binary_request(texts)
    grpc_body = grpc_request(texts, MODEL)

    def parse_rest(body: bytes, header: str | None) -> None:
        parsed = rest_tensors.parse_request(body, header)
        open_inference.items_of(parsed.inference.inputs, max_items)

    def parse_grpc() -> None:
        inference, _ = inference_of(pb.ModelInferRequest.FromString(grpc_body))
        open_inference.items_of(inference.inputs, max_items)

    def serialize_rest(binary: bool) -> bytes:
        return rest_tensors.infer_response(MODEL, "1", "", "score", scores, binary).body

    def serialize_grpc() -> None:
        output = pb.InferOutputTensor(name="score", datatype="FP32", shape=[len(scores)])
        response = pb.ModelInferResponse(model_name=MODEL, model_version="1", outputs=[output])
        response.raw_output_contents.append(open_inference.fp32_bytes(scores))
        response.SerializeToString()

    header = binary_headers[HEADER]
    return {
        "REST JSON": {
            "request_bytes": len(json_body),
            "parse_us": median_us(lambda: parse_rest(json_body, None), repeats),
            "serialize_us": median_us(lambda: serialize_rest(False), repeats),
        },
        "REST binary": {
            "request_bytes": len(binary_body),
            "parse_us": median_us(lambda: parse_rest(binary_body, header), repeats),
            "serialize_us": median_us(lambda: serialize_rest(True), repeats),
        },
        "gRPC": {
            "request_bytes": len(grpc_body),
            "parse_us": median_us(parse_grpc, repeats),
            "serialize_us": median_us(serialize_grpc, repeats),
        },
    }


def start_server(repo: Path, http_port: int, grpc_port: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "reward_service.cli", "serve", "--model-repo", str(repo),
        "--port", str(http_port), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("server not ready in 180 s")


def machine() -> dict:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = (ln.split(":", 1)[1].strip() for ln in flags.splitlines() if "model name" in ln)
    model = next(names, "")
    return {
        "cpu": model or platform.processor(),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "cores": len([ln for ln in flags.splitlines() if ln.startswith("processor")]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repo", type=Path, required=True)
    parser.add_argument("--model", default=MODEL, help="model name in the repository")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "protocols")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per protocol")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200, help="timings of the 256-text costs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts(2000)
    report: dict = {"machine": machine(), "settings": vars(args) | {"texts": len(texts)}}
    report["server_side_256"] = server_side_costs(texts[:256], args.repeats)
    print(json.dumps(report["server_side_256"], indent=2))

    http_port, grpc_port = free_port(), free_port()
    server = start_server(args.model_repo, http_port, grpc_port, args.out / "server.log")
    try:
        report["max_abs_score_difference"] = asyncio.run(
            agreement(http_port, grpc_port, texts[:32], args.model)
        )
        rounds = []
        for round_index in range(args.rounds):
            row = {
                "REST JSON": asyncio.run(load_rest(http_port, texts, False, args)),
                "REST binary": asyncio.run(load_rest(http_port, texts, True, args)),
                "gRPC": asyncio.run(load_grpc(grpc_port, texts, args)),
            }
            print(f"round {round_index + 1}: {json.dumps(row)}")
            rounds.append(row)
        report["under_load"] = rounds
    finally:
        server.terminate()
        server.wait(timeout=60)
    (args.out / "protocols.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
