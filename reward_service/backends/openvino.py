"""OpenVINO runtime on CPU: the same model.onnx, compiled once, in bf16 or fp32.

The plain ``openvino`` runtime reads ONNX directly and compiles one executable for dynamic batch
and sequence axes, so no shape ever triggers a recompile while serving. On CPUs with AMX or
AVX-512-bf16 its default inference precision is already bf16; exact fp32 therefore needs the
"f32" hint, and this backend always passes the hint explicitly so that the label it reports is
the precision that actually runs (read back from the compiled model, never assumed).

ONNX Runtime's own OpenVINO execution provider is deliberately not used: it conflicts with the
plain onnxruntime wheel, was slower in our measurements, and silently falls back to the CPU
provider when given a precision it does not understand.
"""

from __future__ import annotations

import queue
from pathlib import Path
from types import ModuleType

import numpy as np

from reward_service.backends.base import BackendError
from reward_service.backends.cpu import host_features

INSTALL_HINT = "pip install 'rlhf-reward-service[openvino]'"
HINTS = {"bf16": "bf16", "f32": "f32", "fp32": "f32"}
"""Accepted spellings of the precision option → OpenVINO's INFERENCE_PRECISION_HINT values."""


def import_openvino() -> ModuleType:
    """The openvino module, or a BackendError that says how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendError(
            f"the openvino backend needs the openvino package, which is not installed: "
            f"{INSTALL_HINT} (or choose backend 'onnxruntime')"
        ) from exc
    return openvino


def precision_hint(precision: str | None) -> str:
    """The hint to compile with: as asked, else bf16 where the CPU multiplies bf16 natively."""
    if precision is None:
        return "bf16" if host_features().fast_bf16 else "f32"
    try:
        return HINTS[precision.lower()]
    except KeyError:
        raise BackendError(
            f"unknown precision {precision!r} for the openvino backend; choose 'bf16' or 'f32'"
        ) from None


class OpenVinoBackend:
    name = "openvino"
    device = "CPU"

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 0,
        precision: str | None = None,
        graph_precision: str = "fp32",
    ) -> None:
        ov = import_openvino()
        hint = precision_hint(precision)
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
            # Exporters declare dynamic axes, but a graph traced with fixed sizes would make
            # every other shape fail; re-declaring both axes dynamic costs nothing.
            model.reshape(
                {
                    port.get_any_name(): ov.PartialShape.dynamic(port.get_partial_shape().rank)
                    for port in model.inputs
                }
            )
            config: dict[str, object] = {
                "INFERENCE_PRECISION_HINT": hint,
                # One batch at a time from the batcher: latency mode uses every thread on it.
                "PERFORMANCE_HINT": "LATENCY",
            }
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{model_path}: OpenVINO cannot compile it: {first}") from exc
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        compute = "bf16" if actual == ov.Type.bf16 else "fp32"
        # An int8 graph keeps its integer matmuls; the hint then governs only the rest.
        labels = {"fp32": "int8", "bf16": "int8+bf16"} if graph_precision == "int8" else {}
        self.precision = labels.get(compute, compute)
        # An InferRequest holds per-call state and is not safe to share between threads; the
        # pool hands each concurrent caller its own and keeps them for reuse.
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            # infer() releases the GIL while the graph runs, and copies the outputs out of the
            # request's buffers, so the request can be reused at once.
            result = request.infer({name: feeds[name] for name in self.input_names})
        finally:
            self._requests.put(request)
        return np.asarray(result[0], dtype=np.float32).reshape(-1)
