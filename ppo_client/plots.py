"""The picture of a run (log.jsonl → PNG) and the before/after sample table (Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = [
    ("reward/raw", "reward (service score)"),
    ("objective/kl", "KL(π ‖ π_ref), nats per response"),
    ("objective/kl_coef", "β"),
    ("policy/entropy_avg", "entropy per token"),
    ("policy/clipfrac_avg", "policy clip fraction"),
    ("policy/approxkl_avg", "approx KL (old → new)"),
    ("loss/value_avg", "value loss"),
    ("val/explained_variance", "explained variance"),
    ("response_length", "response length (tokens)"),
]
#: Held-out evaluation drawn as dots on the panel of the matching training signal.
EVAL_OVERLAYS = {
    "reward/raw": "eval/reward",
    "objective/kl": "eval/kl",
    "response_length": "eval/response_length",
}
TIMINGS = ("generate", "forward", "reward_wait", "train")


def read_log(path: Path) -> list[dict[str, float]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_run(log_path: Path, png: Path, title: str | None = None) -> Path | None:
    """One panel per logged signal plus a stacked bar of step timings; None if nothing logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(log_path).is_file():
        return None
    rows = read_log(log_path)
    if not rows:
        return None
    evals = [r for r in rows if "eval/reward" in r]
    rows = [r for r in rows if r["step"] > 0]  # step 0 holds only the evaluation before training
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 5, figsize=(20, 7), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, PANELS, strict=False):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], lw=1.2, label="training")
        if key in EVAL_OVERLAYS and evals:
            held_out = [r[EVAL_OVERLAYS[key]] for r in evals]
            ax.plot([r["step"] for r in evals], held_out, "o", ms=4, label="held-out")
            ax.legend(fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax = axes.flat[len(PANELS)]
    bottom = [0.0] * len(rows)
    for name in TIMINGS:
        heights = [r.get(f"time/{name}", 0.0) for r in rows]
        ax.bar(steps, heights, bottom=bottom, label=name, width=1.0)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_title("seconds per step", fontsize=10)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    fig.suptitle(title or f"PPO run: {Path(log_path).parent.name}")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def _cell(text: str, width: int = 90) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def write_sample_table(output: Path, md: Path) -> Path:
    """Markdown table of the same prompts sampled before and after training, with rewards."""
    before = read_log(output / "samples_before.jsonl")
    after = read_log(output / "samples_after.jsonl")
    lines = [
        "| prompt | before | reward | after | reward |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for b, a in zip(before, after, strict=False):
        lines.append(
            f"| {_cell(b['prompt'], 50)} | {_cell(b['response'])} | {b['reward']:.2f} "
            f"| {_cell(a['response'])} | {a['reward']:.2f} |"
        )
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md
