"""The parity gate: a backend proves, at load, that it scores as the exported graph did.

The manifest carries reference examples with the scores the published graph gave at export.
Before a model serves, the chosen backend scores them again. It passes when **every** reference
score lands within a tolerance of the recorded one:

    tolerance = REL_TOLERANCE × std(reference scores)

Why this rule, and not a fixed Spearman floor:

- It decides by what matters. A runtime whose scores all lie within τ of the graph's cannot
  reverse any decision the graph makes by more than 2τ: the ones it may flip are near-ties
  the model itself barely distinguishes. A fixed Spearman floor also counts near-ties, so it
  refused faithful bf16 runtimes on models whose scores are bunched (their ranks reshuffle
  inside a cluster while no real decision changes), and it passed or failed depending on
  which x86 CPU ran it.
- It follows from the reference set. Tolerance scales with how spread the model's own scores
  are, so a model with logits of ±0.05 and one with ±5 are held to the same relative standard.
- It keeps its teeth. bf16 runtimes land at 0.5–5 % of the spread on the models we measured
  (docs/backends.md), fp32 runtimes at about 1e-6 of it; weights perturbed by 3 % of their
  spread (a broken conversion) already land above 15 %, and a mistranslated op further still.
  Non-finite scores never pass.

Int8 graphs are judged against their own export-time scores (``ReferenceExample.graph_score``),
so int8's rounding, already accepted by the exporter's agreement gate on a larger held-out set,
is not charged twice; only the runtime's reproduction of that graph is checked here.
Manifests from before that field fall back to the fp32 scores with the export's recorded int8
deviation as the tolerance.

Spearman and decision agreement on the reference pairs are reported alongside for people,
never used to decide.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from reward_service.repository import Manifest, ModelLoadError
from reward_service.stats import decision_agreement, spearman
from reward_service.template import Item

REL_TOLERANCE = 0.1
"""Largest deviation allowed, as a fraction of the reference scores' standard deviation."""
ABS_FLOOR = 1e-5
"""Float noise allowance for a model whose scores barely vary."""
INT8_RECORD_SLACK = 1.5
"""Older int8 manifests: the runtime may deviate from fp32 up to this times the export record
(another CPU's integer kernels round the dynamic activation scales slightly differently)."""
MIN_REFERENCE = 8
TIE_FRACTION = 0.01


@dataclass(frozen=True)
class ParityReport:
    backend: str  # "openvino/bf16" and the like
    n_examples: int
    max_abs_diff: float
    tolerance: float
    basis: str  # how the tolerance was set, for the log and the error message
    spearman: float
    agreement: float
    n_pairs: int

    @property
    def passed(self) -> bool:
        # NaN compares False: a backend that returns a non-finite score never passes.
        return bool(self.max_abs_diff <= self.tolerance)

    def describe(self) -> str:
        return (
            f"{self.backend}: max |Δ| {self.max_abs_diff:.4g} over {self.n_examples} reference "
            f"examples (tolerance {self.tolerance:.4g} = {self.basis}); for information: "
            f"Spearman {self.spearman:.5f}, decision agreement {self.agreement:.4f} "
            f"on {self.n_pairs} pairs"
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-safe figures: a statistic with nothing to measure is null, never NaN."""
        figures = {
            "backend": self.backend,
            "passed": self.passed,
            "n_examples": self.n_examples,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "basis": self.basis,
            "spearman": self.spearman,
            "decision_agreement": self.agreement,
            "n_pairs": self.n_pairs,
        }
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in figures.items()
        }


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


def relative_tolerance(reference: np.ndarray) -> float:
    return REL_TOLERANCE * float(np.std(reference)) + ABS_FLOOR


def expected_scores(manifest: Manifest) -> tuple[np.ndarray, float, str]:
    """What the backend must reproduce, the tolerance, and why that tolerance."""
    fp32 = np.array([ex.score for ex in manifest.reference], dtype=np.float64)
    recorded = [ex.graph_score for ex in manifest.reference]
    graph = None
    if manifest.precision == "fp32":
        graph = fp32
    elif all(s is not None for s in recorded):
        graph = np.array(recorded, dtype=np.float64)
    if graph is not None:
        basis = f"{REL_TOLERANCE} × std of the {manifest.precision} graph's reference scores"
        return graph, relative_tolerance(graph), basis
    record = next((p for p in manifest.parity if p.reference == "onnx-fp32"), None)
    if record is None:
        raise ModelLoadError(
            f"{manifest.key}: int8 manifest records neither its own reference scores nor its "
            "export-time deviation from fp32; re-export it with `reward-service export`"
        )
    tolerance = max(INT8_RECORD_SLACK * record.max_abs_diff, relative_tolerance(fp32))
    return fp32, tolerance, f"{INT8_RECORD_SLACK} × the export's int8 deviation from fp32"


def measure(
    reference: np.ndarray,
    candidate: np.ndarray,
    prompts: Sequence[str],
    tolerance: float,
    basis: str,
    backend: str,
) -> ParityReport:
    pairs = reference_pairs(prompts, reference)
    finite = np.all(np.isfinite(candidate))
    return ParityReport(
        backend=backend,
        n_examples=len(reference),
        max_abs_diff=float(np.max(np.abs(reference - candidate))) if finite else float("nan"),
        tolerance=tolerance,
        basis=basis,
        spearman=spearman(reference, candidate) if finite else float("nan"),
        agreement=decision_agreement(reference, candidate, pairs),
        n_pairs=len(pairs),
    )


def run_gate(
    manifest: Manifest, score: Callable[[list[Item]], np.ndarray], backend: str
) -> ParityReport:
    """Score the manifest's reference examples; a manifest without enough of them is refused."""
    if len(manifest.reference) < MIN_REFERENCE:
        raise ModelLoadError(
            f"{manifest.key}: manifest holds {len(manifest.reference)} reference examples, "
            f"fewer than the {MIN_REFERENCE} the parity gate needs to prove a backend; "
            "re-export the model with `reward-service export`, which records them"
        )
    reference, tolerance, basis = expected_scores(manifest)
    items: list[Item] = [(ex.prompt, ex.response) for ex in manifest.reference]
    candidate = np.asarray(score(items), dtype=np.float64)
    prompts = [ex.prompt for ex in manifest.reference]
    return measure(reference, candidate, prompts, tolerance, basis, backend)
