"""Which backend runs: explicit choices, what ``auto`` may choose from, how it picks, and
clear errors. Selection logic pins the CPU class; nothing here depends on the real CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from reward_service import scorer
from reward_service.backends import BackendError, load_backend
from reward_service.backends.base import auto_candidates
from reward_service.backends.cpu import CpuFeatures, features_from_flags, flags_from_cpuinfo
from reward_service.repository import MODEL_FILE
from reward_service.scorer import LoadedModel

AMX = CpuFeatures(amx=True, avx512_bf16=True, source="test")
ZEN4 = CpuFeatures(amx=False, avx512_bf16=True, source="test")
OLD = CpuFeatures(amx=False, avx512_bf16=False, source="test")
BOTH = [("openvino", "bf16"), ("onnxruntime", None)]
ORT = [("onnxruntime", None)]


@pytest.mark.parametrize(
    ("graph", "precision", "openvino", "cpu", "expected"),
    [
        ("fp32", None, True, AMX, BOTH),
        ("fp32", None, True, ZEN4, BOTH),
        ("fp32", None, True, OLD, ORT),
        ("fp32", None, False, AMX, ORT),
        ("int8", None, True, AMX, BOTH),
        ("int8", None, True, OLD, ORT),
        ("fp32", "fp32", True, AMX, ORT),
        ("fp32", "f32", True, AMX, ORT),
        ("fp32", "bf16", True, OLD, [("openvino", "bf16")]),
        ("fp32", "BF16", False, OLD, [("openvino", "bf16")]),
    ],
)
def test_auto_candidates(graph, precision, openvino, cpu, expected) -> None:
    plan = auto_candidates(graph, precision, openvino=openvino, cpu=cpu)
    assert [(c.kind, c.precision) for c in plan] == expected
    assert all(c.reason for c in plan)


def test_explicit_onnxruntime(tiny_model_dir: Path) -> None:
    backend = load_backend(tiny_model_dir / MODEL_FILE, "onnxruntime", threads=1)
    assert (backend.name, backend.precision, backend.device) == (
        "onnxruntime",
        "fp32",
        "CPUExecutionProvider",
    )


def real_bf16_units() -> bool:
    """What the hardware has, whatever class the probe is pinned to."""
    flags = flags_from_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    return features_from_flags(flags, "/proc/cpuinfo").fast_bf16


@pytest.mark.parametrize(("asked", "runs"), [("f32", "fp32"), ("fp32", "fp32"), ("bf16", None)])
def test_explicit_openvino_reports_the_precision_it_runs(
    tiny_model_dir: Path, asked: str, runs: str | None
) -> None:
    pytest.importorskip("openvino")
    backend = load_backend(tiny_model_dir / MODEL_FILE, "openvino", threads=1, precision=asked)
    assert (backend.name, backend.device) == ("openvino", "CPU")
    # bf16 runs only where the CPU has the units; elsewhere OpenVINO computes in fp32 and the
    # label must say so rather than repeat the request.
    assert backend.precision == (runs or ("bf16" if real_bf16_units() else "fp32"))


def test_unknown_backend_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'; choose one of auto"):
        load_backend(tiny_model_dir / MODEL_FILE, "tensorrt")


def test_unknown_precision_is_a_clear_error(tiny_model_dir: Path) -> None:
    pytest.importorskip("openvino")
    with pytest.raises(BackendError, match="unknown precision 'fp8'"):
        load_backend(tiny_model_dir / MODEL_FILE, "openvino", precision="fp8")


def test_onnxruntime_refuses_bf16(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError, match="needs backend 'openvino'"):
        load_backend(tiny_model_dir / MODEL_FILE, "onnxruntime", precision="bf16")


def test_openvino_without_the_extra_says_how_to_install(
    tiny_model_dir: Path, without_openvino
) -> None:
    with pytest.raises(BackendError, match=r"pip install 'rlhf-reward-service\[openvino\]'"):
        load_backend(tiny_model_dir / MODEL_FILE, "openvino")
    with pytest.raises(BackendError, match="not installed"):
        LoadedModel.open(tiny_model_dir, backend="openvino")


def test_auto_without_the_extra_uses_onnxruntime(
    tiny_model_dir: Path, without_openvino, cpu_class
) -> None:
    cpu_class("amx")
    model = LoadedModel.open(tiny_model_dir, backend="auto", threads=1)
    assert model.backend.name == "onnxruntime"
    assert "openvino extra is absent" in model.selected_because


def test_auto_asked_for_bf16_without_the_extra_fails(
    tiny_model_dir: Path, without_openvino
) -> None:
    with pytest.raises(BackendError, match="not installed"):
        LoadedModel.open(tiny_model_dir, backend="auto", precision="bf16")


@pytest.mark.parametrize("winner", ["openvino", "onnxruntime"])
def test_auto_serves_the_faster_candidate(
    tiny_model_dir: Path, monkeypatch, cpu_class, winner: str
) -> None:
    pytest.importorskip("openvino")
    cpu_class("avx512_bf16")

    def fixed_race(models, items, rounds=2):
        return {id(m): 500.0 if m.backend.name == winner else 100.0 for m in models}

    monkeypatch.setattr(scorer, "race", fixed_race)
    model = LoadedModel.open(tiny_model_dir, backend="auto", threads=1)
    assert model.backend.name == winner
    assert model.parity is not None and model.parity.passed
    assert "fastest that passed parity" in model.selected_because
    assert "500 texts/s" in model.selected_because and "100 texts/s" in model.selected_because


def test_auto_race_is_real(tiny_model_dir: Path, cpu_class) -> None:
    """Unpinned timing: whichever wins, the reason names both speeds and the winner's is the
    larger one."""
    pytest.importorskip("openvino")
    cpu_class("amx,avx512_bf16")
    model = LoadedModel.open(tiny_model_dir, backend="auto", threads=1)
    reason = model.selected_because
    speeds = {
        part.split()[0]: float(part.split()[1])
        for part in reason.split("(", 1)[1].split(" on the reference")[0].split(", ")
    }
    assert len(speeds) == 2
    chosen = f"{model.backend.name}/{model.backend.precision}"
    assert speeds[chosen] == max(speeds.values())


def test_auto_without_bf16_units_uses_onnxruntime(tiny_model_dir: Path, cpu_class) -> None:
    cpu_class("none")
    model = LoadedModel.open(tiny_model_dir, backend="auto", threads=1)
    assert model.backend.name == "onnxruntime"
    assert "no bf16 units" in model.selected_because


def test_auto_with_fallback_off_tries_only_the_first_candidate(
    tiny_model_dir: Path, monkeypatch, cpu_class
) -> None:
    pytest.importorskip("openvino")
    cpu_class("amx")
    model = LoadedModel.open(tiny_model_dir, backend="auto", fallback=False, threads=1)
    assert model.backend.name == "openvino"
    assert "fastest" not in model.selected_because


def test_auto_keeps_an_int8_graph_gated(tiny_int8_dir: Path, cpu_class) -> None:
    cpu_class("none")
    model = LoadedModel.open(tiny_int8_dir, backend="auto", threads=1)
    assert (model.backend.name, model.backend.precision) == ("onnxruntime", "int8")
    assert model.parity is not None and model.parity.passed
