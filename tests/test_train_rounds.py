"""Training on one round of labels: runs sized in steps, warm starts from a reward checkpoint,
and a log that says when a run from scratch is too short to learn."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from rm_fixtures import sentiment_pairs, write_jsonl
from transformers import AutoModelForSequenceClassification

from reward_service.checkpoint import read_info
from reward_service.train.trainer import (
    MIN_STEPS_FROM_SCRATCH,
    TrainConfig,
    plan_steps,
    too_short_warning,
    train,
)


def test_plan_steps():
    assert plan_steps(300, 16, 1.0, 0, 0) == 19  # one epoch
    assert plan_steps(300, 16, 10.0, 0, 0) == 190
    assert plan_steps(300, 16, 1.0, 150, 0) == 150  # --steps wins over --epochs
    assert plan_steps(10, 16, 1.0, 150, 0) == 150  # however many epochs that is
    assert plan_steps(300, 16, 10.0, 0, 40) == 40  # --max-steps caps either
    assert plan_steps(300, 16, 1.0, 150, 40) == 40
    assert plan_steps(3, 16, 0.01, 0, 0) == 1
    with pytest.raises(ValueError):
        plan_steps(300, 16, 1.0, -1, 0)


def test_too_short_warning():
    assert too_short_warning(MIN_STEPS_FROM_SCRATCH, warm_start=False) is None
    assert too_short_warning(5, warm_start=True) is None
    message = too_short_warning(19, warm_start=False)
    assert "19 optimizer steps" in message and "--steps" in message and "--init" in message


def weights(folder) -> dict[str, torch.Tensor]:
    return AutoModelForSequenceClassification.from_pretrained(folder).state_dict()


def test_warm_start_continues_from_the_checkpoint_head_included(tiny_checkpoint, tmp_path):
    data = write_jsonl(tmp_path / "round.jsonl", sentiment_pairs(24, seed=7))
    out = tmp_path / "warm"
    # lr = 0: the run must end exactly where the checkpoint was, head and all.
    train(TrainConfig(data=data, output=out, init=tiny_checkpoint, steps=3, lr=0.0, max_length=32))
    before, after = weights(tiny_checkpoint), weights(out)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    # The checkpoint's template (max_length 64) wins over --max-length: same tokenization.
    assert read_info(out).template == read_info(tiny_checkpoint).template
    assert read_info(out).base_model == read_info(tiny_checkpoint).base_model
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 3 and report["warnings"] == []


def test_warm_start_learns_on_top(tiny_checkpoint, tmp_path):
    data = write_jsonl(tmp_path / "round.jsonl", sentiment_pairs(24, seed=8))
    out = tmp_path / "warm"
    train(TrainConfig(data=data, output=out, init=tiny_checkpoint, steps=4, lr=1e-3))
    changed = [
        n for n, w in weights(out).items() if not torch.equal(w, weights(tiny_checkpoint)[n])
    ]
    assert "classifier.weight" in changed
    assert json.loads((out / "report.json").read_text())["metrics"]["pairwise_accuracy"] >= 0.9


def test_init_and_base_exclude_each_other(tiny_checkpoint, tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "round.jsonl", sentiment_pairs(8, seed=9))
    with pytest.raises(ValueError, match="--init and --base"):
        train(TrainConfig(data=data, output=tmp_path / "x", init=tiny_checkpoint, base=tiny_base))


def test_the_training_log_says_when_a_run_is_too_short(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "round.jsonl", sentiment_pairs(40, seed=10))
    out = tmp_path / "short"
    done = subprocess.run(
        [
            sys.executable, "-m", "reward_service.cli", "train", "--data", str(data),
            "--output", str(out), "--base", str(tiny_base), "--max-length", "32",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 optimizer steps from a fresh reward head is too short to learn" in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 3 and "too short" in report["warnings"][0]
