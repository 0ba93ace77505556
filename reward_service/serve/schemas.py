"""Request and response bodies; their JSON Schemas make up proto/openapi.json.

Bodies of our own routes forbid unknown fields, so a typo such as ``"normalise"`` is a 422
rather than silently ignored. The OpenRLHF route accepts extra fields because its client adds
keys across versions (``metas``) and must keep working unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reward_service.repository import Manifest

ModelRef = Field(
    None,
    description="Model name (newest version) or name@version; omitted: the default model.",
    examples=["demo", "demo@1"],
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairInput(_Strict):
    prompt: str = Field(description="The context the response answers.")
    response: str = Field(description="The text being judged.")


class ScoreRequest(_Strict):
    inputs: list[str | PairInput] = Field(
        description="Items to score: {prompt, response} objects, or plain pre-joined texts. "
        "An empty list gives empty results."
    )
    model: str | None = ModelRef
    normalize: bool = Field(
        False, description="Return (raw - mean) / std with the manifest's reference statistics."
    )


class ScoreResponse(BaseModel):
    model: str
    version: int
    scores: list[float] = Field(description="One score per input, in input order.")
    tokens: list[int] = Field(
        description="Tokens the model saw per input, special tokens included."
    )
    truncated: list[bool] = Field(description="Whether an input was cut to the model's max_length.")
    normalized: bool


class ComparePair(_Strict):
    prompt: str
    chosen: str
    rejected: str


class CompareRequest(_Strict):
    pairs: list[ComparePair] = Field(description="An empty list gives empty results.")
    model: str | None = ModelRef


class CompareResponse(BaseModel):
    model: str
    version: int
    chosen: list[float] = Field(description="Raw score of each chosen response.")
    rejected: list[float] = Field(description="Raw score of each rejected response.")
    margins: list[float] = Field(description="chosen - rejected.")
    probabilities: list[float] = Field(
        description="P(chosen preferred) = sigmoid(margin), the Bradley-Terry model."
    )
    truncated: list[bool] = Field(description="Whether either side of a pair was truncated.")


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request, exactly as its ``remote_rm_fn`` posts it."""

    model_config = ConfigDict(extra="allow")

    query: list[str] = Field(description="Prompt and response already joined by the policy.")
    prompts: list[Any] | None = Field(None, description="Accepted and ignored.")
    labels: list[Any] | None = Field(None, description="Accepted and ignored.")
    model: str | None = ModelRef


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)


class Runtime(BaseModel):
    backend: str
    precision: str
    device: str
    selected_because: str = Field(
        "", description="Why this runtime serves: named by configuration, or what auto measured."
    )
    parity: dict[str, object] | None = Field(
        None, description="The load-time parity gate's figures for this runtime."
    )


class Limits(BaseModel):
    max_items: int
    max_text_chars: int
    max_request_bytes: int
    max_length: int = Field(description="Tokens per item; longer items are truncated.")


class ModelCard(BaseModel):
    id: str = Field(description="name@version")
    name: str
    version: int
    available: bool
    error: str | None = None
    runtime: Runtime | None = None
    limits: Limits | None = None
    manifest: Manifest | None = Field(
        None, description="The export manifest, without its reference examples."
    )


class ModelList(BaseModel):
    default: str | None
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "ready"]
    models: dict[str, str] = Field(default_factory=dict)


# -- KServe v2 / Open Inference Protocol --------------------------------------------------------


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="BYTES: the elements are texts.")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: the input's bytes follow the JSON header."
    )
    data: list[Any] | None = Field(None, description="Texts, flat or nested row-major.")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data: return this output as raw little-endian FP32."
    )


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="normalize: scale scores; binary_data_output: raw outputs."
    )
    inputs: list[InferInput] = Field(
        description="One BYTES tensor of texts, or two named 'prompt' and 'response'."
    )
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32"] = "FP32"
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: the output's bytes follow the JSON header."
    )
    data: list[float] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool
