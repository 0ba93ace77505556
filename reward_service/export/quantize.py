"""int8 for CPUs: calibrated static quantization of an exported fp32 graph, and its publish gate.

The method was picked by measurement on reward models trained like the demo's (docs/backends.md,
"int8"): ONNX Runtime's dynamic per-channel int8 ordered 0.984 of 500 held-out pairs like fp32
and static min/max QDQ 0.95, both too close to or under the 0.98 bar; NNCF's transformer
recipe (SmoothQuant, then activation ranges calibrated on a few hundred texts, the first and
last layers' sensitive ops kept out) ordered 0.996 and is faster than either on OpenVINO.

The gate is sound (it compares decisions with fp32 on pairs the calibration never saw) and sure
(it publishes only when a one-sided 95 % confidence bound clears the bar, so a lucky draw of
pairs cannot pass a graph that is really worse). Pairs fp32 itself scores within 1 % of a
standard deviation are not decisions: any rounding flips a coin on them, in fp32 as well.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reward_service.stats import wilson_interval

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.98
CONFIDENCE_Z = 1.645  # one-sided 95 %
TIE_FRACTION = 0.01
CALIBRATION_SHARE = 4  # one group in four calibrates, the rest judge
MAX_CALIBRATION_TEXTS = 300


class QuantizeError(RuntimeError):
    """int8 could not be produced, or was produced and refused by its gate."""


def split_for_calibration(groups: list) -> tuple[list, list]:
    """Disjoint calibration and gate groups, chosen by position so the split is reproducible."""
    calibration = groups[::CALIBRATION_SHARE]
    gate = [g for i, g in enumerate(groups) if i % CALIBRATION_SHARE]
    return calibration, gate


def quantize_int8(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """Write ``src`` quantized to int8 (QDQ) as ``dst``, calibrated on ``calibration`` feeds."""
    try:
        import nncf
    except ImportError as exc:
        raise QuantizeError(
            "int8 export needs NNCF: pip install 'reward-service[train]' (it lists nncf)"
        ) from exc
    import onnx

    if not calibration:
        raise QuantizeError("int8 export needs calibration texts; pass --eval-data")
    quantized = nncf.quantize(
        onnx.load(str(src)),
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calibration),
    )
    onnx.save(quantized, str(dst))


@dataclass(frozen=True)
class Verdict:
    """What the int8 gate saw and decided; ``reason`` is the sentence a user reads."""

    agreement: float
    decisive_pairs: int
    ties: int
    low: float
    high: float
    passed: bool
    reason: str


def judge_int8(fp32: np.ndarray, int8: np.ndarray, pairs: list[tuple[int, int]]) -> Verdict:
    """Publish iff the lower confidence bound of decision agreement with fp32 clears the bar."""
    fp32, int8 = np.asarray(fp32, np.float64), np.asarray(int8, np.float64)
    if pairs:
        i, j = np.asarray(pairs).T
    else:
        i = j = np.zeros(0, dtype=int)
    margin = fp32[i] - fp32[j]
    decisive = np.abs(margin) > TIE_FRACTION * max(float(fp32.std()), 1e-12)
    same = np.sign(margin[decisive]) == np.sign(int8[i][decisive] - int8[j][decisive])
    k, n = int(same.sum()), int(decisive.sum())
    low, high = wilson_interval(k, n, CONFIDENCE_Z)
    agreement = k / n if n else float("nan")
    seen = (
        f"int8 orders {k} of {n} held-out decisive pairs like fp32 ({agreement:.3f}; "
        f"95% bounds {low:.3f}–{high:.3f}; {len(pairs) - n} near-ties left out)"
    )
    if low >= MIN_AGREEMENT:
        return Verdict(agreement, n, len(pairs) - n, low, high, True, seen)
    fallback = (
        "export without --quantize and serve with --backend auto, which runs OpenVINO bf16 "
        "on CPUs with AVX-512-bf16 or AMX (docs/backends.md)"
    )
    if high < MIN_AGREEMENT:
        reason = f"{seen}: surely below {MIN_AGREEMENT}; not published. Try instead: {fallback}"
    else:
        need = pairs_needed(agreement)
        more = (
            f"pass --eval-data with about {need} held-out pairs to settle it"
            if need
            else "more pairs would not settle it at this agreement"
        )
        reason = (
            f"{seen}: too few pairs to be sure it reaches {MIN_AGREEMENT}; not published. "
            f"Try: {more}, or {fallback}"
        )
    return Verdict(agreement, n, len(pairs) - n, low, high, False, reason)


def pairs_needed(agreement: float) -> int | None:
    """Decisive pairs at which this agreement's lower bound would clear the bar (normal approx.)."""
    if not agreement > MIN_AGREEMENT:
        return None
    gap = agreement - MIN_AGREEMENT
    return math.ceil(CONFIDENCE_Z**2 * MIN_AGREEMENT * (1 - MIN_AGREEMENT) / gap**2) + 1
