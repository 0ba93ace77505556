"""Low precision on several reward models: does it keep their decisions, and how much faster is it.

For each checkpoint (e.g. the demo RM and the same recipe with two other seeds) this exports an
fp32 version and an int8 version (``export --quantize int8``: NNCF calibration, then the
confidence-bounded gate), then measures on one machine, in one run:

* **decision agreement** with the fp32 graph on the held-out pairs the int8 calibration never
  saw (near-ties left out, as the gate does), with its one-sided 95 % lower bound, for ORT int8,
  OpenVINO int8 and OpenVINO bf16 on the fp32 graph;
* **in-process texts/s** at 64 tokens, batches of 8 and 32 (``backend.run`` on pre-tokenized
  feeds, runners taking turns so the ratios to ORT fp32 hold on a noisy machine).

Run:

    .venv/bin/python bench/bench_lowprec.py \
        --checkpoints runs/i9/rm-seed0 runs/i9/rm-seed1 runs/i9/rm-seed2 --output runs/bench-lowprec

Writes ``results.json`` under ``--output`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_backends import exact_length_feeds, interleaved_seconds, latest_version  # noqa: E402
from machine import machine  # noqa: E402

from reward_service.backends.cpu import host_features  # noqa: E402
from reward_service.checkpoint import items_and_pairs, load_heldout  # noqa: E402
from reward_service.export.onnx_export import ExportError, export  # noqa: E402
from reward_service.export.quantize import judge_int8, split_for_calibration  # noqa: E402
from reward_service.scorer import LoadedModel  # noqa: E402

RUNTIMES = {
    "ORT fp32": ("fp32", "onnxruntime", None),
    "ORT int8": ("int8", "onnxruntime", None),
    "OpenVINO int8": ("int8", "openvino", "f32"),
    "OpenVINO bf16": ("fp32", "openvino", "bf16"),
}
LENGTH = 64
BATCHES = (8, 32)


def exported(checkpoint: Path, repo: Path, name: str, quantize: str | None) -> Path | None:
    """The model's newest version in ``repo``, exporting it first if needed; None if refused.

    A refusal is remembered beside the repository, so a re-run re-times without re-exporting.
    """
    refused = repo.parent / f"{name}.refused.txt"
    if (repo / name).is_dir():
        return latest_version(repo, name)
    if refused.is_file():
        print(f"{name}: {refused.read_text()}", flush=True)
        return None
    try:
        folder, _ = export(checkpoint, repo, name, quantize=quantize)
    except ExportError as exc:
        refused.write_text(str(exc))
        print(f"{name}: {exc}", flush=True)
        return None
    return folder


def measure(checkpoint: Path, repo: Path, threads: int, seconds: float) -> dict:
    tag = checkpoint.name
    folders = {
        "fp32": exported(checkpoint, repo, f"{tag}-fp32", None),
        "int8": exported(checkpoint, repo, f"{tag}-int8", "int8"),
    }
    _, gate_groups = split_for_calibration(load_heldout(checkpoint))
    items, pairs = items_and_pairs(gate_groups)
    models: dict[str, LoadedModel] = {}
    for label, (graph, kind, precision) in RUNTIMES.items():
        if folders[graph] is None:
            continue
        options = {"threads": threads, **({"precision": precision} if precision else {})}
        models[label] = LoadedModel.open(folders[graph], backend=kind, **options)
    fp32 = models["ORT fp32"].score(items)
    texts = [f"{p} {r}" for p, r in items]
    row: dict = {"checkpoint": str(checkpoint), "pairs": len(pairs), "runtimes": {}}
    for label, model in models.items():
        verdict = judge_int8(fp32, model.score(items), pairs)
        row["runtimes"][label] = {
            "agreement": verdict.agreement,
            "low95": verdict.low,
            "decisive_pairs": verdict.decisive_pairs,
            "max_dev_sigma": float(np.max(np.abs(model.score(items) - fp32)) / fp32.std()),
        }
    for batch in BATCHES:
        runs = {
            label: partial(model.backend.run, exact_length_feeds(model, texts, LENGTH, batch))
            for label, model in models.items()
        }
        for label, median in interleaved_seconds(runs, seconds).items():
            row["runtimes"][label][f"b{batch}"] = batch / median
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| reward model | runtime | agreement vs fp32 (95% low) | pairs "
        f"| {LENGTH} tok b8 texts/s (× ORT fp32) | {LENGTH} tok b32 texts/s (× ORT fp32) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = row["runtimes"]["ORT fp32"]
        for label, r in row["runtimes"].items():
            speed = [f"{r[f'b{b}']:.0f} ({r[f'b{b}'] / base[f'b{b}']:.2f}×)" for b in BATCHES]
            lines.append(
                f"| {Path(row['checkpoint']).name} | {label} | {r['agreement']:.4f} "
                f"({r['low95']:.4f}) | {r['decisive_pairs']} | {speed[0]} | {speed[1]} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True)
    parser.add_argument("--output", type=Path, default=ROOT / "runs/bench-lowprec")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=3.0, help="Per runner per cell.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.output.mkdir(parents=True, exist_ok=True)
    repo = args.output / "models"
    rows = [measure(c, repo, args.threads, args.seconds) for c in args.checkpoints]
    results = {
        "machine": machine() | {"bf16_units": host_features().describe()},
        "threads": args.threads,
        "rows": rows,
    }
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"machine: {results['machine']}, {args.threads} threads")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
