"""Fixtures: scripted loopback servers (see scripted_server.py), a URL nobody listens on, and
the PPO area's tiny policy and prompts for the CLI runs of test_outage.py."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from ppo.conftest import prompts_file, tiny_policy
from scripted_server import ScriptedServer

__all__ = ["prompts_file", "tiny_policy"]


@pytest.fixture
def make_server() -> Iterator[Callable[[], ScriptedServer]]:
    """Starts scripted servers on free loopback ports and stops them after the test."""
    servers: list[ScriptedServer] = []

    def start() -> ScriptedServer:
        servers.append(ScriptedServer().start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens: the port was free a moment ago and is closed now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
