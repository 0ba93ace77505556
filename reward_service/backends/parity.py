"""The parity gate: a backend proves, at load, that it orders texts as the exported fp32 graph did.

The manifest carries reference examples with the fp32 scores measured at export. Before a model
serves, the chosen backend scores them again and is refused when the order drifts:

- **fp32 graph** (whatever the backend: ONNX Runtime fp32, OpenVINO f32 or bf16): Spearman ≥ 0.999
  against the reference scores and decision agreement ≥ 0.995 on reference pairs. A faithful fp32
  runtime lands at 1.0; bf16 at ~0.9999; a graph with a damaged weight or an op the runtime
  mistranslates lands far below.
- **int8 graph**: the reference scores are still fp32, so int8's own rounding is in the figures.
  That loss was already accepted at export, on a larger held-out set, and recorded in the
  manifest (``parity`` entry with reference ``onnx-fp32``). Here the backend must land near that
  record: each figure at least the recorded one minus :data:`INT8_SLACK` (the reference examples
  are a subset of the export's set, so their figures scatter around it). A broken runtime or
  graph still falls far below.

Reference pairs are the RM's real decisions: two responses to the same prompt. When no two
examples share a prompt (plain texts, one response per prompt), every pair of examples counts.
Pairs whose fp32 scores lie closer than :data:`TIE_FRACTION` of the scores' standard deviation
are ties and skipped: the model has made no decision there to agree with, and bf16's own rounding
(a few thousandths of a score) would flip such pairs at random without changing any outcome.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from reward_service.repository import Manifest
from reward_service.stats import decision_agreement, spearman
from reward_service.template import Item

SPEARMAN_FLOOR = 0.999
AGREEMENT_FLOOR = 0.995
TIE_FRACTION = 0.01
INT8_SLACK = 0.05
INT8_EXPORT_FLOOR = 0.98
"""What the exporter demands of int8 agreement; used when a manifest lacks its int8 record."""


@dataclass(frozen=True)
class Thresholds:
    spearman: float
    agreement: float
    basis: str  # why these floors, for the error message


@dataclass(frozen=True)
class ParityReport:
    backend: str  # "openvino/bf16" and the like
    n_examples: int
    n_pairs: int
    spearman: float
    agreement: float
    max_abs_diff: float
    thresholds: Thresholds

    @property
    def passed(self) -> bool:
        # NaN (no pairs) compares False, so a set without decisions cannot pass on agreement.
        return (
            self.spearman >= self.thresholds.spearman
            and self.agreement >= self.thresholds.agreement
        )

    def describe(self) -> str:
        return (
            f"{self.backend}: Spearman {self.spearman:.5f} (floor {self.thresholds.spearman:.4f}), "
            f"decision agreement {self.agreement:.4f} on {self.n_pairs} pairs "
            f"(floor {self.thresholds.agreement:.4f}), max |Δ| {self.max_abs_diff:.4f} over "
            f"{self.n_examples} reference examples; {self.thresholds.basis}"
        )


def reference_pairs(prompts: Sequence[str], scores: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs (i, j) sharing a prompt, or all pairs if none do; ties dropped."""
    by_prompt: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_prompt.setdefault(prompt, []).append(index)
    groups = [g for g in by_prompt.values() if len(g) > 1] or [list(range(len(prompts)))]
    tie = TIE_FRACTION * float(np.std(scores))
    return [
        (i, j)
        for group in groups
        for i, j in itertools.combinations(group, 2)
        if abs(scores[i] - scores[j]) > tie
    ]


def thresholds_for(manifest: Manifest) -> Thresholds:
    if manifest.precision != "int8":
        return Thresholds(SPEARMAN_FLOOR, AGREEMENT_FLOOR, "fp32 graph: fixed floors")
    record = next((p for p in manifest.parity if p.reference == "onnx-fp32"), None)
    spearman_at_export = record.spearman if record and record.spearman is not None else None
    agreement_at_export = record.decision_agreement if record else None
    return Thresholds(
        (spearman_at_export if spearman_at_export is not None else INT8_EXPORT_FLOOR) - INT8_SLACK,
        (agreement_at_export if agreement_at_export is not None else INT8_EXPORT_FLOOR)
        - INT8_SLACK,
        f"int8 graph: export-time record minus {INT8_SLACK}",
    )


def measure(
    reference: np.ndarray,
    candidate: np.ndarray,
    pairs: list[tuple[int, int]],
    thresholds: Thresholds,
    backend: str,
) -> ParityReport:
    return ParityReport(
        backend=backend,
        n_examples=len(reference),
        n_pairs=len(pairs),
        spearman=spearman(reference, candidate),
        agreement=decision_agreement(reference, candidate, pairs),
        max_abs_diff=float(np.max(np.abs(reference - candidate))),
        thresholds=thresholds,
    )


def run_gate(
    manifest: Manifest, score: Callable[[list[Item]], np.ndarray], backend: str
) -> ParityReport | None:
    """Score the manifest's reference examples; None when it has none to prove anything with."""
    if len(manifest.reference) < 2:
        return None
    items: list[Item] = [(ex.prompt, ex.response) for ex in manifest.reference]
    reference = np.array([ex.score for ex in manifest.reference], dtype=np.float64)
    candidate = np.asarray(score(items), dtype=np.float64)
    pairs = reference_pairs([ex.prompt for ex in manifest.reference], reference)
    return measure(reference, candidate, pairs, thresholds_for(manifest), backend)
