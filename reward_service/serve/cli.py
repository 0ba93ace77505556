"""``reward-service serve``: load, verify and warm every model, then bind and serve.

Flags mirror :class:`~reward_service.serve.settings.Settings` one to one (``--max-batch-tokens``
for ``max_batch_tokens``) and override the ``REWARD_SERVICE_*`` environment. A model that cannot
load stops the service before it binds, with one line on stderr and exit status 2.

SIGTERM (or Ctrl-C) starts a drain: readiness turns false, new scoring requests get 503 so
clients retry elsewhere, in-flight and queued requests finish, then the process exits 0. A
second signal, or ``drain_seconds`` passing, stops it at once.
"""

from __future__ import annotations

import argparse
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
from reward_service.serve.registry import load_registry
from reward_service.serve.settings import Settings
from reward_service.serve.state import Service

log = logging.getLogger("reward_service.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "") + f" (env REWARD_SERVICE_{name.upper()})"
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
        where = ".".join(str(p) for p in error["loc"])
        print(f"reward-service serve: error: {where}: {error['msg']}", file=sys.stderr)
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
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 1,
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
    try:
        DrainingServer(config, service, grpc_door).run()
    except GrpcBindError as exc:
        print(f"reward-service serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain between the first signal and the shutdown."""

    def __init__(
        self, config: uvicorn.Config, service: Service, grpc_door: GrpcFrontDoor | None = None
    ) -> None:
        super().__init__(config)
        self.service = service
        self.grpc_door = grpc_door
        self.drain_deadline: float | None = None

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
        if self.drain_deadline is None and not self.should_exit:
            self.service.draining = True
            self.drain_deadline = time.monotonic() + self.service.settings.drain_seconds
            log.info("signal %d: draining %d request(s)", sig, self.service.in_flight)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            if self.service.in_flight == 0:
                log.info("drained; shutting down")
                self.should_exit = True
            elif time.monotonic() > self.drain_deadline:
                log.warning("drain deadline passed with %d in flight", self.service.in_flight)
                self.should_exit = True
        return await super().on_tick(counter)
