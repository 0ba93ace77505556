"""Security of the running app: every route but /login needs a valid token, tokens are stored
hashed and never logged, labels belong to whoever logged in, cookie requests need the CSRF
token, and nothing a client sends gets a 500."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from feedback_process import App, feedback, new_annotator, running_app

from reward_service.feedback.annotators import hash_token
from reward_service.feedback.app import ROUTERS
from reward_service.feedback.auth import COOKIE, csrf_token


@dataclass
class Setup:
    app: App
    db: str
    ada: str
    bob: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("security")
    db = str(tmp / "labels.db")
    tasks = tmp / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"prompt": f"<script>alert({i})</script>", "responses": ["a", "b"], "k": 2})
            + "\n"
            for i in range(6)
        )
    )
    feedback("import", "--db", db, "--tasks", tasks)
    ada, bob = new_annotator(db, "ada"), new_annotator(db, "bob")
    with running_app(db, tmp) as app:
        yield Setup(app, db, ada, bob)


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) of every router the app includes, path parameters filled in."""
    routes = []
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            routes.extend((method, path) for method in sorted(route.methods))
    return routes


ROUTES = app_routes()


def test_the_route_list_is_the_app_not_a_copy():
    assert set(ROUTES) >= {
        ("GET", "/login"),
        ("GET", "/"),
        ("GET", "/tasks/1"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/next"),
        ("GET", "/api/v1/tasks/1"),
        ("GET", "/api/v1/progress"),
        ("POST", "/api/v1/labels"),
        ("POST", "/api/v1/undo"),
    }


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] != "/login"])
@pytest.mark.parametrize("credential", ["none", "bad-bearer", "bad-cookie", "hash-as-token"])
def test_every_route_but_login_needs_a_valid_token(setup, method, path, credential):
    headers, cookies = {}, {}
    if credential == "bad-bearer":
        headers["Authorization"] = "Bearer not-a-token"
    elif credential == "bad-cookie":
        cookies[COOKIE] = "not-a-token"
    elif credential == "hash-as-token":
        headers["Authorization"] = f"Bearer {hash_token(setup.ada)}"  # a leaked DB is no key
    client = httpx.Client(base_url=setup.app.url, cookies=cookies, timeout=30)
    response = client.request(method, path, headers=headers, json={} if method == "POST" else None)
    assert response.status_code == 401, (method, path, response.text)


def test_tokens_are_stored_hashed_and_never_logged(setup):
    raw = b"".join(p.read_bytes() for p in Path(setup.db).parent.glob("labels.db*"))
    for token in (setup.ada, setup.bob):
        assert token.encode() not in raw
        assert hash_token(token).encode() in raw
    httpx.get(f"{setup.app.url}/login", params={"token": setup.ada}, timeout=30)
    assert "/login?token=[redacted]" in setup.app.logs()
    assert setup.ada not in setup.app.logs()


def test_login_sets_a_strict_session_cookie_and_refuses_bad_tokens(setup):
    bad = httpx.get(f"{setup.app.url}/login", params={"token": "x" * 43}, timeout=30)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    too_long = httpx.get(f"{setup.app.url}/login", params={"token": "x" * 5000}, timeout=30)
    assert too_long.status_code == 401
    good = httpx.get(f"{setup.app.url}/login", params={"token": setup.ada}, timeout=30)
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    page = httpx.get(setup.app.url + "/", cookies={COOKIE: setup.ada}, timeout=30)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'nonce-" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    # Task text is escaped, never markup: the only script is the page's own.
    assert "&lt;script&gt;alert(" in page.text and page.text.count("<script") == 1


def test_cookie_requests_that_change_state_need_the_csrf_token(setup):
    client = httpx.Client(base_url=setup.app.url, cookies={COOKIE: setup.bob}, timeout=30)
    task_id = client.get("/api/v1/next").json()["task"]["id"]
    body = {"task_id": task_id, "answer": 0}
    assert client.post("/api/v1/labels", json=body).status_code == 403
    wrong = {"X-CSRF-Token": csrf_token(setup.ada)}  # another session's token
    assert client.post("/api/v1/labels", json=body, headers=wrong).status_code == 403
    form = client.post(
        "/api/v1/labels", data={"task_id": str(task_id), "answer": "0"}, headers=wrong
    )
    assert form.status_code == 403
    assert client.post("/api/v1/undo").status_code == 403
    assert client.get("/api/v1/progress").json()["labeled"] == 0  # nothing got through
    right = {"X-CSRF-Token": csrf_token(setup.bob)}
    assert client.post("/api/v1/labels", json=body, headers=right).status_code == 201
    assert client.post("/api/v1/undo", headers=right).status_code == 200


def test_labels_are_bound_to_the_logged_in_annotator(setup, tmp_path):
    ada = setup.app.client(setup.ada)
    bob = setup.app.client(setup.bob)
    task_id = ada.get("/api/v1/next").json()["task"]["id"]
    forged = ada.post("/api/v1/labels", json={"task_id": task_id, "answer": 1, "annotator_id": 2})
    assert forged.status_code == 422 and "annotator_id" in forged.json()["error"]["message"]
    posted = ada.post("/api/v1/labels", json={"task_id": task_id, "answer": 1})
    assert posted.status_code == 201
    assert bob.post("/api/v1/undo").status_code == 404  # Bob has nothing; Ada's is not his
    out = tmp_path / "labels.jsonl"
    feedback("export", "--db", setup.db, "--output", out)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["annotator"], row["task_id"]) == ("ada", task_id)
    assert ada.get("/api/v1/me").json()["name"] == "ada"


def test_a_new_token_locks_out_the_old_one(setup):
    fresh = feedback("annotator", "--db", setup.db, "--name", "bob", "--new-token").stdout
    new = fresh.strip().removeprefix("/login?token=")
    assert setup.app.client(setup.bob).get("/api/v1/me").status_code == 401
    assert setup.app.client(new).get("/api/v1/me").status_code == 200
    setup.bob = new


BAD_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{",
    b'{"task_id": "1", "answer": 0}',
    b'{"task_id": 1.5, "answer": 0}',
    b'{"task_id": 1, "answer": "0"}',
    b'{"task_id": 1, "answer": [0, "x"]}',
    b'{"task_id": 1, "answer": {"a": 1}}',
    b'{"task_id": 1, "skip": "yes"}',
    b'{"task_id": 1, "answer": 0, "unsafe": [1, 0]}',
    b'{"task_id": 1, "answer": 0, "unsafe": [true, true, true, true, true, true, true, true, '
    b"true, true]}",
    b'{"task_id": 99999999999999999999999, "answer": 0}',
    b'{"task_id": -1, "answer": 0}',
    b'{"task_id": 1, "answer": 1e309}',
    '{"task_id": 1, "answer": 0, "x": "\u0000\ud800"}'.encode("utf-8", "surrogatepass"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_bodies_get_a_clear_4xx(setup, body):
    client = setup.app.client(setup.ada)
    response = client.post(
        "/api/v1/labels", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
    assert response.json()["error"]["message"]


def test_oversized_bodies_are_refused_before_reading(setup):
    client = setup.app.client(setup.ada)
    huge = b'{"task_id": 1, "answer": 0, "pad": "' + b"x" * 200_000 + b'"}'
    response = client.post(
        "/api/v1/labels", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit must hold for a streamed body too
        yield b'{"task_id": 1, "answer": 0, "pad": "'
        for _ in range(50):
            yield b"x" * 4096
        yield b'"}'

    streamed = client.post(
        "/api/v1/labels", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413


def test_unknown_task_pages_and_paths(setup):
    client = setup.app.client(setup.ada)
    assert client.get("/api/v1/tasks/424242").status_code == 404
    assert client.get("/tasks/424242").status_code == 404
    assert client.get("/tasks/not-a-number").status_code == 422
    assert client.get("/api/v1/tasks/99999999999999999999").status_code == 422
    assert client.delete("/api/v1/labels").status_code == 405
    assert "Traceback" not in setup.app.logs() and " 500 " not in setup.app.logs()
