"""Request and response bodies; their JSON Schemas make up proto/openapi.json.

Bodies of our own routes forbid unknown fields, so a typo such as ``"normalise"`` is a 422
rather than silently ignored. The OpenRLHF route accepts extra fields because its client adds
keys across versions and must keep working unchanged.

Every request body is refused with a 422 when any string in it, a key or a value, at any depth,
holds a lone UTF-16 surrogate (``"\\ud800"``): JSON lets a client write one, but it is not
text, no tokenizer can read it and no UTF-8 response can quote it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reward_service.repository import Manifest

SURROGATE = re.compile("[\ud800-\udfff]")
MAX_MODELS_PER_REQUEST = 8

ModelRef = Field(
    None,
    max_length=128,
    description="Model name (newest version) or name@version; omitted: the default model.",
    examples=["demo", "demo@1"],
)


def surrogate_path(value: object) -> str | None:
    """Where the first string holding a lone surrogate sits in parsed JSON, or None."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if SURROGATE.search(node):
                return path or "(body)"
        elif isinstance(node, dict):
            for key, child in node.items():
                if isinstance(key, str) and SURROGATE.search(key):
                    return f"{path}.<key>" if path else "<key>"
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, list):
            stack.extend((child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(node))
    return None


def surrogate_message(where: str) -> str:
    return (
        f"{where[:80]} holds a lone UTF-16 surrogate escape, which is not text; send valid Unicode"
    )


class _Body(BaseModel):
    """A request body: strings must be text."""

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        where = surrogate_path(data)
        if where is not None:
            raise ValueError(surrogate_message(where))
        return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairInput(_Strict):
    prompt: str = Field(description="The context the response answers.")
    response: str = Field(description="The text being judged.")


class ScoreRequest(_Strict, _Body):
    inputs: list[str | PairInput] = Field(
        description="Items to score: {prompt, response} objects, or plain pre-joined texts. "
        "An empty list gives empty results."
    )
    model: str | None = ModelRef
    models: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_MODELS_PER_REQUEST,
        description="Several models (names or name@version) to score the same inputs with, "
        "e.g. a reward model and a cost model: one result per model, in this order. Excludes "
        "`model`.",
        examples=[["helpful", "cost"]],
    )
    normalize: bool | list[bool] = Field(
        False,
        description="Return (raw - mean) / std with the manifest's reference statistics; with "
        "`models`, one flag for all or one per model (keep a cost model raw: its sign matters).",
    )

    @model_validator(mode="after")
    def _models_fit(self) -> ScoreRequest:
        if self.models is None:
            if isinstance(self.normalize, list):
                raise ValueError("a list of normalize flags needs a list of models")
            return self
        if self.model is not None:
            raise ValueError("name one model with `model` or several with `models`, not both")
        if len(set(self.models)) != len(self.models):
            raise ValueError("`models` names a model twice")
        if isinstance(self.normalize, list) and len(self.normalize) != len(self.models):
            raise ValueError(f"{len(self.normalize)} normalize flags for {len(self.models)} models")
        return self


class ScoreResponse(BaseModel):
    model: str
    version: int
    scores: list[float] = Field(description="One score per input, in input order.")
    tokens: list[int] = Field(
        description="Tokens the model saw per input, special tokens included."
    )
    truncated: list[bool] = Field(description="Whether an input was cut to the model's max_length.")
    normalized: bool


class ModelScores(BaseModel):
    model: str
    version: int
    scores: list[float] = Field(description="One score per input, in input order.")
    tokens: list[int] = Field(description="Tokens this model saw per input.")
    truncated: list[bool]
    normalized: bool


class MultiScoreResponse(BaseModel):
    """The answer to a request that named ``models``: one result per model, in that order."""

    results: list[ModelScores]


class ComparePair(_Strict):
    prompt: str
    chosen: str
    rejected: str


class CompareRequest(_Strict, _Body):
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


class GetRewardRequest(_Body):
    """OpenRLHF's remote reward-model request, exactly as its ``remote_rm_fn`` posts it."""

    model_config = ConfigDict(extra="allow")

    query: list[str] = Field(
        description="Prompt and response joined by the policy's chat template, one per sample."
    )
    prompts: list[str] | None = Field(
        None,
        description="The prompt each query starts with. Given, each query is split into "
        "(prompt, response), chat markup removed, and scored as the reward model was trained.",
    )
    labels: list[Any] | None = Field(None, description="Accepted and ignored.")
    model: str | None = ModelRef

    @model_validator(mode="after")
    def _one_prompt_per_query(self) -> GetRewardRequest:
        if self.prompts is not None and len(self.prompts) != len(self.query):
            raise ValueError(
                f"{len(self.prompts)} prompts for {len(self.query)} queries; send one per query"
            )
        return self


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


class ReloadEvent(BaseModel):
    at: str = Field(description="UTC time, ISO 8601.")
    model: str = Field(description="name@version")
    event: Literal["loaded", "refused", "retired"]
    detail: str = Field("", description="What it replaced, or why it was refused.")


class ReloadStatus(BaseModel):
    interval_seconds: float = Field(description="0: the repository is checked only on demand.")
    last_check: str | None = Field(None, description="UTC time of the last check, ISO 8601.")
    events: list[ReloadEvent] = Field(description="The latest changes, oldest first.")


class ReloadResponse(BaseModel):
    changes: list[ReloadEvent] = Field(description="What this check loaded or refused.")
    serving: dict[str, str] = Field(description="Each model name and the version it serves.")


class ModelList(BaseModel):
    default: str | None
    data: list[ModelCard]
    reload: ReloadStatus | None = Field(None, description="Hot reload: what changed lately.")


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
