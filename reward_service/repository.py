"""The model repository: ``<repo>/<name>/<version>/{model.onnx, tokenizer.json, manifest.json}``.

Shaped like Triton's so that operators can version models side by side and roll back by
deleting a folder. Everything the server needs to score exactly as training did lives in the
manifest; the sha256 in it is checked at load so a half-copied or swapped file is refused
instead of silently serving different numbers. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from reward_service.template import InputTemplate

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelLoadError(RuntimeError):
    """A model folder that cannot be served; the message names the folder and the fix."""


class Normalization(BaseModel):
    mean: float = Field(0.0, description="Mean raw score on the reference set.")
    std: float = Field(1.0, gt=0, description="Standard deviation of raw scores on that set.")


class Parity(BaseModel):
    """How closely the exported graph reproduces its reference (PyTorch, or the fp32 graph)."""

    reference: Literal["pytorch", "onnx-fp32"]
    n_examples: int
    max_abs_diff: float
    spearman: float | None = None
    decision_agreement: float | None = Field(
        None, description="Share of held-out pairs ordered the same way as the reference."
    )


class ReferenceExample(BaseModel):
    """A held-out input with its scores at export: lets a backend prove parity at load time."""

    prompt: str
    response: str
    score: float = Field(description="Score of the fp32 graph.")
    graph_score: float | None = Field(
        None,
        description="Score of the published graph itself (differs from score for int8), as "
        "ONNX Runtime gave it at export.",
    )


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN.pattern)
    version: int = Field(ge=1)
    base_model: str = Field(description="Where the backbone came from (a path or a hub id).")
    architecture: str = Field(description="Hugging Face model class the graph was traced from.")
    created: str = Field(description="UTC ISO-8601 time of export.")
    template: InputTemplate
    pad_token_id: int
    inputs: list[str] = Field(description="ONNX input names, in graph order.")
    output: str = "score"
    precision: Literal["fp32", "int8"] = "fp32"
    opset: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of model.onnx.")
    optimized: bool = Field(False, description="ORT transformer fusions applied at export.")
    normalization: Normalization
    parity: list[Parity]
    metrics: dict[str, float] = Field(default_factory=dict, description="Eval metrics of the RM.")
    reference: list[ReferenceExample] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_name(name: str) -> str:
    """Model names reach the filesystem only after this check: no separators, no dots first."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def version_dir(repo: Path, name: str, version: int) -> Path:
    return Path(repo) / check_name(name) / str(int(version))


def next_version(repo: Path, name: str) -> int:
    versions = [int(p.name) for p in (Path(repo) / check_name(name)).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def write_manifest(folder: Path, manifest: Manifest) -> None:
    (folder / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")


def load_manifest(folder: Path) -> Manifest:
    """Read and validate one version folder without touching the model weights' contents."""
    path = Path(folder) / MANIFEST
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{folder}: no {MANIFEST}; export the model first") from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelLoadError(f"{path}: not a valid manifest: {' '.join(first)}") from exc
    for required in (MODEL_FILE, TOKENIZER_FILE):
        if not (Path(folder) / required).is_file():
            raise ModelLoadError(f"{folder}: {required} is missing")
    return manifest


def verify(folder: Path, manifest: Manifest) -> None:
    """Refuse a model whose bytes are not the ones the manifest vouches for."""
    actual = sha256_file(Path(folder) / MODEL_FILE)
    if actual != manifest.sha256:
        raise ModelLoadError(
            f"{folder}/{MODEL_FILE}: sha256 {actual[:12]}… does not match the manifest's "
            f"{manifest.sha256[:12]}…; the file is corrupt or was replaced after export"
        )


def discover(repo: Path) -> list[Path]:
    """Every ``<name>/<version>`` folder in a repository, sorted by name then version."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ModelLoadError(f"model repository {repo} does not exist")
    found = []
    for name_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        if not NAME_PATTERN.fullmatch(name_dir.name):
            continue
        versions = sorted(
            (p for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        found.extend(versions)
    return found
