"""``reward-service serve``: load, verify and warm every model, then bind and serve.

Flags mirror :class:`~reward_service.serve.settings.Settings` one to one (``--max-batch-tokens``
for ``max_batch_tokens``) and override the ``REWARD_SERVICE_*`` environment. A model that cannot
load stops the service before it binds, with one line on stderr and exit status 2.

SIGTERM (or Ctrl-C) starts a drain: readiness turns false, new scoring requests get 503 so
clients retry elsewhere, in-flight and queued requests finish, then the process exits 0. The
whole of it, drain and shutdown, fits in ``drain_seconds``: work still queued at that deadline
is answered 503 (the client retries elsewhere, nothing is silently lost) and the server stops
waiting for connections, so a pod's grace period of preStop + ``drain_seconds`` + a few seconds
is never outlived. A second signal stops the process at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import socket
import sys
import time
import typing
from types import FrameType

import uvicorn
from pydantic import ValidationError

from reward_service.repository import ModelLoadError
from reward_service.serve.auth import KeyFileError, read_keys
from reward_service.serve.grpc.server import GrpcBindError, GrpcFrontDoor
from reward_service.serve.main import create_app
from reward_service.serve.protocol import header_deadline_protocol
from reward_service.serve.registry import load_registry
from reward_service.serve.settings import Settings
from reward_service.serve.state import Service

log = logging.getLogger("reward_service.serve")

SHUTDOWN_GRACE_S = 1.0  # kept at the end of a drain for answers to go out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "").replace(
            "%", "%%"
        ) + f" (env REWARD_SERVICE_{name.upper()})"
        if field.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        choices = typing.get_args(field.annotation) if _is_literal(field.annotation) else None
        parser.add_argument(
            flag,
            dest=name,
            default=argparse.SUPPRESS,
            choices=choices or None,
            metavar=name.upper() if not choices else None,
            help=help_text,
        )


def _is_literal(annotation: object) -> bool:
    return typing.get_origin(annotation) is typing.Literal


def settings_from(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    return Settings(**given)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"{p}: " for p in error["loc"])
        print(f"reward-service serve: error: {where}{error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        keys = read_keys(settings.api_keys_file) if settings.api_keys_file else ()
        registry = load_registry(settings)
    except (ModelLoadError, KeyFileError) as exc:
        print(f"reward-service serve: error: {exc}", file=sys.stderr)
        return 2
    service = Service(settings=settings, registry=registry, api_keys=keys)
    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        http=header_deadline_protocol(settings.header_timeout_seconds, service.metrics),
        ws="none",
        log_config=None,
        access_log=False,
    )
    grpc_door = GrpcFrontDoor(service) if settings.grpc_port else None
    log.info(
        "serving %d model(s) on http://%s:%d%s (auth %s)",
        len(registry.available()),
        settings.host,
        settings.port,
        f" and grpc://{grpc_door.address}" if grpc_door else "",
        "on" if keys else "off",
    )
    if not keys and not loopback_only(settings.host):
        log.warning(
            "AUTH IS OFF on %s, which is reachable from other machines: anyone who can reach "
            "port %d can use this service. Set REWARD_SERVICE_API_KEYS_FILE (docs/serving.md), "
            "or bind 127.0.0.1.",
            settings.host,
            settings.port,
        )
    try:
        DrainingServer(config, service, grpc_door).run()
    except GrpcBindError as exc:
        print(f"reward-service serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


def loopback_only(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain between the first signal and the shutdown, all of it within
    ``drain_seconds``: queued work is answered 503 early enough for the batch in progress to
    finish and for its answers to go out before the end."""

    def __init__(
        self, config: uvicorn.Config, service: Service, grpc_door: GrpcFrontDoor | None = None
    ) -> None:
        super().__init__(config)
        self.service = service
        self.grpc_door = grpc_door
        self.drain_end: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # gRPC binds first, so a taken port stops start-up before anything serves, and takes
        # calls only once the lifespan has started the batchers.
        if self.grpc_door is not None:
            self.grpc_door.bind()
        await super().startup(sockets)
        if self.grpc_door is not None:
            await self.grpc_door.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Before the lifespan stops the batchers; the drain already waited for in-flight calls.
        if self.grpc_door is not None:
            await self.grpc_door.stop(grace=1.0)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_end is None and not self.should_exit:
            self.service.draining = True
            self.drain_end = time.monotonic() + self.service.settings.drain_seconds
            log.info("signal %d: draining %d request(s)", sig, self.service.in_flight)
            return
        self.force_exit = True
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_end is not None and not self.should_exit:
            left = self.drain_end - time.monotonic()
            if self.service.in_flight == 0:
                log.info("drained; shutting down")
                self._shut_down(left)
            elif left < SHUTDOWN_GRACE_S + self.service.registry.running_seconds():
                aborted = self.service.registry.abort_queued("the drain deadline passed")
                log.warning(
                    "drain deadline: %d request(s) in flight; %d queued answered 503",
                    self.service.in_flight,
                    aborted,
                )
                self._shut_down(left)
        return await super().on_tick(counter)

    def _shut_down(self, left: float) -> None:
        """Stop now; open connections get what is left of the budget, not a wait of their own."""
        grace = max(left, SHUTDOWN_GRACE_S / 10)
        self.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
        self.should_exit = True
