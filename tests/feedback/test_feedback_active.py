"""Active selection against a real ``reward-service serve`` of the tiny ONNX model: tasks come
in order of |P(a ≻ b) − 0.5| as /v1/compare reports it, and a dead URL stops start-up."""

from __future__ import annotations

from itertools import combinations

import pytest
from feedback_data import sentiment_tasks, write_tasks
from feedback_process import feedback, free_port, new_annotator, running_app
from service_process import running_server
from sqlalchemy import update

from reward_service.feedback.active import RewardService, score_open_tasks
from reward_service.feedback.db import open_database
from reward_service.feedback.models import Task


@pytest.fixture(scope="module")
def reward_server(tiny_model_repo, tmp_path_factory):
    with running_server(tiny_model_repo, tmp_path_factory.mktemp("rm-serve")) as server:
        yield server


def expected_order(server, tasks: list[dict]) -> list[str]:
    """Prompts sorted by the model's least certain pair, asked of the service directly."""
    certainty = {}
    for task in tasks:
        pairs = [
            {
                "prompt": task["prompt"],
                "chosen": task["responses"][i],
                "rejected": task["responses"][j],
            }
            for i, j in combinations(range(len(task["responses"])), 2)
        ]
        probabilities = server.post("/v1/compare", {"pairs": pairs}).json()["probabilities"]
        certainty[task["prompt"]] = min(abs(p - 0.5) for p in probabilities)
    return sorted(certainty, key=certainty.get)


@pytest.mark.slow
def test_least_certain_tasks_come_first(reward_server, sqlite_db, tmp_path):
    tasks = sentiment_tasks(10, seed=11)
    tasks.append(
        {"prompt": "Rank these.", "responses": ["it is lovely", "it is awful", "it is a day"]}
    )
    feedback("import", "--db", sqlite_db, "--tasks", write_tasks(tmp_path / "t.jsonl", tasks))
    token = new_annotator(sqlite_db, "ada")
    with running_app(sqlite_db, tmp_path, "--reward-url", reward_server.url) as app:
        client = app.client(token)
        served = []
        while (task := client.get("/api/v1/next").json()["task"]) is not None:
            served.append(task["prompt"])
            client.post("/api/v1/labels", json={"task_id": task["id"], "skip": True})
        assert "active selection on: 11 tasks scored" in app.logs()
    assert served == expected_order(reward_server, tasks)


def test_tasks_are_rescored_only_for_a_new_model_version(reward_server, sqlite_db, tmp_path):
    tasks = write_tasks(tmp_path / "t.jsonl", sentiment_tasks(4, seed=12))
    feedback("import", "--db", sqlite_db, "--tasks", tasks)
    database = open_database(sqlite_db)
    service = RewardService(reward_server.url)
    try:
        assert score_open_tasks(database, service) == 4
        assert score_open_tasks(database, service) == 0  # same version: nothing to redo
        with database.write() as session:
            session.execute(update(Task).values(scored_by="tiny@0"))
        assert score_open_tasks(database, service) == 4  # an older version's scores are stale
    finally:
        service.close()
        database.close()


def test_an_unreachable_reward_service_stops_start_up(sqlite_db, tmp_path):
    tasks = write_tasks(tmp_path / "t.jsonl", sentiment_tasks(2, seed=13))
    feedback("import", "--db", sqlite_db, "--tasks", tasks)
    dead = f"http://127.0.0.1:{free_port()}"
    done = feedback(
        "serve", "--db", sqlite_db, "--port", str(free_port()), "--reward-url", dead, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("reward-service feedback serve: error:")
    assert dead in done.stderr and "Traceback" not in done.stderr


def test_the_model_key_is_the_named_or_default_models_version(reward_server):
    for service in (RewardService(reward_server.url), RewardService(reward_server.url, "tiny")):
        try:
            assert service.model_key() == "tiny@1"
        finally:
            service.close()
