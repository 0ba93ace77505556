"""The labeling loop's own parts (scripts/demo_loop.py) against the real things: simulated
annotators through a real `feedback serve` on SQLite and the real export, the app's active
selection asking a real reward service, and publishing a new reward model version to a real
running service and waiting until hot reload serves it. The whole three-round loop takes tens
of minutes on a 2-core machine; docs/feedback.md has its run.
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
from demo import Screen


def gold(responses: list[str]) -> list[float]:
    return [1.0 if is_positive(r) else 0.0 for r in responses]


def test_gold_within_the_margin_is_a_skip_and_noise_flips_the_gold_choice() -> None:
    rng = random.Random(0)
    assert demo_loop.simulated_choice([0.9, 0.1], 0.0, 0.1, rng) == 0
    assert demo_loop.simulated_choice([0.1, 0.9], 1.0, 0.1, rng) == 0
    assert demo_loop.simulated_choice([0.5, 0.5], 0.0, 0.0, rng) is None
    assert demo_loop.simulated_choice([0.50, 0.55], 0.0, 0.1, rng) is None
    assert demo_loop.simulated_choice([0.50, 0.65], 0.0, 0.1, rng) == 1


def test_on_policy_accuracy_counts_every_decisive_pair_of_a_prompt() -> None:
    # One prompt, three samples: pairs (a, b) and (a, c) are decisive, (b, c) is within the
    # margin; the proxy orders (a, b) as gold does and (a, c) the other way.
    rows = [
        {"prompt": "p", "gold": 0.5, "proxy": 1.0},
        {"prompt": "p", "gold": 0.0, "proxy": 0.0},
        {"prompt": "p", "gold": 0.05, "proxy": 2.0},
        {"prompt": "q", "gold": 0.9, "proxy": 0.0},
    ]
    assert demo_loop.pair_accuracy(rows, 0.1) == (0.5, 2)
    assert demo_loop.pair_accuracy(rows, 0.0) == (2 / 3, 3)


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_simulated_annotators_label_every_task_through_the_api(
    sqlite_db: str, tmp_path: Path, noise: float
) -> None:
    tasks = sentiment_tasks(12, seed=5)
    # Two ties (both responses positive): no preference, so both annotators skip them.
    ties = [
        {"prompt": f"tie {i}", "responses": [f"it is wonderful ({i})", f"it is great ({i})"]}
        for i in range(2)
    ]
    path = write_tasks(tmp_path / "t.jsonl", tasks + ties)
    feedback("import", "--db", sqlite_db, "--tasks", path)
    tokens = [new_annotator(sqlite_db, name) for name in ("sim-1", "sim-2")]
    with running_app(sqlite_db, tmp_path, "--gold-every", "0") as app:
        labeled, skipped = demo_loop.label_all(app.url, tokens, gold, noise, 0.5, seed=1)
    assert (labeled, skipped) == (len(tasks), 2 * len(ties))
    out = tmp_path / "labels.jsonl"
    feedback("export", "--db", sqlite_db, "--output", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(tasks)
    assert {r["annotator"] for r in rows} == {"sim-1", "sim-2"}
    # No noise: every label is gold's; all noise: every label is the other one.
    assert all(is_positive(r["chosen"]) == (noise == 0.0) for r in rows)


def test_the_labeling_app_serves_what_the_served_rm_is_least_sure_about_first(
    sqlite_db: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    repo = seeded_repository(tiny_model_repo, tmp_path)
    tasks = sentiment_tasks(16, seed=7)
    feedback("import", "--db", sqlite_db, "--tasks", write_tasks(tmp_path / "t.jsonl", tasks))
    token = new_annotator(sqlite_db, "sim-1")
    screen = Screen(total=1, quiet=True)
    with running_server(repo, tmp_path) as server:
        pairs = [
            {"prompt": t["prompt"], "chosen": t["responses"][0], "rejected": t["responses"][1]}
            for t in tasks
        ]
        answer = httpx.post(
            f"{server.url}/v1/compare", json={"model": demo_loop.SERVED, "pairs": pairs}
        ).json()
        uncertainty = {
            t["prompt"]: abs(p - 0.5) for t, p in zip(tasks, answer["probabilities"], strict=True)
        }
        log = tmp_path / "app.log"
        with demo_loop.labeling_app(Path(sqlite_db), server.url, log, screen, "t") as app:
            labeled, _ = demo_loop.label_all(app, [token], gold, 0.0, 0.5, seed=1, budget=4)
    assert labeled == 4
    assert "active selection on: 16 tasks scored" in log.read_text()
    out = tmp_path / "labels.jsonl"
    feedback("export", "--db", sqlite_db, "--output", out)
    chosen = {json.loads(line)["prompt"] for line in out.read_text().splitlines()}
    assert len(chosen) == 4
    others = set(uncertainty) - chosen
    # The model is not equally unsure of every pair, so another order would show.
    assert min(uncertainty[p] for p in others) < max(uncertainty.values())
    assert max(uncertainty[p] for p in chosen) <= min(uncertainty[p] for p in others)


def seeded_repository(tiny_model_repo: Path, tmp_path: Path) -> Path:
    """The loop's repository (`demo` and `frozen`, version 1) seeded from the tiny model."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_repo / "tiny" / "1", base / demo_loop.SERVED / "1")
    manifest = base / demo_loop.SERVED / "1" / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"name": "demo"}))
    repo = tmp_path / "repo"
    demo_loop.seed_repository(base, repo)
    return repo


def test_a_published_version_is_waited_for_and_a_refused_one_stops_the_loop(
    tiny_model_repo: Path, tmp_path: Path
) -> None:
    repo = seeded_repository(tiny_model_repo, tmp_path)
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
