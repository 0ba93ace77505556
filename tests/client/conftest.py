"""Fixtures: scripted loopback servers (see scripted_server.py) and a URL nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from scripted_server import ScriptedServer


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
