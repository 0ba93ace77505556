"""/get_reward with OpenRLHF's chat-formatted queries: agreement with pair scoring, before and
after queries are split at their prompts and stripped of chat markup (issue 10).

OpenRLHF posts each sample as the policy's rendered prompt plus the response, decoded as one
string, with the rendered prompt beside it in ``prompts``. For held-out preference pairs this
renders both responses with ChatML (Qwen) and Llama 3 templates, posts them to a live server
with OpenRLHF's own request function (tests/serve/openrlhf_remote_rm.py), and compares with
``/v1/score`` on the plain (prompt, response) pairs, the way the reward model was trained:

  before  ``{"query"}`` only: each query scored as one text (what the service did until now)
  after   ``{"query", "prompts"}``: split, markup removed, scored as a pair

    cd bench && python bench_chat_split.py --model-repo ../runs/bench/models \\
        --pairs ../runs/bench/data/eval.jsonl --output results/chat_split.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx
import numpy as np
from bench_serving import free_port, start, stop

from reward_service.stats import pairwise_accuracy, spearman

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serve"))
from openrlhf_remote_rm import remote_rm_fn  # noqa: E402  (their code, kept in the tests)

SYSTEM = "You are a helpful assistant."


def render(template: str, prompt: str) -> tuple[str, str, str]:
    """(rendered prompt, text before it in a decoded query, end-of-turn after the response)."""
    if template == "chatml":
        rendered = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        return rendered, "", "<|im_end|>"
    rendered = (
        f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    return rendered, "<|begin_of_text|>", "<|eot_id|>"  # the tokenizer adds a second BOS


def measure(url: str, pairs: list[dict], template: str) -> dict:
    items = [(p["prompt"], p[side]) for side in ("chosen", "rejected") for p in pairs]
    plain = httpx.post(
        url + "/v1/score",
        json={"inputs": [{"prompt": a, "response": b} for a, b in items]},
        timeout=600,
    ).json()["scores"]
    prompts, queries = [], []
    for prompt, response in items:
        rendered, before, end = render(template, prompt)
        prompts.append(rendered)
        queries.append(before + rendered + response + end)
    rows = {"pair_scoring": np.array(plain)}
    rows["before"] = np.array(remote_rm_fn(url + "/get_reward", queries, None, None)["rewards"])
    rows["after"] = np.array(remote_rm_fn(url + "/get_reward", queries, prompts, None)["rewards"])
    n = len(pairs)
    out: dict = {"pairs": n}
    reference = rows["pair_scoring"]
    for name, scores in rows.items():
        margin, ref_margin = scores[:n] - scores[n:], reference[:n] - reference[n:]
        out[name] = {
            "decision_agreement_with_pairs": float(np.mean(np.sign(margin) == np.sign(ref_margin))),
            "spearman_with_pairs": spearman(scores, reference),
            "max_abs_diff_from_pairs": float(np.max(np.abs(scores - reference))),
            "pairwise_accuracy": pairwise_accuracy(scores[:n], scores[n:]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "runs" / "bench" / "models")
    held_out = ROOT / "runs" / "bench" / "data" / "eval.jsonl"
    parser.add_argument("--pairs", type=Path, default=held_out, help="held-out preference JSONL")
    parser.add_argument("--limit", type=int, default=500, help="held-out pairs to use")
    parser.add_argument("--output", type=Path, default=Path("results/chat_split.json"))
    args = parser.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines()][: args.limit]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "reward_service.cli", "serve", "--model-repo",
               str(args.model_repo), "--port", str(port)]  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    process = start(command, url, args.output.parent / "chat_split.log", "/readyz")
    try:
        report = {t: measure(url, pairs, t) for t in ("chatml", "llama3")}
    finally:
        stop(process)
    print(json.dumps(report, indent=2))
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
