"""The cost model: its loss, what training learns (order and sign), export and serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rm_fixtures import sentiment_pairs, write_jsonl
from service_process import running_server

from reward_service.cli import main as reward_service
from reward_service.repository import load_manifest
from reward_service.scorer import LoadedModel
from reward_service.train.losses import cost_loss, pair_index, sign_index
from reward_service.train.trainer import cost_accuracy

from .safety_data import pku_records

FRESH = [
    ("Say something about the sea.", "the sea is lovely and bright."),
    ("Say something about the sea.", "the sea is stupid and worthless, you moron."),
]


def test_cost_loss_matches_a_naive_loop():
    costs = torch.tensor([0.3, 1.2, -0.4, 2.0, 0.1], requires_grad=True)
    sizes, safe = [2, 2, 1], [True, False, None, False, True]
    safer, less_safe, _, weight = pair_index(sizes, [0.0, 0.0, 0.0])
    labeled, sign = sign_index(safe)
    loss = cost_loss(costs, safer, less_safe, weight, labeled, sign)

    c = costs.detach().tolist()
    log_sigmoid = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
    order = [log_sigmoid(c[1] - c[0]), log_sigmoid(c[3] - c[2])]
    unsafe, safe = [log_sigmoid(c[1]), log_sigmoid(c[3])], [log_sigmoid(-c[0]), log_sigmoid(-c[4])]
    signs = (np.mean(unsafe) + np.mean(safe)) / 2  # each class weighs half, whatever its size
    assert loss.item() == pytest.approx(-np.mean(order) - signs, rel=1e-6)
    loss.backward()
    assert costs.grad[0] > 0 and costs.grad[1] < 0  # the safer one pushed down, the other up


def test_cost_loss_weighs_the_rare_unsafe_class_as_much_as_the_safe_one():
    costs = torch.zeros(4, requires_grad=True)  # at the boundary, every item's σ is ½
    labeled, sign = sign_index([True, True, True, False])
    cost_loss(
        costs, torch.tensor([], dtype=torch.long), torch.tensor([]), torch.tensor([]), labeled, sign
    ).backward()
    # The one unsafe response gets as much pull as the three safe ones together.
    assert -costs.grad[3].item() == pytest.approx(costs.grad[:3].sum().item(), rel=1e-6)


def test_cost_accuracy_counts_signs_and_safer_pairs():
    from reward_service.data.formats import Group

    groups = [Group("p", ("a", "b"), safe=(True, False)), Group("p", ("c",), safe=(False,))]
    metrics = cost_accuracy(np.array([-1.0, 2.0, -0.5]), groups)
    assert metrics == {
        "sign_accuracy": pytest.approx(2 / 3),
        "unsafe_share": pytest.approx(2 / 3),
        "sign_accuracy_unsafe": 0.5,
        "sign_accuracy_safe": 1.0,
        "balanced_sign_accuracy": 0.75,
        "safer_pair_accuracy": 1.0,
    }


def test_all_safe_scores_high_plain_but_only_half_balanced():
    from reward_service.data.formats import Group

    groups = [Group("p", ("a",), safe=(s,)) for s in [True] * 9 + [False]]
    metrics = cost_accuracy(np.full(10, -1.0), groups)
    assert metrics["sign_accuracy"] == pytest.approx(0.9)
    assert metrics["sign_accuracy_unsafe"] == 0.0
    assert metrics["balanced_sign_accuracy"] == pytest.approx(0.5)


def test_training_learns_order_and_sign(cost_checkpoint):
    report = json.loads((cost_checkpoint / "report.json").read_text())
    assert report["objective"] == "cost" and report["data_format"] == "pku-saferlhf"
    assert report["metrics"]["sign_accuracy"] >= 0.9
    assert report["metrics"]["safer_pair_accuracy"] >= 0.9
    info = json.loads((cost_checkpoint / "reward_config.json").read_text())
    assert info["kind"] == "cost"


def test_exported_cost_model_says_so_and_scores_with_the_sign(safety_model_repo):
    folder = safety_model_repo / "tiny-cost" / "1"
    manifest = load_manifest(folder)
    assert manifest.kind == "cost"
    assert load_manifest(safety_model_repo / "tiny" / "1").kind == "reward"
    safe, unsafe = LoadedModel.open(folder).score(FRESH)
    assert safe < 0 < unsafe


def test_served_cost_model_is_listed_as_one(safety_model_repo, tmp_path):
    with running_server(
        safety_model_repo, tmp_path, "--backend", "onnxruntime", "--default-model", "tiny"
    ) as server:
        cards = {c["name"]: c for c in server.get("/v1/models").json()["data"]}
        assert cards["tiny-cost"]["manifest"]["kind"] == "cost"
        assert cards["tiny"]["manifest"]["kind"] == "reward"
        body = {"model": "tiny-cost", "inputs": [{"prompt": p, "response": r} for p, r in FRESH]}
        safe, unsafe = server.post("/v1/score", body).json()["scores"]
        assert safe < 0 < unsafe


def test_train_cli_refuses_data_that_does_not_fit_the_objective(tmp_path, capsys, tiny_base):
    preferences = write_jsonl(tmp_path / "prefs.jsonl", sentiment_pairs(4, seed=0))
    args = ["--data", str(preferences), "--base", str(tiny_base), "--output", str(tmp_path)]
    code = reward_service(["train", "--objective", "cost", *args[:-1], str(tmp_path / "out")])
    assert code == 2
    assert "--objective cost needs safety data" in capsys.readouterr().err
    safety = write_jsonl(tmp_path / "safety.jsonl", [{"prompt": "p", "response": "r", "safe": 1}])
    code = reward_service(
        ["train", "--data", str(safety), "--base", str(tiny_base), "--output", str(tmp_path / "o")]
    )
    assert code == 2
    assert "train a cost model with --objective cost" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_pku_file_trains_the_helpfulness_model_too(tmp_path, tiny_base):
    from reward_service.train.trainer import TrainConfig, train

    data = write_jsonl(tmp_path / "pku.jsonl", pku_records(48, seed=3))
    metrics = train(
        TrainConfig(
            data=data, output=tmp_path / "rm", base=tiny_base, max_steps=2, eval_fraction=0.25
        )
    )
    assert set(metrics) == {"pairwise_accuracy"}
    report = json.loads((tmp_path / "rm" / "report.json").read_text())
    assert report["objective"] == "reward" and report["data_format"] == "pku-saferlhf"
