"""Everything an operator can tune, from one validated source.

Environment variables (prefix ``REWARD_SERVICE_``) configure the container; ``reward-service
serve`` flags override them for a one-off run. A bad value stops the service before it binds,
with the variable named, instead of surfacing as odd behaviour under load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REWARD_SERVICE_", extra="ignore")

    model_repo: Path = Field(Path("models"), description="Model repository to load.")
    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 inside a container.")
    port: int = Field(8000, ge=0, le=65535, description="Bind port (0 picks a free one).")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol's gRPC service, beside HTTP on the "
        "same host (Triton's 8001 by default; 0 turns gRPC off).",
    )
    default_model: str | None = Field(
        None, description="Model used when a request names none (default: the only model)."
    )
    backend: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto", description="Inference runtime; auto picks the fastest that passes parity."
    )
    backend_fallback: bool | None = Field(
        None,
        description="Load a model on ONNX Runtime fp32 when the chosen backend fails its parity "
        "gate or cannot read the graph (default: on for auto, off for a named backend).",
    )
    precision: str | None = Field(
        None, description="Arithmetic precision hint for OpenVINO (fp32 or bf16)."
    )
    providers: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="ONNX Runtime execution providers in order, comma-separated "
        "(default: CUDA first when onnxruntime-gpu sees a GPU, else CPU).",
    )
    threads: int = Field(0, ge=0, description="Intra-op threads per model (0: all cores).")
    max_batch_tokens: int = Field(
        16384, ge=64, description="Padded-token budget of one batch (items x longest item)."
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long an idle batcher waits for more items to fill a batch."
    )
    split_cost_tokens: int = Field(
        64,
        ge=0,
        description="Fixed cost of one backend run in padded tokens; a length-sorted batch is "
        "split where padding would cost more. Raise it on a GPU, where runs are dearer.",
    )
    max_queue: int = Field(2048, ge=1, description="Queued items per model before 429.")
    max_queue_delay_ms: float = Field(
        0,
        ge=0,
        description="Reject with 429 when the queue's estimated wait exceeds this (0: off); "
        "bounds latency under overload at the cost of more 429s.",
    )
    max_items: int = Field(256, ge=1, description="Items per request before 413.")
    max_request_bytes: int = Field(4 << 20, ge=1024, description="Body size before 413.")
    max_text_chars: int = Field(
        32768,
        ge=1,
        description="Characters per text before 413; shorter texts that exceed the model's "
        "max_length in tokens are truncated (reported per item), never rejected.",
    )
    api_keys_file: Path | None = Field(
        None, description="One bearer key per line; unset turns auth off."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest log level written."
    )
    drain_seconds: float = Field(
        30, ge=0, description="Longest wait for in-flight and queued work after SIGTERM."
    )
    warmup: bool = Field(True, description="Run each model at its largest shapes before ready.")
    get_reward_normalize: bool = Field(
        False, description="Normalize /get_reward rewards with the manifest's mean and std."
    )

    @field_validator("grpc_port")
    @classmethod
    def _distinct_ports(cls, value: int, info: ValidationInfo) -> int:
        if value and value == info.data.get("port"):
            raise ValueError(f"{value} is also the HTTP port")
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()] or None
        return value
