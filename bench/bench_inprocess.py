"""In-process scoring throughput: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

Usage (after `make demo`, or any train + export):

    .venv/bin/python bench/bench_inprocess.py \
        --checkpoint runs/demo/rm --fp32 runs/demo/models/demo/1 --int8 runs/demo/models/demo-int8/1

Every backend gets the same pre-tokenized batches (real corpus text cut to exactly N tokens),
so the figures compare the runtimes, not the tokenizer. Backends take turns within each
configuration (A B C A B C ...) so that noise from a shared machine hits all of them alike;
the figure is batch size / median batch time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from reward_service.data.corpus import read_entries
from reward_service.scorer import LoadedModel


def token_batches(model: LoadedModel, length: int, batch: int) -> dict[str, np.ndarray]:
    """``batch`` rows of exactly ``length`` tokens: [CLS] corpus text [SEP]."""
    text = " ".join(read_entries()[:400])
    ids = model.tokenizer.encode(text, add_special_tokens=False).ids
    cls, sep = model.tokenizer.token_to_id("[CLS]"), model.tokenizer.token_to_id("[SEP]")
    rows = [[cls, *ids[i * length : i * length + length - 2], sep] for i in range(batch)]
    input_ids = np.array(rows, dtype=np.int64)
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids),
        "token_type_ids": np.zeros_like(input_ids),
    }


def runners(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch_model = AutoModelForSequenceClassification.from_pretrained(
        args.checkpoint, attn_implementation="eager"
    ).eval()

    def run_torch(feeds: dict[str, np.ndarray]) -> None:
        with torch.inference_mode():
            torch_model(**{k: torch.from_numpy(v) for k, v in feeds.items()})

    out = {"pytorch-eager-fp32": run_torch}
    for label, folder in (("ort-fp32", args.fp32), ("ort-int8", args.int8)):
        loaded = LoadedModel.open(folder, threads=args.threads)
        names = loaded.manifest.inputs
        out[label] = lambda feeds, b=loaded.backend, n=names: b.run({k: feeds[k] for k in n})
        out.setdefault("_model", loaded)
    return out


def measure(run, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    run(feeds)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/rm"))
    parser.add_argument("--fp32", type=Path, default=Path("runs/demo/models/demo/1"))
    parser.add_argument("--int8", type=Path, default=Path("runs/demo/models/demo-int8/1"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=7, help="timed turns per backend")
    parser.add_argument("--output", type=Path, default=Path("runs/bench/inprocess.json"))
    args = parser.parse_args()

    backends = runners(args)
    model = backends.pop("_model")
    results = []
    for length in args.lengths:
        for batch in args.batches:
            feeds = token_batches(model, length, batch)
            times: dict[str, list[float]] = {name: [] for name in backends}
            for run in backends.values():
                measure(run, feeds)  # warm-up: first-call allocations and graph setup
            for _ in range(args.rounds):
                for name, run in backends.items():
                    times[name].append(measure(run, feeds))
            row = {"tokens": length, "batch": batch}
            row.update({n: round(batch / statistics.median(t), 1) for n, t in times.items()})
            results.append(row)
            print(json.dumps(row), flush=True)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2))
    names = list(backends)
    print("\n| tokens | batch | " + " | ".join(names) + " | int8 / eager |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for row in results:
        ratio = row["ort-int8"] / row["pytorch-eager-fp32"]
        cells = " | ".join(str(row[n]) for n in names)
        print(f"| {row['tokens']} | {row['batch']} | {cells} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
