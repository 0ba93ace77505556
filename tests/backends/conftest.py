"""Fixtures for backend tests: copies of the tiny model (int8, damaged, bf16-emulated) and a
way to pin the CPU class the probe reports."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from reward_service.repository import (
    MODEL_FILE,
    load_manifest,
    sha256_file,
    write_manifest,
)


def damage_weights(folder: Path, scale: float = 0.3, seed: int = 0) -> None:
    """Add noise to every weight matrix, embeddings included, and re-sign the manifest.

    Stands in for a bad conversion (a broken quantizer, a mistranslated op). The sha256 is
    updated on purpose: the file is then exactly what the manifest vouches for, so only the
    parity gate stands between this model and the clients.
    """
    import onnx
    from onnx import numpy_helper

    path = folder / MODEL_FILE
    graph = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    for tensor in graph.graph.initializer:
        if len(tensor.dims) != 2 or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        noisy = values + rng.normal(0.0, scale * float(values.std()), values.shape)
        tensor.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), tensor.name))
    onnx.save(graph, str(path))
    manifest = load_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={"sha256": sha256_file(path)}))


def round_to_bf16(values: np.ndarray) -> np.ndarray:
    """fp32 values rounded to the nearest bf16 (ties to even), kept as fp32."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def emulate_bf16(folder: Path) -> None:
    """Make the graph compute as a bf16 matrix unit does, on any CPU, and re-sign it.

    AMX and AVX-512-bf16 multiply bf16 inputs and accumulate in fp32. Rounding every weight to
    bf16 and casting both inputs of every MatMul through bf16 reproduces that rounding with
    ONNX Runtime's fp32 kernels, so the gate can be tested against real bf16 error on a
    machine that has no bf16 units at all.
    """
    import onnx
    from onnx import helper, numpy_helper

    path = folder / MODEL_FILE
    graph = onnx.load(str(path))
    for tensor in graph.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            rounded = round_to_bf16(numpy_helper.to_array(tensor))
            tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
    nodes = []
    for index, node in enumerate(graph.graph.node):
        if node.op_type in ("MatMul", "Gemm"):
            for k, name in enumerate(list(node.input[:2])):
                low, back = f"bf16_emulation_{index}_{k}", f"bf16_emulation_{index}_{k}_back"
                nodes.append(helper.make_node("Cast", [name], [low], to=onnx.TensorProto.BFLOAT16))
                nodes.append(helper.make_node("Cast", [low], [back], to=onnx.TensorProto.FLOAT))
                node.input[k] = back
        nodes.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    onnx.save(graph, str(path))
    manifest = load_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={"sha256": sha256_file(path)}))


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    """A private copy of the tiny model's version folder that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny" / "1"))


@pytest.fixture
def damaged_copy(model_copy: Path) -> Path:
    damage_weights(model_copy)
    return model_copy


@pytest.fixture
def bf16_copy(model_copy: Path) -> Path:
    emulate_bf16(model_copy)
    return model_copy


@pytest.fixture(scope="session")
def tiny_int8_dir(tmp_path_factory, tiny_checkpoint) -> Path:
    from reward_service.export.onnx_export import export

    repo = tmp_path_factory.mktemp("int8-repo")
    folder, _ = export(tiny_checkpoint, repo, "tiny-int8", version=1, quantize="int8")
    return folder


@pytest.fixture
def without_openvino(monkeypatch):
    """Make ``import openvino`` fail as it does where the extra is not installed."""
    monkeypatch.setitem(sys.modules, "openvino", None)


@pytest.fixture
def cpu_class(monkeypatch):
    """Pin the CPU class the probe reports, as REWARD_SERVICE_CPU_FEATURES does for operators."""
    from reward_service.backends.cpu import OVERRIDE_ENV, host_features

    def pin(value: str) -> None:
        monkeypatch.setenv(OVERRIDE_ENV, value)
        host_features.cache_clear()

    yield pin
    host_features.cache_clear()


@pytest.fixture
def real_cpuinfo(monkeypatch):
    """The probe as it runs without an override (the CI step sets one for whole runs)."""
    from reward_service.backends.cpu import OVERRIDE_ENV, host_features

    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    host_features.cache_clear()
    yield
    host_features.cache_clear()
