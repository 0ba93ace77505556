"""Checkpoint → ``models/<name>/<version>/``: trace, (quantize), (optimize), prove parity, publish.

Nothing is published unless it reproduces its reference: fp32 graphs must match PyTorch to
1e-4 on held-out items, int8 graphs must order held-out preference pairs as the fp32 graph does
on at least 98 % of them. Work happens in a hidden temporary folder that is renamed into place
at the end, so a failed or interrupted export never leaves a half-written version behind.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForSequenceClassification

from reward_service.backends.onnxruntime import OrtBackend
from reward_service.checkpoint import (
    TOKENIZER,
    items_and_pairs,
    load_heldout,
    read_info,
)
from reward_service.data.formats import load_groups
from reward_service.repository import (
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    Normalization,
    Parity,
    ReferenceExample,
    check_name,
    next_version,
    now_iso,
    sha256_file,
    version_dir,
    write_manifest,
)
from reward_service.stats import decision_agreement, spearman
from reward_service.template import (
    EncodedBatch,
    InputTemplate,
    Item,
    encode_batch,
    load_tokenizer,
)

log = logging.getLogger(__name__)
FP32_TOLERANCE = 1e-4
INT8_MIN_AGREEMENT = 0.98
N_REFERENCE = 64
BATCH = 32
# ORT's transformer optimizer knows these encoder families as "bert".
FUSABLE = {"bert", "roberta", "xlm-roberta", "electra", "distilbert"}


class ExportError(RuntimeError):
    """The exported graph failed its parity gate or could not be produced."""


class _ScoreGraph(torch.nn.Module):
    """Exposes exactly one float per row, named ``score``, whatever the backbone returns."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors, strict=True))).logits[:, 0]


def input_names(model: torch.nn.Module) -> list[str]:
    """BERT-style encoders take segment ids; decoders and RoBERTa-style ones do not need them."""
    names = ["input_ids", "attention_mask"]
    params = inspect.signature(model.forward).parameters
    if "token_type_ids" in params and getattr(model.config, "type_vocab_size", 0) > 1:
        names.append("token_type_ids")
    return names


def _batches(
    tokenizer: Tokenizer, template: InputTemplate, items: list[Item], pad_id: int
) -> list[EncodedBatch]:
    return [
        encode_batch(tokenizer, template, items[i : i + BATCH], pad_id)
        for i in range(0, len(items), BATCH)
    ]


@torch.inference_mode()
def torch_scores(
    model: torch.nn.Module, batches: list[EncodedBatch], names: list[str]
) -> np.ndarray:
    out = []
    for batch in batches:
        feeds = {k: torch.from_numpy(v) for k, v in batch.feeds(names).items()}
        out.append(model(**feeds).logits[:, 0].float().numpy())
    return np.concatenate(out)


def onnx_scores(path: Path, batches: list[EncodedBatch], names: list[str]) -> np.ndarray:
    backend = OrtBackend(path)
    return np.concatenate([backend.run(batch.feeds(names)) for batch in batches])


def _median_seconds(path: Path, batch: EncodedBatch, names: list[str], repeats: int = 7) -> float:
    backend = OrtBackend(path)
    feeds = batch.feeds(names)
    backend.run(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _trace(model: torch.nn.Module, names: list[str], batch: EncodedBatch, path: Path, opset: int):
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic["score"] = {0: "batch"}
    example = tuple(torch.from_numpy(v) for v in batch.feeds(names).values())
    torch.onnx.export(
        _ScoreGraph(model, names),
        example,
        str(path),
        input_names=names,
        output_names=["score"],
        dynamic_axes=dynamic,
        opset_version=opset,
        dynamo=False,
    )


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights keep ranking agreement markedly closer to fp32 than per-tensor ones.
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)


def _fuse(src: Path, dst: Path, config) -> bool:
    if config.model_type not in FUSABLE:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(src),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    optimized.save_model_to_file(str(dst))
    return True


def _stamp(path: Path, precision: str) -> None:
    """Record the precision inside the graph so a backend can report it without the manifest."""
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {"precision": precision})
    onnx.save(graph, str(path))


def export(
    checkpoint: Path,
    model_repo: Path,
    name: str,
    *,
    version: int | None = None,
    quantize: str | None = None,
    optimize: str = "auto",
    eval_data: Path | None = None,
    max_examples: int = 256,
    opset: int = 17,
) -> tuple[Path, Manifest]:
    checkpoint, model_repo = Path(checkpoint), Path(model_repo)
    check_name(name)
    info = read_info(checkpoint)
    tokenizer = load_tokenizer(checkpoint / TOKENIZER)
    groups = load_groups(eval_data)[1] if eval_data else load_heldout(checkpoint)
    items, pairs = items_and_pairs(groups)
    items = items[:max_examples]
    pairs = [(i, j) for i, j in pairs if j < len(items)]
    if len(items) < 8:
        raise ExportError("need at least 8 held-out items for the parity check; pass --eval-data")

    config = AutoConfig.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation="eager"
    ).eval()
    names = input_names(model)
    batches = _batches(tokenizer, info.template, items, info.pad_token_id)
    reference = torch_scores(model, batches, names)

    version = version or next_version(model_repo, name)
    final_dir = version_dir(model_repo, name, version)
    if final_dir.exists():
        raise ExportError(f"{final_dir} already exists; pick another --version")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final_dir.parent))
    try:
        fp32 = work / "fp32.onnx"
        _trace(model, names, batches[0], fp32, opset)
        fp32_scores = onnx_scores(fp32, batches, names)
        parity = [_fp32_parity(reference, fp32_scores)]

        graph, precision = fp32, "fp32"
        if quantize == "int8":
            graph, precision = work / "int8.onnx", "int8"
            _quantize(fp32, graph)
            parity.append(_int8_parity(fp32_scores, onnx_scores(graph, batches, names), pairs))

        optimized = False
        if optimize != "off":
            fused = work / "fused.onnx"
            if _fuse(graph, fused, config):
                fused_scores = onnx_scores(fused, batches, names)
                unfused_scores = onnx_scores(graph, batches, names)
                same = float(np.max(np.abs(fused_scores - unfused_scores))) <= FP32_TOLERANCE
                probe = batches[min(len(batches) - 1, 1)]
                fused_s, plain_s = (
                    _median_seconds(fused, probe, names),
                    _median_seconds(graph, probe, names),
                )
                faster = fused_s < plain_s
                log.info(
                    "ORT fusions: %.1f ms vs %.1f ms unfused per %d-item batch: %s",
                    fused_s * 1e3,
                    plain_s * 1e3,
                    len(probe.lengths),
                    "kept" if same and (optimize == "on" or faster) else "dropped",
                )
                if same and (optimize == "on" or faster):
                    graph, optimized = fused, True

        final_scores = onnx_scores(graph, batches, names)
        _stamp(graph, precision)
        shutil.move(str(graph), work / MODEL_FILE)
        shutil.copy(checkpoint / TOKENIZER, work / TOKENIZER_FILE)
        manifest = Manifest(
            name=name,
            version=version,
            base_model=info.base_model,
            architecture=type(model).__name__,
            created=now_iso(),
            template=info.template,
            pad_token_id=info.pad_token_id,
            inputs=names,
            precision=precision,
            opset=opset,
            sha256=sha256_file(work / MODEL_FILE),
            optimized=optimized,
            normalization=Normalization(
                mean=float(final_scores.mean()), std=max(float(final_scores.std()), 1e-6)
            ),
            parity=parity,
            metrics=info.metrics,
            reference=[
                ReferenceExample(prompt=p, response=r, score=float(s), graph_score=float(g))
                for (p, r), s, g in zip(
                    items[:N_REFERENCE], fp32_scores, final_scores, strict=False
                )
            ],
        )
        for leftover in ("fp32.onnx", "int8.onnx", "fused.onnx"):
            (work / leftover).unlink(missing_ok=True)
        write_manifest(work, manifest)
        work.rename(final_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):  # a first version that failed leaves no empty name
            final_dir.parent.rmdir()
        raise
    return final_dir, manifest


def _fp32_parity(reference: np.ndarray, scores: np.ndarray) -> Parity:
    diff = float(np.max(np.abs(reference - scores)))
    if diff > FP32_TOLERANCE:
        raise ExportError(
            f"ONNX graph differs from PyTorch by {diff:.2e} > {FP32_TOLERANCE:.0e}; not published"
        )
    return Parity(
        reference="pytorch",
        n_examples=len(scores),
        max_abs_diff=diff,
        spearman=spearman(reference, scores),
    )


def _int8_parity(fp32: np.ndarray, int8: np.ndarray, pairs: list[tuple[int, int]]) -> Parity:
    agreement = decision_agreement(fp32, int8, pairs)
    if not pairs or agreement < INT8_MIN_AGREEMENT:
        raise ExportError(
            f"int8 graph orders {agreement:.3f} of {len(pairs)} held-out pairs like fp32, "
            f"below {INT8_MIN_AGREEMENT}; not published"
        )
    return Parity(
        reference="onnx-fp32",
        n_examples=len(int8),
        max_abs_diff=float(np.max(np.abs(fp32 - int8))),
        spearman=spearman(fp32, int8),
        decision_agreement=agreement,
    )
