"""Nothing is lost, on SQLite and PostgreSQL: two annotators labeling at once through the API,
and a server killed with SIGKILL in the middle of a stream of labels."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from feedback_data import sentiment_tasks, write_tasks
from feedback_process import feedback, new_annotator, running_app


def label_until_done(client: httpx.Client, acked: list[dict], errors: list[str]) -> None:
    """One annotator: take the next task, answer it, repeat; remember every acknowledgement."""
    while True:
        task = client.get("/api/v1/next").json()["task"]
        if task is None:
            return
        response = client.post("/api/v1/labels", json={"task_id": task["id"], "answer": 0})
        if response.status_code == 201:
            acked.append(response.json()["label"])
        else:
            errors.append(f"{response.status_code} {response.text}")
            return


def exported(db: str, tmp_path) -> list[dict]:
    out = tmp_path / "export.jsonl"
    feedback("export", "--db", db, "--output", out)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_two_annotators_at_once_lose_nothing(db, tmp_path, k):
    tasks = write_tasks(tmp_path / "tasks.jsonl", sentiment_tasks(30, seed=5))
    feedback("import", "--db", db, "--tasks", tasks, "--k", str(k))
    tokens = {name: new_annotator(db, name) for name in ("ada", "bob")}
    acked: dict[str, list[dict]] = {name: [] for name in tokens}
    errors: list[str] = []
    with running_app(db, tmp_path) as app:
        threads = [
            threading.Thread(target=label_until_done, args=(app.client(token), acked[name], errors))
            for name, token in tokens.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    rows = exported(db, tmp_path)
    got = {(row["annotator"], row["label_id"]) for row in rows}
    sent = {(name, label["id"]) for name, labels in acked.items() for label in labels}
    assert got == sent  # every acknowledged label, and nothing else
    per_task: dict[int, set[str]] = {}
    for row in rows:
        per_task.setdefault(row["task_id"], set()).add(row["annotator"])
    assert len(per_task) == 30
    if k == 2:
        assert all(names == {"ada", "bob"} for names in per_task.values())
    # Both worked: with k = 1 they split the tasks (a simultaneous pick may double one up).
    assert all(acked.values())


@pytest.mark.slow
def test_a_killed_server_loses_no_acknowledged_label(db, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", sentiment_tasks(60, seed=6))
    feedback("import", "--db", db, "--tasks", tasks)
    token = new_annotator(db, "ada")
    acked: list[dict] = []
    enough = threading.Event()

    def stream(client: httpx.Client) -> None:
        try:
            while (task := client.get("/api/v1/next").json()["task"]) is not None:
                response = client.post("/api/v1/labels", json={"task_id": task["id"], "answer": 1})
                assert response.status_code == 201, response.text
                acked.append(response.json()["label"])
                if len(acked) >= 15:
                    enough.set()
        except httpx.TransportError:
            return  # the server died under us: what it acknowledged must be on disk
        finally:
            enough.set()

    with running_app(db, tmp_path) as app:
        worker = threading.Thread(target=stream, args=(app.client(token),))
        worker.start()
        assert enough.wait(timeout=300)
        app.process.kill()  # SIGKILL: no shutdown hook, no flush
        app.process.wait()
        worker.join()
    assert 15 <= len(acked) < 60
    rows = exported(db, tmp_path)
    on_disk, sent = {row["label_id"] for row in rows}, {label["id"] for label in acked}
    assert sent <= on_disk
    assert len(on_disk - sent) <= 1  # at most the one in flight when the server died

    # A restarted server carries on where the acknowledged labels left off.
    with running_app(db, tmp_path) as app:
        client = app.client(token)
        progress = client.get("/api/v1/progress").json()
        assert progress == {"labeled": len(rows), "skipped": 0, "remaining": 60 - len(rows)}
        done = {row["task_id"] for row in rows}
        assert client.get("/api/v1/next").json()["task"]["id"] not in done
