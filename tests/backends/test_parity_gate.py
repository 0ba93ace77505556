"""The parity gate lets faithful backends serve and refuses a model that scores differently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reward_service.backends import base
from reward_service.backends.cpu import CpuFeatures
from reward_service.backends.parity import (
    AGREEMENT_FLOOR,
    INT8_SLACK,
    SPEARMAN_FLOOR,
    Thresholds,
    measure,
    reference_pairs,
    thresholds_for,
)
from reward_service.repository import ModelLoadError, load_manifest
from reward_service.scorer import LoadedModel

FIXED = Thresholds(SPEARMAN_FLOOR, AGREEMENT_FLOOR, "test")


def test_pairs_share_a_prompt() -> None:
    prompts = ["a", "a", "b", "b", "b", "c"]
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert reference_pairs(prompts, scores) == [(0, 1), (2, 3), (2, 4), (3, 4)]


def test_pairs_fall_back_to_all_pairs_without_shared_prompts() -> None:
    assert reference_pairs(["a", "b", "c"], np.array([1.0, 2.0, 3.0])) == [(0, 1), (0, 2), (1, 2)]


def test_tied_reference_pairs_are_skipped() -> None:
    # std 1.0: gaps up to 0.01 are ties; 0.02 is a decision.
    scores = np.array([-1.0, -1.0 + 0.009, 1.0, 1.0 + 0.02])
    scores = scores / scores.std()
    pairs = reference_pairs(["a"] * 4, scores)
    assert (0, 1) not in pairs and (2, 3) in pairs
    assert len(pairs) == 5


def test_measure_passes_a_faithful_copy_and_refuses_a_swap() -> None:
    reference = np.linspace(-2, 2, 40)
    pairs = [(i, i + 1) for i in range(0, 40, 2)]
    assert measure(reference, reference + 1e-4, pairs, FIXED, "x").passed
    swapped = reference.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # one decision flipped out of 20
    report = measure(reference, swapped, pairs, FIXED, "x")
    assert report.agreement == pytest.approx(0.95)
    assert not report.passed


def test_a_set_without_pairs_cannot_pass() -> None:
    reference = np.array([1.0, 1.0])
    assert not measure(reference, reference, [], FIXED, "x").passed


def test_fp32_graphs_get_the_fixed_floors(tiny_model_dir: Path) -> None:
    thresholds = thresholds_for(load_manifest(tiny_model_dir))
    assert (thresholds.spearman, thresholds.agreement) == (SPEARMAN_FLOOR, AGREEMENT_FLOOR)


def test_int8_floors_follow_the_export_record(tiny_int8_dir: Path) -> None:
    manifest = load_manifest(tiny_int8_dir)
    (record,) = [p for p in manifest.parity if p.reference == "onnx-fp32"]
    thresholds = thresholds_for(manifest)
    assert thresholds.spearman == pytest.approx(record.spearman - INT8_SLACK)
    assert thresholds.agreement == pytest.approx(record.decision_agreement - INT8_SLACK)
    bare = manifest.model_copy(update={"parity": [p for p in manifest.parity if p is not record]})
    assert thresholds_for(bare).agreement < AGREEMENT_FLOOR


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        ("onnxruntime", {}),
        ("openvino", {"precision": "f32"}),
        ("openvino", {"precision": "bf16"}),
    ],
)
def test_faithful_backends_pass(tiny_model_dir: Path, backend: str, options: dict) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    model = LoadedModel.open(tiny_model_dir, backend=backend, threads=1, **options)
    report = model.parity
    assert report is not None and report.passed
    assert report.n_examples == len(model.manifest.reference) > 0
    assert report.n_pairs > 0


@pytest.mark.parametrize(
    ("backend", "options", "label"),
    [
        ("onnxruntime", {}, "int8"),
        ("openvino", {"precision": "f32"}, "int8"),
    ],
)
def test_int8_graph_passes_on_its_own_record(
    tiny_int8_dir: Path, backend: str, options: dict, label: str
) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    model = LoadedModel.open(tiny_int8_dir, backend=backend, threads=1, **options)
    assert model.backend.precision == label
    assert model.parity is not None and model.parity.passed
    assert model.parity.thresholds.spearman < SPEARMAN_FLOOR


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_gate_refuses_a_damaged_weight(damaged_copy: Path, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    with pytest.raises(ModelLoadError, match="tiny@1: parity gate refused") as caught:
        LoadedModel.open(damaged_copy, backend=backend, threads=1)
    assert "\n" not in str(caught.value)


def test_fallback_cannot_rescue_a_damaged_graph(damaged_copy: Path) -> None:
    pytest.importorskip("openvino")
    with pytest.raises(ModelLoadError, match="onnxruntime/fp32"):
        LoadedModel.open(damaged_copy, backend="openvino", fallback=True, threads=1)


def test_fallback_replaces_a_backend_that_drifts(tiny_model_dir: Path, monkeypatch) -> None:
    """A runtime that mistranslates an op cannot be built on demand; shifting its outputs stands
    in for one, while ONNX Runtime stays real."""
    pytest.importorskip("openvino")
    from reward_service.backends.openvino import OpenVinoBackend

    real_run = OpenVinoBackend.run
    rng = np.random.default_rng(0)

    def drifting_run(self, feeds):
        scores = real_run(self, feeds)
        return scores + rng.normal(0, float(scores.std()) + 1e-3, scores.shape).astype(np.float32)

    monkeypatch.setattr(OpenVinoBackend, "run", drifting_run)
    with pytest.raises(ModelLoadError, match="openvino/"):
        LoadedModel.open(tiny_model_dir, backend="openvino", threads=1)
    model = LoadedModel.open(tiny_model_dir, backend="openvino", fallback=True, threads=1)
    assert model.backend.name == "onnxruntime"
    assert model.parity is not None and model.parity.passed
    # auto falls back by itself, unless a precision was named.
    monkeypatch.setattr(base, "host_features", lambda: CpuFeatures(True, True, "test"))
    assert LoadedModel.open(tiny_model_dir, backend="auto", threads=1).backend.name == "onnxruntime"
    with pytest.raises(ModelLoadError, match="openvino/"):
        LoadedModel.open(tiny_model_dir, backend="auto", precision="bf16", threads=1)


def test_fallback_covers_a_missing_extra(tiny_model_dir: Path, without_openvino) -> None:
    model = LoadedModel.open(tiny_model_dir, backend="openvino", fallback=True, threads=1)
    assert model.backend.name == "onnxruntime"


def test_manifest_without_references_skips_the_gate(model_copy: Path) -> None:
    from reward_service.repository import write_manifest

    write_manifest(model_copy, load_manifest(model_copy).model_copy(update={"reference": []}))
    assert LoadedModel.open(model_copy, threads=1).parity is None
