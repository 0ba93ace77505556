"""ONNX Runtime: CUDA first when onnxruntime-gpu sees a GPU, else the CPU provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from reward_service.backends.base import BackendError


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OrtBackend:
    name = "onnxruntime"

    def __init__(
        self, model_path: Path, *, threads: int = 0, providers: list[str] | None = None
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads would otherwise spin for a while after each run, taking the
        # cores the event loop and the tokenizer need between batches (and, in benchmarks,
        # the next backend's turn).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = providers or default_providers()
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BackendError(f"{model_path}: ONNX Runtime cannot load it: {exc}") from exc
        self.device = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.precision = "int8" if _has_integer_matmul(self.session) else "fp32"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (scores,) = self.session.run(None, {k: feeds[k] for k in self.input_names})
        return np.asarray(scores, dtype=np.float32).reshape(-1)


def _has_integer_matmul(session: ort.InferenceSession) -> bool:
    meta = session.get_modelmeta().custom_metadata_map
    return meta.get("precision") == "int8"
