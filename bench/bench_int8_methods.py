"""Which int8 method keeps a reward model's decisions: the measurement behind ``--quantize int8``.

One fp32 export of one checkpoint, quantized several ways; each graph scores every held-out item
and is compared with the fp32 graph on every held-out pair (decision agreement, its two-sided
95 % Wilson interval, Spearman, max |Δ| / σ), then timed at 64 tokens, batches 8 and 32,
runners taking turns (ratios to ONNX Runtime fp32 hold on a noisy machine):

* ONNX Runtime dynamic int8 with per-channel weights, alone and with MatMul groups kept in fp32;
* ONNX Runtime static QDQ with min/max calibration (uint8 and int8 activations);
* 8-bit block-quantized weights (MatMulNBits, blocks of 32);
* NNCF's transformer recipe, ``performance`` and ``mixed`` presets, on ONNX Runtime and OpenVINO;
* OpenVINO bf16 on the fp32 graph.

Calibration uses the training file's first texts (``--calibration-data``), never the pairs.

Run (the demo RM, its held-out pairs and its training data):

    .venv/bin/python bench/bench_int8_methods.py --checkpoint runs/demo/rm \
        --eval-data runs/demo/data/eval.jsonl --calibration-data runs/demo/data/train.jsonl \
        --output runs/bench-int8-methods
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_backends import exact_length_feeds, interleaved_seconds  # noqa: E402
from machine import machine  # noqa: E402

from reward_service.backends import load_backend  # noqa: E402
from reward_service.checkpoint import items_and_pairs  # noqa: E402
from reward_service.data.formats import load_groups  # noqa: E402
from reward_service.export.onnx_export import export  # noqa: E402
from reward_service.scorer import LoadedModel  # noqa: E402
from reward_service.stats import decision_agreement, spearman, wilson_interval  # noqa: E402

CALIBRATION_TEXTS = 300
GROUPS = {  # MatMul name fragments of a BERT-style encoder exported by `reward-service export`
    "head": ("pooler", "classifier"),
    "FFN in": ("intermediate",),
    "attention out": ("attention/output/dense",),
    "Q, K, V": ("query", "key", "value"),
    "first layer": ("layer.0/",),
    "last layer": ("layer.5/",),
}


def calibration_feeds(model: LoadedModel, items: list, n: int) -> list[dict]:
    return [model.encode([item]).feeds(model.manifest.inputs) for item in items[:n]]


class Feeds:
    """ONNX Runtime's calibration reader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict]) -> None:
        self.it = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self.it, None)


def quantized_graphs(fp32: Path, work: Path, calib: list[dict]) -> dict[str, tuple]:
    """label → (graph path, runtime, precision) for every method."""
    import nncf
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    graphs: dict[str, tuple] = {"ORT fp32": (fp32, "onnxruntime", None)}
    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ("MatMul", "Gemm")]
    dyn = dict(per_channel=True, weight_type=QuantType.QInt8)
    quantize_dynamic(str(fp32), str(work / "dyn.onnx"), **dyn)
    graphs["ORT dynamic int8"] = (work / "dyn.onnx", "onnxruntime", None)
    for name, keys in GROUPS.items():
        keep = [m for m in matmuls if any(k in m for k in keys)]
        dst = work / f"dyn-{len(graphs)}.onnx"
        quantize_dynamic(str(fp32), str(dst), nodes_to_exclude=keep, **dyn)
        graphs[f"ORT dynamic int8, {name} in fp32"] = (dst, "onnxruntime", None)
    for act in (QuantType.QUInt8, QuantType.QInt8):
        dst = work / f"static-{act.name}.onnx"
        quantize_static(
            str(fp32), str(dst), Feeds(calib), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"], calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        graphs[f"ORT static QDQ min/max, {act.name} activations"] = (dst, "onnxruntime", None)
    config = DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=True, accuracy_level=4, bits=8
    )
    nbits = MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config)
    nbits.process()
    nbits.model.save_model_to_file(str(work / "nbits.onnx"), False)
    graphs["MatMulNBits 8-bit, blocks of 32"] = (work / "nbits.onnx", "onnxruntime", None)
    for preset in ("performance", "mixed"):
        dst = work / f"nncf-{preset}.onnx"
        graph = nncf.quantize(
            onnx.load(str(fp32)), nncf.Dataset(calib), model_type=nncf.ModelType.TRANSFORMER,
            preset=getattr(nncf.QuantizationPreset, preset.upper()), subset_size=len(calib),
        )  # fmt: skip
        onnx.save(graph, str(dst))
        graphs[f"NNCF {preset}, ORT"] = (dst, "onnxruntime", None)
        graphs[f"NNCF {preset}, OpenVINO"] = (dst, "openvino", "f32")
        graphs[f"NNCF {preset}, OpenVINO bf16 hint"] = (dst, "openvino", "bf16")
    graphs["OpenVINO bf16, fp32 graph"] = (fp32, "openvino", "bf16")
    return graphs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument("--calibration-data", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=ROOT / "runs/bench-int8-methods")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=2.0, help="Per runner per cell.")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    folder = args.output / "repo" / "rm" / "1"
    if not folder.is_dir():
        export(args.checkpoint, args.output / "repo", "rm", version=1, optimize="off")
    model = LoadedModel.open(folder, backend="onnxruntime", threads=args.threads)
    items, pairs = items_and_pairs(load_groups(args.eval_data)[1])
    calib_items, _ = items_and_pairs(load_groups(args.calibration_data)[1])
    calib = calibration_feeds(model, calib_items, CALIBRATION_TEXTS)
    fp32 = model.score(items).astype(np.float64)
    sigma = float(fp32.std())
    texts = [f"{p} {r}" for p, r in items]
    graphs = quantized_graphs(folder / "model.onnx", args.output, calib)
    rows: dict[str, dict] = {}
    runs: dict[int, dict] = {8: {}, 32: {}}
    for label, (path, kind, precision) in graphs.items():
        backend = load_backend(path, kind, threads=args.threads, precision=precision)
        scored = LoadedModel(folder, model.manifest, model.tokenizer, backend)
        scores = scored.score(items).astype(np.float64)
        agreement = decision_agreement(fp32, scores, pairs)
        low, high = wilson_interval(round(agreement * len(pairs)), len(pairs), 1.96)
        rows[label] = {
            "agreement": agreement, "low95": low, "high95": high,
            "spearman": spearman(fp32, scores),
            "max_dev_sigma": float(np.max(np.abs(scores - fp32)) / sigma),
        }  # fmt: skip
        for batch in runs:
            runs[batch][label] = partial(backend.run, exact_length_feeds(model, texts, 64, batch))
        print(label, {k: round(v, 4) for k, v in rows[label].items()}, flush=True)
    for batch, runners in runs.items():
        seconds = interleaved_seconds(runners, args.seconds)
        for label, median in seconds.items():
            rows[label][f"x_b{batch}"] = seconds["ORT fp32"] / median
    lines = [
        f"| method | agreement ({len(pairs)} pairs) | 95% interval | Spearman | max Δ/σ "
        "| × ORT fp32 b8 | × ORT fp32 b32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['agreement']:.3f} | {r['low95']:.3f}–{r['high95']:.3f} "
            f"| {r['spearman']:.4f} | {r['max_dev_sigma']:.3f} "
            f"| {r['x_b8']:.2f} | {r['x_b32']:.2f} |"
        )
    report = {"machine": machine(), "threads": args.threads, "pairs": len(pairs), "rows": rows}
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {report['machine']}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
