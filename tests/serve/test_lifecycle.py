"""Start-up, auth, back-pressure, partial failure and graceful drain, each on a real server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx
import pytest
from serve_helpers import SLOW_MODEL_FLAGS, queue_depth, until


def test_auth_on_protects_scoring_but_not_probes(launcher, tiny_model_repo, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(
        "# operators\nsecret-one-0123456789\n\n  # rotated out\nsecret-two-0123456789\n"
    )
    with launcher.running(tiny_model_repo, tmp_path, "--api-keys-file", str(keys)) as srv:
        body = {"inputs": ["hello"]}
        missing = srv.post("/v1/score", body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        wrong = srv.post(
            "/v1/score", body, headers={"authorization": "Bearer secret-one-012345678"}
        )
        assert wrong.status_code == 401
        assert srv.post("/get_reward", {"query": ["x"]}).status_code == 401
        assert srv.get("/v1/models").status_code == 401
        assert srv.get("/v2/models/tiny").status_code == 401
        for key in ("secret-one-0123456789", "secret-two-0123456789"):
            ok = srv.post("/v1/score", body, headers={"authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/v2/health/ready"):
            assert srv.get(open_path).status_code == 200


def test_full_queue_answers_429_with_retry_after(launcher, slow_repo, tmp_path):
    flags = ("--max-queue", "8", "--max-items", "8", "--max-queue-tokens", "0")
    with launcher.running(slow_repo, tmp_path, *SLOW_MODEL_FLAGS, *flags) as srv:

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=120) as client:
                # 8 items of about 20 tokens: more than one batch of 64 tokens
                inputs = [f"item {i} " + "word " * 16 for i in range(8)]
                first = asyncio.create_task(client.post("/v1/score", json={"inputs": inputs}))
                await until(lambda: queue_depth(srv) > 0, "the first request queued")
                more = [f"more {i}" for i in range(8)]
                second = await client.post("/v1/score", json={"inputs": more})
                return await first, second

        first, response = asyncio.run(scenario())
        assert first.status_code == 200
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "queue_full"
        assert srv.post("/v1/score", {"inputs": ["a", "b"]}).status_code == 200
        assert (
            'reward_rejected_total{model="slow@1",reason="queue_full"} 1.0'
            in srv.get("/metrics").text
        )


def test_latency_bound_is_on_by_default(launcher, slow_repo, tmp_path):
    """Default admission settings: behind a request of seconds of work, the next one is refused
    at once with an estimate of when to come back, instead of queueing behind all of it."""
    with launcher.running(slow_repo, tmp_path, *SLOW_MODEL_FLAGS) as srv:

        async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=300) as client:
                # 30 items of 12 tokens: more than the 4 x 64 tokens the queue may hold ahead
                inputs = [f"item {i} " + "word " * 8 for i in range(30)]
                first = asyncio.create_task(client.post("/v1/score", json={"inputs": inputs}))
                await until(lambda: queue_depth(srv) > 0, "the first request queued")
                second = await client.post("/v1/score", json={"inputs": ["next"]})
                # Refused before its body is even parsed: a crowd retrying costs little.
                unparsed = await client.post(
                    "/v1/score", content=b"{not json", headers={"content-type": "application/json"}
                )
                return await first, second, unparsed

        first, refused, unparsed = asyncio.run(scenario())
        assert first.status_code == 200  # a big request into an idle service is served
        for response in (refused, unparsed):
            assert response.status_code == 429, response.text
            assert response.json()["error"]["code"] == "queue_full"
            assert "work" in response.json()["error"]["message"]
            assert int(response.headers["retry-after"]) >= 1


def test_broken_model_beside_a_good_one_is_named_and_503(launcher, two_model_repo, tmp_path):
    with launcher.running(two_model_repo, tmp_path, "--default-model", "tiny") as srv:
        ready = srv.get("/readyz").json()
        assert ready["models"]["tiny@1"] == "ready"
        assert ready["models"]["broken@1"].startswith("unavailable:")
        assert "sha256" in ready["models"]["broken@1"]
        response = srv.post("/v1/score", {"inputs": ["x"], "model": "broken"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_unavailable"
        assert srv.post("/v1/score", {"inputs": ["x"]}).status_code == 200
        card = srv.get("/v1/models/broken").json()
        assert card["available"] is False and "sha256" in card["error"]
        assert 'reward_model_info{backend="none"' in srv.get("/metrics").text


def test_several_models_without_default_need_a_name(launcher, two_model_repo, tmp_path):
    with launcher.running(two_model_repo, tmp_path) as srv:
        response = srv.post("/v1/score", {"inputs": ["x"]})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "model_required"


@pytest.mark.parametrize("damage", ["corrupt", "missing", "empty-repo"])
def test_bad_single_model_exits_before_binding_with_one_line(
    launcher, tiny_model_repo, tmp_path, damage
):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_repo, repo)
    if damage == "corrupt":
        (repo / "tiny" / "1" / "model.onnx").write_bytes(b"not onnx")
    elif damage == "missing":
        (repo / "tiny" / "1" / "tokenizer.json").unlink()
    else:
        shutil.rmtree(repo / "tiny")
    done = subprocess.run(launcher.command(repo), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("reward-service")]
    assert len(errors) == 1 and "error:" in errors[0]
    assert "Traceback" not in done.stderr


def test_invalid_setting_is_one_line_error(launcher, tiny_model_repo):
    command = launcher.command(tiny_model_repo, "--max-batch-tokens", "lots")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "max_batch_tokens" in done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_drains_in_flight_requests_then_exits_zero(launcher, slow_repo, tmp_path):
    """Requests queued when SIGTERM lands all finish within a drain budget that allows it;
    readiness is false and new work is refused while the backlog drains."""
    # A deep queue, opted into (the latency bound, on by default, would refuse most of these),
    # and a drain budget far longer than the backlog needs.
    flags = (*SLOW_MODEL_FLAGS, "--max-queue-tokens", "0", "--drain-seconds", "600")
    with launcher.running(slow_repo, tmp_path, *flags) as srv:

        async def scenario() -> tuple[list[int], int, int]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=600) as client:
                tasks = [
                    asyncio.create_task(
                        client.post("/v1/score", json={"inputs": [f"r{i} {j}" for j in range(6)]})
                    )
                    for i in range(20)
                ]
                await until(lambda: queue_depth(srv) >= 60, "a backlog")
                srv.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)  # for the signal to be handled
                async with httpx.AsyncClient(base_url=srv.url, timeout=30) as fresh:
                    ready = (await fresh.get("/readyz")).status_code
                    late = (await fresh.post("/v1/score", json={"inputs": ["x"]})).status_code
                responses = await asyncio.gather(*tasks)
            return [r.status_code for r in responses], ready, late

        statuses, ready, late = asyncio.run(scenario())
        assert statuses == [200] * 20  # none lost
        assert ready == 503 and late == 503
        assert srv.process.wait(timeout=60) == 0
        assert "drained" in srv.logs()


def test_serving_path_imports_no_torch():
    code = (
        "import sys, argparse\n"
        "import reward_service.serve.main, reward_service.serve.cli, reward_service.schemas\n"
        "from reward_service.serve.routers import health, kserve, metrics, models, score\n"
        "from reward_service.cli import build_parser\n"
        "build_parser().parse_args(['serve', '--port', '1'])\n"
        "reward_service.schemas.openapi()\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
