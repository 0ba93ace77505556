"""The backend contract and the factory that picks one by configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class BackendError(RuntimeError):
    """A runtime that cannot be used as configured; the message says what to install or set."""


class Backend(Protocol):
    """A loaded model that maps token feeds to one score per row."""

    name: str  # "onnxruntime" or "openvino"
    precision: str  # "fp32", "int8", "bf16": what the arithmetic actually runs in
    device: str  # e.g. "CPUExecutionProvider", "CUDAExecutionProvider", "CPU"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Scores, float32 of shape (B,). Called from a worker thread; must release the GIL."""
        ...


def load_backend(
    model_path: Path,
    kind: str = "onnxruntime",
    *,
    threads: int = 0,
    providers: list[str] | None = None,
    precision: str | None = None,
) -> Backend:
    """Open ``model_path`` (an .onnx file) with the runtime named by ``kind``."""
    if kind == "onnxruntime":
        from reward_service.backends.onnxruntime import OrtBackend

        return OrtBackend(model_path, threads=threads, providers=providers)
    raise BackendError(f"unknown backend {kind!r}; choose 'onnxruntime'")
