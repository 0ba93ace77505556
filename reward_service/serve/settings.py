"""Everything an operator can tune, from one validated source.

Environment variables (prefix ``REWARD_SERVICE_``) configure the container; ``reward-service
serve`` flags override them for a one-off run. A bad value stops the service before it binds,
with the variable named, instead of surfacing as odd behaviour under load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
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
    max_batch_tokens: int | None = Field(
        None,
        ge=64,
        description="Padded-token budget of one batch (items x longest item); default 16384 on "
        "a GPU, 512 on a CPU, where a bigger batch buys no speed, only latency for the "
        "requests behind it.",
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
    max_queue: int = Field(
        2048, ge=1, description="Queued items per model before 429; at least max_items."
    )
    max_queue_tokens: int | None = Field(
        None,
        ge=0,
        description="Tokens of work ahead of a request (queued, being tokenized, running) "
        "before 429: the latency bound, a few batch-times on any device (default: 4 x "
        "max_batch_tokens; 0: off).",
    )
    max_queue_delay_ms: float = Field(
        0,
        ge=0,
        description="Also reject with 429 when the work ahead would take longer than this at "
        "the measured speed (0: off).",
    )
    max_items: int = Field(
        1024,
        ge=1,
        description="Items per request before 413 (1024: OpenRLHF's default whole rollout).",
    )
    max_request_bytes: int = Field(16 << 20, ge=1024, description="Body size before 413.")
    max_inflight_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="Request bodies held at once, in declared bytes, before 429: with "
        "max_queue, what bounds memory however many clients connect.",
    )
    max_text_chars: int = Field(
        32768,
        ge=1,
        description="Characters per text before 413; shorter texts that exceed the model's "
        "max_length in tokens are truncated (reported per item), never rejected.",
    )
    header_timeout_seconds: float = Field(
        10, gt=0, description="Longest wait for a request's headers before the connection closes."
    )
    body_timeout_seconds: float = Field(
        60, gt=0, description="Longest time to receive a request body before 408."
    )
    api_keys_file: Path | None = Field(
        None, description="One bearer key per line; unset turns auth off."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest log level written."
    )
    drain_seconds: float = Field(
        30,
        ge=0,
        description="Longest time from SIGTERM to exit; work still queued then is answered 503.",
    )
    reload_interval_seconds: float = Field(
        3,
        ge=0,
        description="How often the model repository is checked for new versions to load, "
        "verify, warm and swap in; 0 checks only on POST /v1/admin/reload.",
    )
    warmup: bool = Field(True, description="Run each model at its largest shapes before ready.")
    get_reward_normalize: bool = Field(
        False, description="Normalize /get_reward rewards with the manifest's mean and std."
    )

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> Settings:
        if self.max_queue < self.max_items:
            raise ValueError(
                f"max_queue ({self.max_queue}) is below max_items ({self.max_items}): "
                "a full-size request could never be queued"
            )
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) is below max_request_bytes "
                f"({self.max_request_bytes}): a full-size request could never be read"
            )
        return self

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
