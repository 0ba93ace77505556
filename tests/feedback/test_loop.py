"""The labeling loop's own parts (scripts/demo_loop.py) against the real things: simulated
annotators through a real `feedback serve` on SQLite and the real export, and publishing a new
reward model version to a real running service and waiting until hot reload serves it. The
whole three-round loop takes tens of minutes on a 2-core machine; docs/feedback.md has its run.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from feedback_data import is_positive, sentiment_tasks, write_tasks
from feedback_process import feedback, new_annotator, running_app
from service_process import running_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import demo_loop


def gold(responses: list[str]) -> list[float]:
    return [1.0 if is_positive(r) else 0.0 for r in responses]


def test_a_tie_is_a_coin_flip_and_noise_flips_the_gold_choice() -> None:
    rng = random.Random(0)
    assert demo_loop.simulated_choice([0.9, 0.1], 0.0, rng) == 0
    assert demo_loop.simulated_choice([0.1, 0.9], 1.0, rng) == 0
    ties = {demo_loop.simulated_choice([0.5, 0.5], 0.0, rng) for _ in range(50)}
    assert ties == {0, 1}


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_simulated_annotators_label_every_task_through_the_api(
    sqlite_db: str, tmp_path: Path, noise: float
) -> None:
    tasks = sentiment_tasks(12, seed=5)
    feedback("import", "--db", sqlite_db, "--tasks", write_tasks(tmp_path / "t.jsonl", tasks))
    tokens = [new_annotator(sqlite_db, name) for name in ("sim-1", "sim-2")]
    with running_app(sqlite_db, tmp_path, "--gold-every", "0") as app:
        labeled = demo_loop.label_all(app.url, tokens, gold, noise, seed=1)
    assert labeled == len(tasks)
    out = tmp_path / "labels.jsonl"
    feedback("export", "--db", sqlite_db, "--output", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(tasks)
    assert {r["annotator"] for r in rows} == {"sim-1", "sim-2"}
    # No noise: every label is gold's; all noise: every label is the other one.
    assert all(is_positive(r["chosen"]) == (noise == 0.0) for r in rows)


def test_a_published_version_is_waited_for_and_a_refused_one_stops_the_loop(
    tiny_model_repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_repo / "tiny" / "1", base / demo_loop.SERVED / "1")
    manifest = base / demo_loop.SERVED / "1" / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"name": "demo"}))
    repo = tmp_path / "repo"
    demo_loop.seed_repository(base, repo)
    with running_server(repo, tmp_path, "--reload-interval-seconds", "0") as server:
        served = {m["name"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
        assert served == {demo_loop.SERVED, demo_loop.FROZEN}
        second = repo / demo_loop.SERVED / "2"
        shutil.copytree(repo / demo_loop.SERVED / "1", second)
        (second / "manifest.json").write_text(
            json.dumps(json.loads((second / "manifest.json").read_text()) | {"version": 2})
        )
        demo_loop.wait_until_serving(server.url, demo_loop.SERVED, 2, timeout=120)
        answer = httpx.post(
            f"{server.url}/v1/score", json={"model": demo_loop.SERVED, "inputs": ["fine"]}
        ).json()
        assert answer["version"] == 2
        frozen = httpx.post(
            f"{server.url}/v1/score", json={"model": demo_loop.FROZEN, "inputs": ["fine"]}
        ).json()
        assert frozen["version"] == 1
        third = repo / demo_loop.SERVED / "3"
        shutil.copytree(second, third)
        (third / "manifest.json").write_text(
            json.dumps(json.loads((third / "manifest.json").read_text()) | {"version": 3})
        )
        (third / "model.onnx").write_bytes(b"not a model")
        with pytest.raises(SystemExit, match="refused demo@3"):
            demo_loop.wait_until_serving(server.url, demo_loop.SERVED, 3, timeout=120)
