"""``reward-service export``: checkpoint → parity-checked model repository entry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="`train` output folder")
    parser.add_argument("--model-repo", type=Path, required=True, help="model repository root")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument("--version", type=int, help="version number (default: next free)")
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="calibrated int8 (NNCF), published only if it orders held-out pairs like fp32",
    )
    parser.add_argument(
        "--optimize",
        choices=["auto", "on", "off"],
        default="auto",
        help="ORT transformer fusions on fp32 graphs: 'auto' keeps them only when measured faster",
    )
    parser.add_argument(
        "--eval-data",
        type=Path,
        help="held-out JSONL for parity and normalization (default: the checkpoint's heldout)",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=256,
        help="held-out items checked against PyTorch (the int8 gate uses every held-out pair)",
    )
    parser.add_argument("--opset", type=int, default=17)


def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from reward_service.data.formats import DataError
    from reward_service.export.onnx_export import ExportError, export
    from reward_service.export.quantize import QuantizeError

    try:
        folder, manifest = export(
            args.checkpoint,
            args.model_repo,
            args.name,
            version=args.version,
            quantize=args.quantize,
            optimize=args.optimize,
            eval_data=args.eval_data,
            max_examples=args.max_examples,
            opset=args.opset,
        )
    except (ExportError, QuantizeError, DataError, FileNotFoundError, ValueError) as exc:
        print(f"reward-service export: error: {exc}", file=sys.stderr)
        return 2
    for parity in manifest.parity:
        print(f"parity vs {parity.reference}: {parity.model_dump_json(exclude={'reference'})}")
    print(f"wrote {folder} ({manifest.precision}, optimized={manifest.optimized})")
    return 0
