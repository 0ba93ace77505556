"""The baseline people write today: FastAPI + transformers PyTorch, one request at a time.

Shaped like OpenRLHF's ``serve_rm``: the model runs inside the ``async`` route, so the event loop
is blocked while it computes and requests are served strictly one after another, each padded to
its own longest text. Same request and response shape as ``/v1/score`` so the load generator
drives both unchanged. For benchmarks only.

    python bench/naive_server.py --checkpoint runs/demo/rm --port 8001
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI, Request
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def build_app(checkpoint: str, max_length: int) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=1).eval()
    app = FastAPI()

    def score(texts: list[str]) -> list[float]:
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.no_grad():
            return model(**batch).logits[:, 0].tolist()

    @app.post("/v1/score")
    async def score_route(request: Request) -> dict:
        data = await request.json()
        return {"scores": score(data["inputs"])}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict:
        data = await request.json()
        rewards = score(data["query"])
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/demo/rm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    uvicorn.run(build_app(args.checkpoint, args.max_length), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
