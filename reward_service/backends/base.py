"""The backend contract, the factory for a named runtime, and what ``auto`` may choose from.

``auto`` is decided where the parity gate lives (:meth:`reward_service.scorer.LoadedModel.open`):
ONNX Runtime on CUDA when onnxruntime-gpu sees a GPU; otherwise every CPU runtime that may be
fastest here (:func:`auto_candidates`) is loaded, gated, and timed on the reference examples,
and the fastest that passes serves. The start-up log and ``/v1/models`` say which and why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from reward_service.backends.cpu import CpuFeatures

KINDS = ("auto", "onnxruntime", "openvino")
FP32_SPELLINGS = ("fp32", "f32")


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


@dataclass(frozen=True)
class Choice:
    """A runtime ``auto`` may use, and why it is on the list, in words fit for the log."""

    kind: str
    precision: str | None
    reason: str

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.precision}" if self.precision else self.kind


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    """onnxruntime-gpu lists CUDA even on a host without a GPU; the session tells for sure."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def auto_candidates(
    graph_precision: str,
    precision: str | None,
    *,
    openvino: bool,
    cpu: CpuFeatures,
) -> list[Choice]:
    """CPU runtimes worth trying for ``auto``, most promising first (CUDA is tried before).

    OpenVINO bf16 is a candidate only where the CPU multiplies bf16 natively; elsewhere it
    would run in fp32 and gain nothing over ONNX Runtime. ONNX Runtime at the graph's own
    precision is always last: it is the runtime every export was measured with.
    """
    if precision is not None and precision.lower() == "bf16":
        return [Choice("openvino", "bf16", "bf16 was asked for and only OpenVINO runs it")]
    if precision is not None and precision.lower() in FP32_SPELLINGS:
        return [Choice("onnxruntime", None, "fp32 was asked for: ONNX Runtime is the reference")]
    reference = Choice("onnxruntime", None, f"the reference runtime for {graph_precision} graphs")
    if not openvino:
        return [replace(reference, reason=f"{reference.reason}; the openvino extra is absent")]
    if not cpu.fast_bf16:
        return [replace(reference, reason=f"{reference.reason}; CPU has {cpu.describe()}")]
    return [Choice("openvino", "bf16", f"CPU has {cpu.describe()}"), reference]


def load_backend(
    model_path: Path,
    kind: str = "onnxruntime",
    *,
    threads: int = 0,
    providers: list[str] | None = None,
    precision: str | None = None,
    graph_precision: str = "fp32",
) -> Backend:
    """Open ``model_path`` (an .onnx file) with the runtime named by ``kind``.

    ``precision`` asks for an arithmetic precision ("bf16" or "f32"; only OpenVINO can change
    it); ``graph_precision`` is what the graph was exported in (the manifest's ``precision``).
    """
    if kind == "onnxruntime":
        if precision is not None and precision.lower() not in (*FP32_SPELLINGS, graph_precision):
            raise BackendError(
                f"ONNX Runtime runs the graph in its exported precision ({graph_precision}); "
                f"precision {precision!r} needs backend 'openvino'"
            )
        from reward_service.backends.onnxruntime import OrtBackend

        return OrtBackend(model_path, threads=threads, providers=providers)
    if kind == "openvino":
        from reward_service.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(
            model_path, threads=threads, precision=precision, graph_precision=graph_precision
        )
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
