"""Checkpoint folders that a crash at any instant leaves usable.

A checkpoint is written into ``checkpoint.tmp``, marked complete by a last small file, and only
then swapped into place: ``checkpoint`` → ``checkpoint.old``, ``checkpoint.tmp`` →
``checkpoint``. A folder cannot be renamed over another atomically, so a crash between the two
renames leaves no ``checkpoint`` at all, only the old one and the new one; resume therefore
takes the newest *complete* folder of the three, never just the one named ``checkpoint``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

CHECKPOINT = "checkpoint"
COMPLETE = "COMPLETE"


def _folders(output: Path) -> tuple[Path, Path, Path]:
    return output / CHECKPOINT, output / f"{CHECKPOINT}.tmp", output / f"{CHECKPOINT}.old"


def write_checkpoint(output: Path, step: int, write: Callable[[Path], None]) -> Path:
    """``write(folder)`` fills a fresh folder; it becomes ``output/checkpoint`` once complete."""
    final, tmp, old = _folders(output)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / COMPLETE).write_text(f"{step}\n", encoding="utf-8")  # last: its presence means whole
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_step(folder: Path) -> int | None:
    """The step a complete checkpoint folder holds; None for a missing or partial one."""
    marker = folder / COMPLETE
    if not marker.is_file():
        return None
    return int(marker.read_text(encoding="utf-8"))


def latest_checkpoint(output: Path) -> Path | None:
    """The complete checkpoint with the highest step, wherever a crash left it."""
    complete = [(step, f) for f in _folders(output) if (step := checkpoint_step(f)) is not None]
    return max(complete, key=lambda pair: pair[0])[1] if complete else None
