"""The training report: JSON for machines, one PNG for people."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _smooth(values: list[float], window: int = 20) -> np.ndarray:
    if len(values) < window:
        return np.asarray(values)
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def write_report(folder: Path, report: dict) -> None:
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    losses = report["history"]["loss"]
    ax_loss.plot(losses, alpha=0.3, color="tab:blue", label="step")
    smooth = _smooth(losses)
    ax_loss.plot(
        np.arange(len(losses) - len(smooth), len(losses)),
        smooth,
        color="tab:blue",
        label="moving mean",
    )
    ax_loss.set(xlabel="step", ylabel="training loss", title="Loss")
    ax_loss.legend()
    evals = report["history"]["eval"]
    metric = report["eval_metric"]
    ax_acc.plot(
        [e["step"] for e in evals], [e[metric] for e in evals], marker="o", color="tab:green"
    )
    ax_acc.set(xlabel="step", ylabel=metric, title=f"Held-out {metric}")
    ax_acc.grid(alpha=0.3)
    fig.suptitle(f"Reward model: {report['data_format']} data, {report['n_train']} train groups")
    fig.tight_layout()
    fig.savefig(folder / "report.png", dpi=110)
    plt.close(fig)
