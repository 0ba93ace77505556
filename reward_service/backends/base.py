"""The backend contract and the factory that picks one by configuration.

``auto`` picks, in order: ONNX Runtime on CUDA when onnxruntime-gpu sees a GPU; OpenVINO in bf16
when the openvino extra is installed, the CPU multiplies bf16 natively (AMX or AVX-512-bf16) and
the graph is fp32; ONNX Runtime on CPU otherwise. An int8 graph stays on ONNX Runtime, the
runtime its export-time parity was measured with. Whatever runs must still pass the parity gate
in :mod:`reward_service.backends.parity` before it serves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from reward_service.backends.cpu import CpuFeatures, host_features

log = logging.getLogger(__name__)

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
    """What ``auto`` decided and why, in words fit for the start-up log."""

    kind: str
    precision: str | None
    reason: str


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


def choose_auto(
    graph_precision: str,
    precision: str | None,
    *,
    openvino: bool,
    cpu: CpuFeatures,
) -> Choice:
    """The CPU runtime ``auto`` uses (CUDA is tried before this, see :func:`load_backend`)."""
    if precision is not None and precision.lower() == "bf16":
        return Choice("openvino", "bf16", "bf16 was asked for and only OpenVINO runs it")
    if precision is not None and precision.lower() in FP32_SPELLINGS:
        return Choice("onnxruntime", None, "fp32 was asked for: ONNX Runtime is the reference")
    if graph_precision == "int8":
        return Choice("onnxruntime", None, "int8 graph: its parity was measured on ONNX Runtime")
    if not openvino:
        return Choice("onnxruntime", None, "the openvino extra is not installed")
    if not cpu.fast_bf16:
        return Choice("onnxruntime", None, f"CPU has {cpu.describe()}")
    return Choice("openvino", "bf16", f"openvino installed, CPU has {cpu.describe()}")


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
    if kind == "auto":
        return _load_auto(model_path, threads, providers, precision, graph_precision)
    if kind == "onnxruntime":
        return _load_ort(model_path, threads, providers, precision, graph_precision)
    if kind == "openvino":
        from reward_service.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(
            model_path, threads=threads, precision=precision, graph_precision=graph_precision
        )
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")


def _load_ort(
    model_path: Path,
    threads: int,
    providers: list[str] | None,
    precision: str | None,
    graph_precision: str,
) -> Backend:
    if precision is not None and precision.lower() not in (*FP32_SPELLINGS, graph_precision):
        raise BackendError(
            f"ONNX Runtime runs the graph in its exported precision ({graph_precision}); "
            f"precision {precision!r} needs backend 'openvino'"
        )
    from reward_service.backends.onnxruntime import OrtBackend

    return OrtBackend(model_path, threads=threads, providers=providers)


def _load_auto(
    model_path: Path,
    threads: int,
    providers: list[str] | None,
    precision: str | None,
    graph_precision: str,
) -> Backend:
    if cuda_available() and precision is None:
        backend = _load_ort(model_path, threads, providers, None, graph_precision)
        if backend.device == "CUDAExecutionProvider":
            log.info("backend auto: onnxruntime on CUDA")
            return backend
    choice = choose_auto(
        graph_precision, precision, openvino=openvino_installed(), cpu=host_features()
    )
    log.info("backend auto: %s %s (%s)", choice.kind, choice.precision or "", choice.reason)
    if choice.kind == "onnxruntime":
        return _load_ort(model_path, threads, providers, None, graph_precision)
    try:
        return load_backend(
            model_path,
            "openvino",
            threads=threads,
            precision=choice.precision,
            graph_precision=graph_precision,
        )
    except BackendError as exc:
        if precision is not None:
            raise  # bf16 was asked for by name: no silent substitute
        log.warning("backend auto: OpenVINO failed (%s); using ONNX Runtime", exc)
        return _load_ort(model_path, threads, providers, None, graph_precision)
