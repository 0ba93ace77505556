"""``reward-service serve`` with the default backend (auto), as an operator starts it: whatever
CPU class the probe reports (CI runs this file once per class), the service starts, passes its
gate, and says in the log and in /v1/models what it picked and why."""

from __future__ import annotations

from pathlib import Path

from service_process import running_server

from reward_service.backends.base import openvino_installed
from reward_service.backends.cpu import host_features


def test_auto_says_what_it_picked_and_why(tiny_model_repo: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_repo, tmp_path) as server:
        (card,) = server.get("/v1/models").json()["data"]
        runtime = card["runtime"]
        assert runtime["selected_because"]
        parity = runtime["parity"]
        assert parity["passed"] is True
        assert parity["max_abs_diff"] <= parity["tolerance"]
        scores = server.post("/v1/score", {"inputs": ["a happy day", "a sad day"]}).json()
        assert len(scores["scores"]) == 2
        log = server.logs()
    assert "parity gate passed" in log
    assert f"why: {runtime['selected_because']}" in log
    if not (host_features().fast_bf16 and openvino_installed()):
        assert runtime["backend"] == "onnxruntime"
        assert "the reference runtime" in runtime["selected_because"]
    else:
        # Both candidates were gated and timed; the faster one serves.
        assert "fastest that passed parity" in runtime["selected_because"]
