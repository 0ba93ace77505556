"""Checkpoint folders: a crash at any instant of a save leaves a checkpoint that resume finds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ppo_client.checkpoint import CHECKPOINT, latest_checkpoint, write_checkpoint
from ppo_client.trainer import PPOTrainer

from .conftest import make_config
from .test_trainer import letter_reward


def fill(step: int):
    def write(folder: Path) -> None:
        (folder / "state.txt").write_text(str(step))

    return write


def test_each_save_replaces_the_last_and_leaves_no_temporaries(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step, fill(step))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    assert latest_checkpoint(tmp_path) == tmp_path / CHECKPOINT
    assert (tmp_path / CHECKPOINT / "state.txt").read_text() == "3"


def test_a_crash_between_the_two_renames_keeps_the_newer_checkpoint(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 1, fill(1))
    write_checkpoint(tmp_path, 2, fill(2))
    # The state right after `checkpoint` → `checkpoint.old`, before `.tmp` → `checkpoint`:
    (tmp_path / CHECKPOINT).rename(tmp_path / f"{CHECKPOINT}.old")
    shutil.copytree(tmp_path / f"{CHECKPOINT}.old", tmp_path / f"{CHECKPOINT}.tmp")
    (tmp_path / f"{CHECKPOINT}.tmp" / "COMPLETE").write_text("3\n")
    assert latest_checkpoint(tmp_path) == tmp_path / f"{CHECKPOINT}.tmp"
    write_checkpoint(tmp_path, 4, fill(4))  # the next save recovers the usual layout
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


def test_a_partial_folder_is_never_taken(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 1, fill(1))
    (tmp_path / CHECKPOINT).rename(tmp_path / f"{CHECKPOINT}.old")
    partial = tmp_path / f"{CHECKPOINT}.tmp"
    partial.mkdir()
    (partial / "state.txt").write_text("2")  # crashed before its COMPLETE marker
    assert latest_checkpoint(tmp_path) == tmp_path / f"{CHECKPOINT}.old"
    shutil.rmtree(tmp_path / f"{CHECKPOINT}.old")
    assert latest_checkpoint(tmp_path) is None


def test_resume_after_a_crash_between_the_renames(tiny_policy, prompts_file, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = make_config(tiny_policy, prompts_file, out, steps=2, checkpoint_every=1)
    with PPOTrainer(cfg, reward_fn=letter_reward) as trainer:
        trainer.train()
    (out / CHECKPOINT).rename(out / f"{CHECKPOINT}.old")  # only `checkpoint.old` survived
    resumed = make_config(tiny_policy, prompts_file, out, steps=3, resume=True)
    with PPOTrainer(resumed, reward_fn=letter_reward) as trainer:
        assert trainer.step == 2
        trainer.train()
    assert latest_checkpoint(out) == out / CHECKPOINT


def test_resume_without_any_complete_checkpoint_is_a_clear_error(
    tiny_policy, prompts_file, tmp_path
) -> None:
    from ppo_client.config import ConfigError

    (tmp_path / f"{CHECKPOINT}.tmp").mkdir(parents=True)
    cfg = make_config(tiny_policy, prompts_file, tmp_path, resume=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        PPOTrainer(cfg, reward_fn=letter_reward)
