"""The int8 export: its publish gate (pure statistics) and the export that uses it."""

from __future__ import annotations

import numpy as np
import pytest

from reward_service.export import quantize
from reward_service.export.onnx_export import ExportError, export
from reward_service.export.quantize import (
    MIN_AGREEMENT,
    judge_int8,
    pairs_needed,
    split_for_calibration,
)
from reward_service.repository import load_manifest
from reward_service.scorer import LoadedModel
from reward_service.stats import wilson_interval


def scores_with_flips(n_pairs: int, flips: int, seed: int = 0) -> tuple:
    """fp32 scores of 2 × n_pairs items, and a copy in which ``flips`` pairs are reversed."""
    rng = np.random.default_rng(seed)
    fp32 = rng.normal(size=2 * n_pairs)
    pairs = [(2 * k, 2 * k + 1) for k in range(n_pairs)]
    decisive = [k for k in range(n_pairs) if abs(fp32[2 * k] - fp32[2 * k + 1]) > 0.05]
    other = fp32.copy()
    for k in decisive[:flips]:
        other[2 * k], other[2 * k + 1] = other[2 * k + 1], other[2 * k]
    return fp32, other, pairs


def test_wilson_interval_brackets_the_proportion_and_narrows_with_n() -> None:
    lo_small, hi_small = wilson_interval(99, 100, 1.645)
    lo_big, hi_big = wilson_interval(990, 1000, 1.645)
    assert lo_small < 0.99 < hi_small and lo_big < 0.99 < hi_big
    assert hi_big - lo_big < hi_small - lo_small
    assert wilson_interval(100, 100, 1.645)[1] == 1.0
    assert wilson_interval(0, 0, 1.645) == (0.0, 1.0)


def test_gate_passes_a_graph_that_keeps_decisions_on_enough_pairs() -> None:
    fp32, same, pairs = scores_with_flips(600, flips=1)
    verdict = judge_int8(fp32, same, pairs)
    assert verdict.passed and verdict.low >= MIN_AGREEMENT
    assert verdict.decisive_pairs + verdict.ties == len(pairs)


def test_gate_is_not_sure_on_few_pairs_and_says_how_many_would_do() -> None:
    fp32, same, pairs = scores_with_flips(60, flips=0)
    verdict = judge_int8(fp32, same, pairs)
    assert not verdict.passed and verdict.agreement == 1.0  # perfect, but only ~60 pairs
    assert "too few pairs to be sure" in verdict.reason
    assert "--eval-data" in verdict.reason and "--backend auto" in verdict.reason


def test_gate_refuses_what_is_surely_below_the_bar() -> None:
    fp32, worse, pairs = scores_with_flips(800, flips=60)
    verdict = judge_int8(fp32, worse, pairs)
    assert not verdict.passed and verdict.high < MIN_AGREEMENT
    assert "surely below" in verdict.reason and "--backend auto" in verdict.reason


def test_near_ties_are_not_decisions() -> None:
    fp32 = np.array([0.0, 1e-4, 0.0, 2.0] * 200)
    pairs = [(4 * k, 4 * k + 1) for k in range(200)] + [(4 * k + 2, 4 * k + 3) for k in range(200)]
    flipped = fp32.copy()
    flipped[0::4], flipped[1::4] = fp32[1::4], fp32[0::4]  # every near-tie reversed
    verdict = judge_int8(fp32, flipped, pairs)
    assert verdict.ties == 200 and verdict.decisive_pairs == 200
    assert verdict.agreement == 1.0


def test_pairs_needed_grows_as_agreement_nears_the_bar() -> None:
    assert pairs_needed(0.975) is None and pairs_needed(MIN_AGREEMENT) is None
    assert pairs_needed(0.985) > pairs_needed(0.99) > pairs_needed(0.999)


def test_calibration_and_gate_groups_are_disjoint() -> None:
    groups = list(range(10))
    calibration, gate = split_for_calibration(groups)
    assert set(calibration).isdisjoint(gate) and sorted(calibration + gate) == groups


def test_int8_export_refused_by_its_gate_publishes_nothing(
    tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)
    with pytest.raises(ExportError, match=r"surely below 1\.01; not published"):
        export(tiny_checkpoint, tmp_path, "tiny8", quantize="int8")
    assert not (tmp_path / "tiny8").exists()


def test_int8_export_records_its_gate_and_serves(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    # The tiny checkpoint holds 32 held-out pairs, too few for the real bar; what is tested here
    # is what a published int8 version records and that it loads through its own parity gate.
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.5)
    folder, manifest = export(tiny_checkpoint, tmp_path, "tiny8", quantize="int8")
    record = manifest.parity[1]
    assert manifest.precision == "int8" and record.reference == "onnx-fp32"
    # One held-out group in four calibrates; the gate judged only the others.
    assert record.decisive_pairs is not None and record.decisive_pairs <= 24
    assert 0.5 <= record.agreement_low <= record.decision_agreement <= 1.0
    assert load_manifest(folder).parity[1] == record
    assert LoadedModel.open(folder, backend="onnxruntime").backend.precision == "int8"
