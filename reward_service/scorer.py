"""A model version loaded for scoring in-process: manifest, tokenizer and backend together.

The HTTP service wraps this with batching; export parity checks, benchmarks and tests call
:meth:`LoadedModel.score` directly. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from reward_service.backends import Backend, load_backend
from reward_service.repository import (
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    ModelLoadError,
    load_manifest,
    verify,
)
from reward_service.template import EncodedBatch, Item, encode_batch, load_tokenizer


@dataclass
class LoadedModel:
    folder: Path
    manifest: Manifest
    tokenizer: Tokenizer
    backend: Backend

    @classmethod
    def open(cls, folder: Path, backend: str = "onnxruntime", **backend_options) -> LoadedModel:
        """Load and verify one version folder; raises ModelLoadError with a one-line reason."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        verify(folder, manifest)
        try:
            tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelLoadError(f"{folder}/{TOKENIZER_FILE}: unreadable: {exc}") from exc
        runtime = load_backend(folder / MODEL_FILE, backend, **backend_options)
        return cls(folder, manifest, tokenizer, runtime)

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
