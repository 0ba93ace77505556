"""Which backend runs: explicit choices, what ``auto`` decides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reward_service.backends import BackendError, base, load_backend
from reward_service.backends.base import choose_auto
from reward_service.backends.cpu import CpuFeatures
from reward_service.repository import MODEL_FILE
from reward_service.scorer import LoadedModel

AMX = CpuFeatures(amx=True, avx512_bf16=True, source="test")
ZEN4 = CpuFeatures(amx=False, avx512_bf16=True, source="test")
OLD = CpuFeatures(amx=False, avx512_bf16=False, source="test")


@pytest.mark.parametrize(
    ("graph", "precision", "openvino", "cpu", "expected"),
    [
        ("fp32", None, True, AMX, ("openvino", "bf16")),
        ("fp32", None, True, ZEN4, ("openvino", "bf16")),
        ("fp32", None, True, OLD, ("onnxruntime", None)),
        ("fp32", None, False, AMX, ("onnxruntime", None)),
        ("int8", None, True, AMX, ("onnxruntime", None)),
        ("fp32", "fp32", True, AMX, ("onnxruntime", None)),
        ("fp32", "f32", True, AMX, ("onnxruntime", None)),
        ("fp32", "bf16", True, OLD, ("openvino", "bf16")),
        ("fp32", "BF16", False, OLD, ("openvino", "bf16")),
    ],
)
def test_choose_auto(graph, precision, openvino, cpu, expected) -> None:
    choice = choose_auto(graph, precision, openvino=openvino, cpu=cpu)
    assert (choice.kind, choice.precision) == expected
    assert choice.reason


def test_explicit_onnxruntime(tiny_model_dir: Path) -> None:
    backend = load_backend(tiny_model_dir / MODEL_FILE, "onnxruntime", threads=1)
    assert (backend.name, backend.precision, backend.device) == (
        "onnxruntime",
        "fp32",
        "CPUExecutionProvider",
    )


@pytest.mark.parametrize(("asked", "runs"), [("f32", "fp32"), ("fp32", "fp32"), ("bf16", None)])
def test_explicit_openvino_reports_the_precision_it_runs(
    tiny_model_dir: Path, asked: str, runs: str | None
) -> None:
    pytest.importorskip("openvino")
    backend = load_backend(tiny_model_dir / MODEL_FILE, "openvino", threads=1, precision=asked)
    assert (backend.name, backend.device) == ("openvino", "CPU")
    # bf16 runs only where the CPU has the units; elsewhere OpenVINO computes in fp32 and the
    # label must say so rather than repeat the request.
    assert backend.precision == (runs or ("bf16" if base.host_features().fast_bf16 else "fp32"))


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


def test_auto_without_the_extra_uses_onnxruntime(tiny_model_dir: Path, without_openvino) -> None:
    assert not base.openvino_installed()
    assert load_backend(tiny_model_dir / MODEL_FILE, "auto").name == "onnxruntime"


def test_auto_asked_for_bf16_without_the_extra_fails(
    tiny_model_dir: Path, without_openvino
) -> None:
    with pytest.raises(BackendError, match="not installed"):
        load_backend(tiny_model_dir / MODEL_FILE, "auto", precision="bf16")


@pytest.mark.parametrize(("cpu", "expected"), [(AMX, "openvino"), (OLD, "onnxruntime")])
def test_auto_follows_the_cpu(tiny_model_dir: Path, monkeypatch, cpu, expected) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setattr(base, "host_features", lambda: cpu)
    model = LoadedModel.open(tiny_model_dir, backend="auto", threads=1)
    assert model.backend.name == expected
    assert model.parity is not None and model.parity.passed


def test_auto_keeps_int8_on_onnxruntime(tiny_int8_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(base, "host_features", lambda: AMX)
    model = LoadedModel.open(tiny_int8_dir, backend="auto", threads=1)
    assert (model.backend.name, model.backend.precision) == ("onnxruntime", "int8")
