"""``ppo-client`` as users type it: help, one-line errors, pretrain and sample end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ppo_client.cli import main

from .conftest import tiny_texts
from .test_trainer import read_log


def ppo_client(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ppo_client.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["pretrain", "train", "sample"])
def test_every_subcommand_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--output" in capsys.readouterr().out


def test_train_help_lists_every_config_field(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--policy",
        "--prompts",
        "--reward-url",
        "--steps",
        "--reward-model",
        "--resume",
        "--seed",
        "--config",
        "--kl-estimator",
        "--adaptive-kl",
        "--missing-eos-score",
        # issue 11's command contract
        "--lora-rank",
        "--precision {fp32,bf16,fp16}",
        "--gradient-checkpointing",
        "--no-chat-template",
        "--eval-prompts",
        "--eval-every",
    ):
        assert flag in text


def test_bad_input_is_one_line_not_a_traceback(tiny_policy, tmp_path) -> None:
    proc = ppo_client(
        "train",
        "--policy",
        str(tiny_policy),
        "--prompts",
        "missing.jsonl",
        "--reward-url",
        "http://127.0.0.1:9",
        "--output",
        str(tmp_path),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ppo-client train: error: prompts file missing.jsonl not found"
    ]


def test_config_file_is_read_and_flags_win(tiny_policy, prompts_file, tmp_path, capsys) -> None:
    config = tmp_path / "ppo.toml"
    config.write_text('steps = 3\nkl_estimator = "k9"\n')
    code = None
    with pytest.raises(SystemExit) as exit_info:
        code = main(
            [
                "train",
                "--config",
                str(config),
                "--policy",
                str(tiny_policy),
                "--prompts",
                str(prompts_file),
                "--output",
                str(tmp_path / "o"),
                "--reward-url",
                "http://127.0.0.1:9",
            ]
        )
    assert code is None and exit_info.value.code == 2
    assert "kl_estimator must be one of 'k1', 'k3', got 'k9'" in capsys.readouterr().err
    unknown = tmp_path / "typo.json"
    unknown.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(SystemExit):
        main(["train", "--config", str(unknown), "--policy", str(tiny_policy)])
    assert "unknown field(s) stepz" in capsys.readouterr().err


def test_a_flag_can_clear_what_the_config_file_set(
    tiny_policy, prompts_file, reward_url, tmp_path
) -> None:
    """``--missing-eos-score none`` must win over the file's −5, not read as "not given": with
    one-token responses almost none end, so the file's value would replace their scores."""
    config = tmp_path / "ppo.toml"
    config.write_text("missing_eos_score = -5.0\nsteps = 1\nrollout_batch_size = 4\n")
    common = [
        "train",
        "--config",
        str(config),
        "--policy",
        str(tiny_policy),
        "--prompts",
        str(prompts_file),
        "--reward-url",
        reward_url,
        "--num-minibatches",
        "1",
        "--ppo-epochs",
        "1",
        "--response-length",
        "1",
        "--num-eval-samples",
        "2",
        "--no-tensorboard",
        "--no-progress",
    ]
    assert main([*common, "--output", str(tmp_path / "file")]) == 0
    assert (
        main([*common, "--output", str(tmp_path / "cleared"), "--missing-eos-score", "none"]) == 0
    )
    from_file, cleared = (read_log(tmp_path / name)[1] for name in ("file", "cleared"))
    assert from_file["eos_rate"] < 1.0 and from_file["objective/scores"] < -1.0
    assert cleared["objective/scores"] == cleared["reward/raw"]


def test_pretrain_writes_a_directory_transformers_loads(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n%\n".join(t for t in tiny_texts(300) if len(t) >= 20))
    out = tmp_path / "policy"
    proc = ppo_client(
        "pretrain",
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--vocab-size",
        "300",
        "--n-layer",
        "1",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        "5",
        "--no-bf16",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 5
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token != tok.eos_token
    assert AutoModelForCausalLM.from_pretrained(out).config.n_layer == 1


def test_sample_writes_scored_completions_with_kl(
    tiny_policy, prompts_file, reward_url, tmp_path
) -> None:
    out = tmp_path / "samples.jsonl"
    proc = ppo_client(
        "sample",
        "--policy",
        str(tiny_policy),
        "--prompts",
        str(prompts_file),
        "--output",
        str(out),
        "--n",
        "2",
        "--temperature",
        "0.9",
        "--reward-url",
        reward_url,
        "--reference",
        str(tiny_policy),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    n_prompts = len(prompts_file.read_text().splitlines())
    assert len(rows) == 2 * n_prompts
    assert [r["prompt"] for r in rows[:2]] == [rows[0]["prompt"]] * 2
    assert all(isinstance(r["reward"], float) for r in rows)
    assert all(abs(r["kl"]) < 1e-5 for r in rows)  # the policy is its own reference
    assert len({r["reward"] for r in rows}) > 1
