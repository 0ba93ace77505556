"""Keys checked before anything else, what needs one, what the service reveals, what it loads,
and the warning when it serves other machines without keys: each against a real server."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from service_process import Server, running_server

KEY = "a-real-key-0123456789abcdef"
COMMENTED = "an-old-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(tiny_model_repo, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("keyed")
    keys = tmp / "keys"
    keys.write_text(f"# operators\n{KEY}\n    # {COMMENTED}\n\t#{COMMENTED}\n")
    with running_server(tiny_model_repo, tmp, "--api-keys-file", str(keys)) as srv:
        yield srv


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"content-type": "application/json"}),
        (b'{"inputs": 3}', {"content-type": "application/json"}),
        (b"x" * (17 << 20), {"content-type": "application/json"}),
    ],
)
@pytest.mark.parametrize("path", ["/v1/score", "/get_reward", "/v2/models/tiny/infer"])
def test_the_key_is_checked_before_the_body(keyed, content, headers, path):
    """401 whatever the body: malformed, invalid, or over the size limit; on every door."""
    response = httpx.post(keyed.url + path, content=content, headers=headers, timeout=30)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    if path.startswith("/v2/"):  # the Open Inference Protocol's own shape
        assert isinstance(error, str) and "API key" in error
    else:
        assert error["code"] == "unauthorized"


def test_a_client_without_a_key_is_answered_before_it_sends_its_body(keyed):
    host, port = keyed.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 401")


def test_deny_by_default(keyed):
    for path in ("/openapi.json", "/docs", "/redoc", "/v1/models", "/no/such/route"):
        assert keyed.get(path).status_code == 401, path
        assert keyed.get(path, headers=bearer(KEY)).status_code in (200, 404), path
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert keyed.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (bearer(KEY), 200),
        (basic("openrlhf", KEY), 200),
        (basic(KEY, ""), 200),
        (bearer(COMMENTED), 401),  # indented comment lines are comments
        (bearer(f"# {COMMENTED}"), 401),
        (basic("openrlhf", COMMENTED), 401),
        (basic(KEY[:-1], ""), 401),
        ({"authorization": "Basic not-base64!"}, 401),
        ({"authorization": f"Token {KEY}"}, 401),
    ],
)
def test_bearer_and_basic_keys(keyed, headers, status):
    assert keyed.post("/v1/score", {"inputs": ["hi"]}, headers=headers).status_code == status


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_only_json_bodies_are_read(ort_server, content_type):
    """What a cross-site HTML form can send is never read as a request."""
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(
        ort_server.url + "/v1/score", content=b'{"inputs": ["x"]}', headers=headers, timeout=30
    )
    assert response.status_code == 422 and "Content-Type" in response.json()["error"]["message"]


def test_no_file_path_is_revealed(launcher, two_model_repo, tiny_model_dir, tmp_path):
    with launcher.running(two_model_repo, tmp_path, "--default-model", "tiny") as srv:
        texts = [
            srv.get("/readyz").text,
            srv.get("/v1/models").text,
            srv.get("/v1/models/broken").text,
            srv.get("/v2/models/broken").text,
            srv.post("/v2/models/broken/infer", {"inputs": []}).text,
        ]
    for text in texts:
        assert str(two_model_repo) not in text and "/tmp" not in text, text[:500]
    ready = json.loads(texts[0])["models"]["broken@1"]
    assert ready.startswith("unavailable:") and "broken@1" in ready and "sha256" in ready
    base = json.loads(texts[1])["data"][1]["manifest"]["base_model"]
    assert "/" not in base and base, base
    assert "sha256" in srv.logs() and str(two_model_repo) in srv.logs()  # the operator's log


def test_a_swapped_tokenizer_is_refused(launcher, tiny_model_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_repo, repo)
    tokenizer = repo / "tiny" / "1" / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["normalizer"] = None  # a tokenizer that no longer lowercases: different ids
    tokenizer.write_text(json.dumps(data))
    done = subprocess.run(launcher.command(repo), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("reward-service")]
    assert "tokenizer.json" in error and "sha256" in error


@pytest.mark.parametrize(("host", "keys", "warned"), [
    ("0.0.0.0", False, True), ("0.0.0.0", True, False), ("127.0.0.1", False, False),
])  # fmt: skip
def test_serving_beyond_loopback_without_keys_is_loud(
    launcher, tiny_model_repo, tmp_path, host, keys, warned
):
    flags = ["--host", host]
    if keys:
        (tmp_path / "keys").write_text(KEY + "\n")
        flags += ["--api-keys-file", str(tmp_path / "keys")]
    with launcher.running(tiny_model_repo, tmp_path, *flags) as srv:
        logs = srv.logs()
    assert ("AUTH IS OFF" in logs) is warned
