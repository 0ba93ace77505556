"""A model version loaded for scoring in-process: manifest, tokenizer and backend together.

The HTTP service wraps this with batching; export parity checks, benchmarks and tests call
:meth:`LoadedModel.score` directly. Loading ends with the parity gate
(:mod:`reward_service.backends.parity`): a backend that does not reproduce the manifest's
reference scores never serves. Imports no torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from reward_service.backends import Backend, BackendError, load_backend
from reward_service.backends.base import (
    Choice,
    auto_candidates,
    cuda_available,
    openvino_installed,
)
from reward_service.backends.cpu import host_features
from reward_service.backends.parity import ParityReport, run_gate
from reward_service.repository import (
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    ModelLoadError,
    load_manifest,
    verify,
)
from reward_service.template import EncodedBatch, Item, encode_batch, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    folder: Path
    manifest: Manifest
    tokenizer: Tokenizer
    backend: Backend
    parity: ParityReport | None = None  # set by open(); None only for a model built by hand
    selected_because: str = "built directly"  # why this runtime serves: log and /v1/models

    @classmethod
    def open(
        cls,
        folder: Path,
        backend: str = "onnxruntime",
        *,
        fallback: bool | None = None,
        **backend_options,
    ) -> LoadedModel:
        """Load, verify and parity-gate one version folder.

        Raises ModelLoadError with a one-line reason, or BackendError when the runtime cannot
        be used as configured (not installed, a graph it cannot read). ``auto`` tries every
        candidate runtime and serves the fastest that passes the gate (``fallback=False`` limits
        it to the first candidate). A named runtime serves as asked or not at
        all, unless ``fallback`` lets ONNX Runtime at the graph's own precision replace it.
        """
        folder = Path(folder)
        manifest = load_manifest(folder)
        verify(folder, manifest)
        try:
            tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelLoadError(f"{folder}/{TOKENIZER_FILE}: unreadable: {exc}") from exc
        backend_options.setdefault("graph_precision", manifest.precision)
        opened = _Opener(cls, folder, manifest, tokenizer, backend_options)
        if backend == "auto":
            return opened.auto(first_only=fallback is False)
        try:
            return opened.gated(
                Choice(backend, backend_options.get("precision"), f"backend {backend!r} was named")
            )
        except (ModelLoadError, BackendError) as exc:
            if backend == "onnxruntime" or not fallback:
                raise
            log.warning("%s: %s; falling back to ONNX Runtime", manifest.key, exc)
            return opened.gated(
                Choice("onnxruntime", None, f"{backend} could not serve ({exc}); fell back")
            )

    def encode(self, items: Sequence[Item]) -> EncodedBatch:
        return encode_batch(
            self.tokenizer, self.manifest.template, items, self.manifest.pad_token_id
        )

    def score(self, items: Sequence[Item], batch_size: int = 32) -> np.ndarray:
        """Raw scores for items, in order, in length-sorted chunks to waste little padding."""
        order = sorted(range(len(items)), key=lambda i: len(str(items[i])))
        scores = np.empty(len(items), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.encode([items[i] for i in chunk])
            scores[chunk] = self.backend.run(batch.feeds(self.manifest.inputs))
        return scores

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        norm = self.manifest.normalization
        return (scores - norm.mean) / norm.std


@dataclass
class _Opener:
    """One model folder being opened: builds, gates and (for ``auto``) races its runtimes."""

    cls: type[LoadedModel]
    folder: Path
    manifest: Manifest
    tokenizer: Tokenizer
    options: dict

    def gated(self, choice: Choice) -> LoadedModel:
        options = {**self.options, "precision": choice.precision}
        runtime = load_backend(self.folder / MODEL_FILE, choice.kind, **options)
        model = self.cls(self.folder, self.manifest, self.tokenizer, runtime)
        label = f"{runtime.name}/{runtime.precision}"
        model.parity = run_gate(self.manifest, model.score, label)
        if not model.parity.passed:
            raise ModelLoadError(
                f"{self.manifest.key}: parity gate refused {model.parity.describe()}"
            )
        log.info("%s: parity gate passed on %s", self.manifest.key, model.parity.describe())
        model.selected_because = choice.reason
        return model

    def auto(self, *, first_only: bool) -> LoadedModel:
        """The fastest candidate that passes the gate on this machine.

        Speeds are measured here, on the reference examples, because the ranking depends on
        the CPU: OpenVINO bf16 is 2-4x ONNX Runtime fp32 on AMX, less on AVX-512-bf16 alone,
        and the gate may refuse it for a model whose scores bf16 cannot hold.
        """
        cuda = self._cuda()
        if cuda is not None:
            return cuda
        plan = auto_candidates(
            self.manifest.precision,
            self.options.get("precision"),
            openvino=openvino_installed(),
            cpu=host_features(),
        )
        passed: list[LoadedModel] = []
        refused: list[str] = []
        first_error: Exception | None = None
        for choice in plan[:1] if first_only else plan:
            try:
                passed.append(self.gated(choice))
            except (ModelLoadError, BackendError) as exc:
                first_error = first_error or exc
                refused.append(f"{choice.label} refused ({exc})")
                log.warning("%s: auto: %s", self.manifest.key, refused[-1])
        if not passed:
            assert first_error is not None
            raise first_error
        best = passed[0]
        if len(passed) > 1:
            items = [(ex.prompt, ex.response) for ex in self.manifest.reference]
            speeds = race(passed, items)
            best = max(passed, key=lambda m: speeds[id(m)])
            timed = ", ".join(
                f"{m.backend.name}/{m.backend.precision} {speeds[id(m)]:.0f} texts/s"
                for m in passed
            )
            best.selected_because = (
                f"auto: fastest that passed parity ({timed} on the reference examples); "
                f"{best.selected_because}"
            )
        best.selected_because = "; ".join([best.selected_because, *refused])
        log.info("%s: %s", self.manifest.key, best.selected_because)
        return best

    def _cuda(self) -> LoadedModel | None:
        """ONNX Runtime on CUDA when onnxruntime-gpu sees a GPU and no CPU precision was asked."""
        if self.options.get("precision") is not None or not cuda_available():
            return None
        model = self.gated(Choice("onnxruntime", None, "auto: onnxruntime-gpu sees a GPU"))
        return model if model.backend.device == "CUDAExecutionProvider" else None


def race(models: list[LoadedModel], items: list[Item], rounds: int = 2) -> dict[int, float]:
    """Texts per second of each model on ``items``, best of interleaved rounds (a busy machine
    slows whichever runs at that moment; interleaving spreads the noise over all of them)."""
    best = {id(m): float("inf") for m in models}
    for _ in range(rounds):
        for model in models:
            started = time.perf_counter()
            model.score(items)
            best[id(model)] = min(best[id(model)], time.perf_counter() - started)
    return {key: len(items) / seconds for key, seconds in best.items()}
