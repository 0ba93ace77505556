"""OpenVINO reproduces ONNX Runtime fp32 on the tiny model: exactly in f32, closely in bf16."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from reward_service.backends.parity import REL_TOLERANCE
from reward_service.scorer import LoadedModel

pytest.importorskip("openvino")

SUBJECTS = ["the sea", "my cat", "this town", "the exam", "a long road", "breakfast"]
WORDS = ["calm", "grim", "bright", "awful", "lovely", "dull", "cheerful", "bleak", "fine"]


def held_out_items(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """Texts the reference examples do not contain, of varied length (so varied shapes)."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        subject = str(rng.choice(SUBJECTS))
        words = " and ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 12))))
        items.append((f"What about {subject}?", f"{subject} is {words}."))
    return items


@pytest.fixture(scope="module")
def ort_model(tiny_model_dir: Path) -> LoadedModel:
    return LoadedModel.open(tiny_model_dir, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def items() -> list[tuple[str, str]]:
    return held_out_items(96)


def test_f32_matches_onnxruntime(tiny_model_dir: Path, ort_model, items) -> None:
    model = LoadedModel.open(tiny_model_dir, backend="openvino", precision="f32", threads=1)
    assert model.backend.precision == "fp32"
    np.testing.assert_allclose(model.score(items), ort_model.score(items), atol=1e-4)


def test_bf16_keeps_every_real_decision_on_held_out_items(
    tiny_model_dir: Path, ort_model, items
) -> None:
    """On texts the gate never saw: within the gate's tolerance, and no pair that fp32 scores
    more than twice that apart comes out reversed. (Not Spearman: bf16 may reorder near-ties
    inside a cluster of scores, and how many depends on the CPU's bf16 unit.)"""
    model = LoadedModel.open(tiny_model_dir, backend="openvino", precision="bf16", threads=1)
    reference = ort_model.score(items).astype(np.float64)
    scores = model.score(items).astype(np.float64)
    tolerance = REL_TOLERANCE * reference.std()
    assert np.max(np.abs(scores - reference)) <= tolerance
    i, j = np.triu_indices(len(items), k=1)
    decided = np.abs(reference[i] - reference[j]) > 2 * tolerance
    assert decided.sum() > 1000
    agree = np.sign(reference[i] - reference[j]) == np.sign(scores[i] - scores[j])
    assert agree[decided].all()


def test_one_compile_serves_every_shape(tiny_model_dir: Path, ort_model, items) -> None:
    model = LoadedModel.open(tiny_model_dir, backend="openvino", precision="f32", threads=1)
    for batch_size in (1, 3, 17, 64):
        np.testing.assert_allclose(
            model.score(items, batch_size=batch_size),
            ort_model.score(items, batch_size=batch_size),
            atol=1e-4,
        )


def test_concurrent_callers_get_their_own_answers(tiny_model_dir: Path, items) -> None:
    model = LoadedModel.open(tiny_model_dir, backend="openvino", precision="f32", threads=1)
    batches = [model.encode(items[i : i + 8]).feeds(model.manifest.inputs) for i in range(0, 96, 8)]
    alone = [model.backend.run(feeds) for feeds in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(model.backend.run, batches * 3))
    for got, want in zip(together, alone * 3, strict=True):
        np.testing.assert_array_equal(got, want)
