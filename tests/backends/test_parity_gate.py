"""The parity gate lets faithful runtimes serve on every CPU and refuses one that scores
differently: the rule on synthetic scores, then real graphs, real runtimes and real damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reward_service.backends.parity import (
    MIN_REFERENCE,
    REL_TOLERANCE,
    expected_scores,
    measure,
    reference_pairs,
    relative_tolerance,
)
from reward_service.repository import ModelLoadError, load_manifest, write_manifest
from reward_service.scorer import LoadedModel
from reward_service.stats import spearman


def gate(reference: np.ndarray, candidate: np.ndarray, prompts=None):
    prompts = prompts or [str(i // 2) for i in range(len(reference))]
    return measure(reference, candidate, prompts, relative_tolerance(reference), "test", "x")


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


@pytest.mark.parametrize("scale", [0.05, 1.0, 40.0])
def test_the_tolerance_follows_the_spread(scale: float) -> None:
    reference = np.random.default_rng(0).normal(0.0, scale, 64)
    sigma = float(reference.std())
    signs = np.where(np.arange(64) % 2 == 0, 1.0, -1.0)
    assert gate(reference, reference + 0.09 * sigma * signs).passed
    report = gate(reference, reference + 0.11 * sigma * signs)
    assert not report.passed
    assert report.tolerance == pytest.approx(REL_TOLERANCE * sigma, abs=2e-5)


def test_near_ties_reshuffled_pass_while_spearman_drops() -> None:
    """The Xeon failure: scores in tight clusters, bf16 reorders inside a cluster, no decision
    between clusters changes. A fixed Spearman floor refused this; the gate must not."""
    rng = np.random.default_rng(1)
    clusters = np.repeat([-2.0, -0.5, 1.0, 2.5], 16)
    reference = clusters + rng.normal(0.0, 0.01, 64)
    candidate = clusters + rng.normal(0.0, 0.01, 64)  # the order inside each cluster is new
    report = gate(reference, candidate)
    assert report.passed
    assert spearman(reference, candidate) < 0.999


def test_one_real_decision_reversed_is_refused() -> None:
    reference = np.linspace(-2.0, 2.0, 40)
    swapped = reference.copy()
    swapped[[0, 39]] = swapped[[39, 0]]
    assert not gate(reference, swapped).passed


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_score_never_passes(bad: float) -> None:
    reference = np.linspace(-2.0, 2.0, 40)
    candidate = reference.copy()
    candidate[7] = bad
    assert not gate(reference, candidate).passed


def test_fp32_graphs_are_held_to_their_own_scores(tiny_model_dir: Path) -> None:
    manifest = load_manifest(tiny_model_dir)
    scores, tolerance, basis = expected_scores(manifest)
    np.testing.assert_array_equal(scores, [ex.score for ex in manifest.reference])
    assert tolerance == pytest.approx(REL_TOLERANCE * scores.std(), rel=1e-3)
    assert "fp32 graph" in basis


def test_int8_graphs_are_held_to_their_export_time_scores(tiny_int8_dir: Path) -> None:
    manifest = load_manifest(tiny_int8_dir)
    scores, _, basis = expected_scores(manifest)
    np.testing.assert_array_equal(scores, [ex.graph_score for ex in manifest.reference])
    assert "int8 graph" in basis
    # A manifest written before graph scores were recorded falls back to fp32 scores and the
    # export's own int8 deviation.
    old = manifest.model_copy(
        update={
            "reference": [ex.model_copy(update={"graph_score": None}) for ex in manifest.reference]
        }
    )
    (record,) = [p for p in manifest.parity if p.reference == "onnx-fp32"]
    scores, tolerance, basis = expected_scores(old)
    np.testing.assert_array_equal(scores, [ex.score for ex in manifest.reference])
    assert tolerance >= record.max_abs_diff
    assert "export's int8 deviation" in basis


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
    assert report.n_examples == len(model.manifest.reference) >= MIN_REFERENCE
    assert report.max_abs_diff <= report.tolerance


def test_bf16_arithmetic_passes_on_any_cpu(bf16_copy: Path) -> None:
    """bf16 matrix-unit rounding, emulated with fp32 kernels, so this holds on every machine,
    with or without AMX or AVX-512-bf16."""
    model = LoadedModel.open(bf16_copy, backend="onnxruntime", threads=1)
    report = model.parity
    assert report is not None and report.passed
    assert report.max_abs_diff > 1e-4  # the rounding really happened


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


def test_fallback_replaces_a_backend_that_drifts(
    tiny_model_dir: Path, monkeypatch, cpu_class
) -> None:
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
    assert "fell back" in model.selected_because
    # auto serves the candidate that passes and says why the other did not ...
    cpu_class("amx")
    model = LoadedModel.open(tiny_model_dir, backend="auto", threads=1)
    assert model.backend.name == "onnxruntime"
    assert "openvino/bf16 refused" in model.selected_because
    # ... unless a precision was named: then there is no other candidate.
    with pytest.raises(ModelLoadError, match="openvino/"):
        LoadedModel.open(tiny_model_dir, backend="auto", precision="bf16", threads=1)


def test_fallback_covers_a_missing_extra(tiny_model_dir: Path, without_openvino) -> None:
    model = LoadedModel.open(tiny_model_dir, backend="openvino", fallback=True, threads=1)
    assert model.backend.name == "onnxruntime"


@pytest.mark.parametrize("kept", [0, MIN_REFERENCE - 1])
def test_a_manifest_without_enough_references_is_refused(model_copy: Path, kept: int) -> None:
    manifest = load_manifest(model_copy)
    write_manifest(model_copy, manifest.model_copy(update={"reference": manifest.reference[:kept]}))
    with pytest.raises(ModelLoadError, match="re-export the model with `reward-service export`"):
        LoadedModel.open(model_copy, threads=1)
