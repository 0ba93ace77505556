"""Hot model reload against a real server: versions published into its repository while clients
score are verified, warmed and swapped in without a failed request; broken ones are refused
with their reason while the version before them keeps serving."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from service_process import Server, running_server

CLIENTS = 16
SERVED_WITHIN_S = 10.0  # the promise: a published version serves within 10 s
KEY = "reload-key-0123456789abcdef"


def stage(tiny_model_dir: Path, root: Path, version: int) -> Path:
    """A copy of the tiny model relabelled as ``tiny@version``, outside the repository."""
    folder = root / f"staged-{version}"
    shutil.copytree(tiny_model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def corrupt_weights(folder: Path) -> Path:
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"not the exported graph")
    return folder


def shift_reference_scores(folder: Path) -> Path:
    """The manifest vouches for scores the graph does not give: the parity gate must refuse."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for example in manifest["reference"]:
        example["score"] += 1.0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def publish(staged: Path, repo: Path, version: int) -> float:
    """Copy beside the live versions under a hidden name, then rename: what export does."""
    hidden = repo / "tiny" / f".tmp-{version}"
    shutil.copytree(staged, hidden)
    hidden.rename(repo / "tiny" / str(version))
    return time.monotonic()


@dataclass
class Clients:
    """Threads that score one pair after another until stopped, each with its own connection."""

    server: Server
    results: list[tuple[float, float, int, str]] = field(default_factory=list)  # start, end
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, n: int) -> None:
        for i in range(n):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, i: int) -> None:
        body = {"model": "tiny", "inputs": [{"prompt": f"client {i}", "response": "a fine day"}]}
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/score", json=body)
                    status, model = response.status_code, response.json().get("model", "")
                    model = f"{model}@{response.json().get('version')}" if status == 200 else model
                except httpx.HTTPError as exc:
                    status, model = 0, type(exc).__name__
                self.results.append((started, time.monotonic(), status, model))

    def first(self, model: str) -> tuple[float, float, int, str] | None:
        return min((r for r in list(self.results) if r[3] == model), default=None)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout:g} s")


def metric(server: Server, family: str, **labels: str) -> float:
    text = server.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{family}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


@pytest.fixture
def live_repo(tiny_model_dir, tmp_path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, repo / "tiny" / "1")
    return repo


def test_a_published_version_serves_without_a_failed_request_and_a_broken_one_is_refused(
    live_repo, tiny_model_dir, tmp_path
):
    staged = {
        2: stage(tiny_model_dir, tmp_path, 2),
        3: corrupt_weights(stage(tiny_model_dir, tmp_path, 3)),
        4: shift_reference_scores(stage(tiny_model_dir, tmp_path, 4)),
    }
    with running_server(live_repo, tmp_path) as server:  # the default poll interval
        clients = Clients(server)
        clients.start(CLIENTS)
        try:
            wait_for(lambda: len(clients.results) >= 4 * CLIENTS, 60, "clients scoring")
            published = publish(staged[2], live_repo, 2)
            first_v2 = wait_for(lambda: clients.first("tiny@2"), SERVED_WITHIN_S, "tiny@2")
            assert first_v2[1] - published <= SERVED_WITHIN_S
            wait_for(
                lambda: "tiny@1" not in {m["id"] for m in server.get("/v1/models").json()["data"]},
                60,
                "tiny@1 retired",
            )

            publish(staged[3], live_repo, 3)
            publish(staged[4], live_repo, 4)
            server.post("/v1/admin/reload")  # waits for a check in progress, if any
            listed = server.get("/v1/models").json()
            refused = [
                metric(server, "reward_model_reloads_total", model=m, outcome="refused")
                for m in ("tiny@3", "tiny@4")
            ]
            time.sleep(1.0)  # the clients go on scoring against tiny@2 a while longer
        finally:
            clients.finish()

    results = clients.results
    failed = [r for r in results if r[2] != 200]
    assert not failed, failed[:5]
    assert {r[3] for r in results} == {"tiny@1", "tiny@2"}
    # Once a request got tiny@2, every request that started after it got tiny@2 too.
    assert all(r[3] == "tiny@2" for r in results if r[0] > first_v2[1])
    last_started = max(r[0] for r in results)
    assert last_started > first_v2[1] + 1.0

    cards = {m["id"]: m for m in listed["data"]}
    assert cards["tiny@2"]["available"]
    assert not cards["tiny@3"]["available"] and "sha256" in cards["tiny@3"]["error"]
    assert not cards["tiny@4"]["available"] and "parity" in cards["tiny@4"]["error"]
    assert str(tmp_path) not in json.dumps(listed)
    events = [(e["model"], e["event"]) for e in listed["reload"]["events"]]
    for expected in [("tiny@2", "loaded"), ("tiny@1", "retired"), ("tiny@3", "refused")]:
        assert expected in events
    assert ("tiny@4", "refused") in events
    assert refused == [1, 1]

    log = server.logs()
    assert "reload: tiny now serves tiny@2 (was tiny@1)" in log
    assert "reload: tiny@1 drained" in log
    assert re.search(r"reload: refused tiny@3: .*sha256.*; tiny still serves tiny@2", log)
    assert "Traceback" not in log


def test_the_admin_call_reloads_at_once_and_needs_a_key(live_repo, tiny_model_dir, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    flags = ("--reload-interval-seconds", "0", "--api-keys-file", str(keys))
    with running_server(live_repo, tmp_path, *flags) as server:
        auth = {"authorization": f"Bearer {KEY}"}
        publish(stage(tiny_model_dir, tmp_path, 2), live_repo, 2)
        assert server.post("/v1/admin/reload").status_code == 401
        listed = server.get("/v1/models", headers=auth).json()
        assert [m["id"] for m in listed["data"]] == ["tiny@1"]  # no polling: nothing changed
        answer = server.post("/v1/admin/reload", headers=auth)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [(c["model"], c["event"]) for c in body["changes"]] == [("tiny@2", "loaded")]
        assert body["serving"] == {"tiny": "tiny@2"}
        scored = server.post("/v1/score", {"inputs": ["a fine day"]}, headers=auth).json()
        assert (scored["model"], scored["version"]) == ("tiny", 2)
        assert metric(server, "reward_model_serving_version", name="tiny") == 2
        assert metric(server, "reward_model_reloads_total", model="tiny@2", outcome="loaded") == 1
        again = server.post("/v1/admin/reload", headers=auth).json()
        assert again["changes"] == []  # a version is tried once, not at every check
