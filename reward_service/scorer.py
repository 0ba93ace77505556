"""A model version loaded for scoring in-process: manifest, tokenizer and backend together.

The HTTP service wraps this with batching; export parity checks, benchmarks and tests call
:meth:`LoadedModel.score` directly. Loading ends with the parity gate
(:mod:`reward_service.backends.parity`): a backend that does not reproduce the manifest's
reference scores never serves. Imports no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from reward_service.backends import Backend, BackendError, load_backend
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
    parity: ParityReport | None = None  # None when the manifest holds no reference examples

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
        be used as configured (not installed, a graph it cannot read). With ``fallback``, a
        backend that fails the gate or cannot load the graph is replaced by ONNX Runtime at the
        graph's own precision, which must then pass the gate itself. Unset, it is on for
        ``auto`` without a precision (the caller asked for whatever works best, not for one
        runtime) and off otherwise: a runtime or precision named explicitly serves as asked or
        not at all.
        """
        folder = Path(folder)
        manifest = load_manifest(folder)
        verify(folder, manifest)
        try:
            tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelLoadError(f"{folder}/{TOKENIZER_FILE}: unreadable: {exc}") from exc
        backend_options.setdefault("graph_precision", manifest.precision)
        try:
            model = cls._gated(folder, manifest, tokenizer, backend, backend_options)
        except (ModelLoadError, BackendError) as exc:
            if backend == "onnxruntime" or not _falls_back(backend, fallback, backend_options):
                raise
            log.warning("%s: %s; falling back to ONNX Runtime", manifest.key, exc)
            backend_options.pop("precision", None)
            model = cls._gated(folder, manifest, tokenizer, "onnxruntime", backend_options)
        return model

    @classmethod
    def _gated(
        cls, folder: Path, manifest: Manifest, tokenizer: Tokenizer, kind: str, options: dict
    ) -> LoadedModel:
        runtime = load_backend(folder / MODEL_FILE, kind, **options)
        model = cls(folder, manifest, tokenizer, runtime)
        label = f"{runtime.name}/{runtime.precision}"
        model.parity = run_gate(manifest, model.score, label)
        if model.parity is None:
            log.warning("%s: manifest has no reference examples; parity gate skipped", manifest.key)
        elif not model.parity.passed:
            raise ModelLoadError(f"{manifest.key}: parity gate refused {model.parity.describe()}")
        else:
            log.info("%s: parity gate passed on %s", manifest.key, model.parity.describe())
        return model

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


def _falls_back(backend: str, fallback: bool | None, options: dict) -> bool:
    if fallback is not None:
        return fallback
    return backend == "auto" and options.get("precision") is None
