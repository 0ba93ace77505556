"""Per-step metrics of a run: ``log.jsonl`` (one JSON object per step) and TensorBoard events.

Metric names follow TRL's PPO trainer where it has the same quantity (``objective/kl``,
``policy/approxkl_avg``, ``val/ratio``, ...), so dashboards and habits carry over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    """Append-only step records; ``resume_step`` drops what a crash left past the checkpoint."""

    def __init__(self, output: Path, tensorboard: bool, resume_step: int | None = None) -> None:
        self.path = output / "log.jsonl"
        if resume_step is not None:
            _truncate(self.path, resume_step)
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events a crashed run wrote past the checkpoint are dropped on resume.
            self.writer = SummaryWriter(str(output / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = int(record["step"])
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _truncate(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's log has each step once."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
