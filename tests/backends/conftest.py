"""Fixtures for backend tests: copies of the tiny model, one int8, one with a damaged weight."""

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


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    """A private copy of the tiny model's version folder that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny" / "1"))


@pytest.fixture
def damaged_copy(model_copy: Path) -> Path:
    damage_weights(model_copy)
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
