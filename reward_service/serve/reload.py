"""Hot model reload: versions published into the model repository while the service runs are
loaded, verified, warmed and swapped in, without a restart and without a failed request.

A check lists the repository every ``reload_interval_seconds`` (polling works on every volume a
pod can mount, network ones included, where file events do not arrive) or when an operator
calls ``POST /v1/admin/reload``. For each model name, the newest folder it has not tried in its
present form and newer than the version being served goes through the start-up load path,
:func:`~reward_service.serve.registry.load_one`: manifest, sha256 of the graph and the
tokenizer, runtime selection and the parity gate, warm-up. That runs in a worker thread, so the
event loop keeps serving meanwhile.

The swap (:meth:`~reward_service.serve.registry.Registry.swap_in`) is one synchronous step of
the event loop: from the next request on, ``name`` resolves to the new version. Every route
resolves its model and is admitted by that model's batcher with nothing awaited in between, so
no request can resolve a replaced version after the swap; those admitted before it finish on
the old batcher, which is stopped (and the old model let go) once it holds nothing more.

A version that fails any check is refused: logged with its reason, counted, listed in
``/v1/models`` as unavailable with the reason, while the previous version keeps serving. It is
tried again only if its files change, and a folder whose files changed within the last second
is left for the next check, so a copy still in progress is not taken for a broken model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from reward_service.repository import ModelLoadError, discover
from reward_service.serve.registry import ServedModel, load_one, start_batcher
from reward_service.serve.schemas import ReloadEvent, ReloadStatus
from reward_service.serve.state import Service

log = logging.getLogger(__name__)

SETTLE_S = 1.0  # a folder whose files changed more recently than this may still be copied
DRAIN_POLL_S = 0.05
EVENTS_KEPT = 20

Signature = tuple[tuple[str, int, int], ...]
EventKind = Literal["loaded", "refused", "retired"]
T = TypeVar("T")


def signature(folder: Path) -> Signature | None:
    """Name, size and mtime of each file in a version folder; None when it vanished."""
    files = []
    try:
        for path in folder.iterdir():
            if path.is_file():
                stat = path.stat()
                files.append((path.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return None
    return tuple(sorted(files))


def settling(sig: Signature, now_ns: int) -> bool:
    return any(now_ns - mtime < SETTLE_S * 1e9 for _, _, mtime in sig)


async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread of its own that the process does not wait for at exit:
    a load still verifying or warming when SIGTERM comes must not stretch the drain."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled: nobody wants the model now
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the awaiting task, which decides
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: the process is exiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="model-reload", daemon=True).start()
    return await future


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Reloader:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.repo = Path(service.settings.model_repo)
        self.seen: dict[Path, Signature | None] = {
            self.repo / s.name / str(s.version): signature(self.repo / s.name / str(s.version))
            for s in service.registry.models.values()
        }
        self.events: deque[ReloadEvent] = deque(maxlen=EVENTS_KEPT)
        self.last_check: str | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        self._publish_serving_versions()
        if self.service.settings.reload_interval_seconds > 0:
            self._poller = asyncio.create_task(self._poll(), name="model-reload")

    async def stop(self) -> None:
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> ReloadStatus:
        return ReloadStatus(
            interval_seconds=self.service.settings.reload_interval_seconds,
            last_check=self.last_check,
            events=list(self.events),
        )

    async def _poll(self) -> None:
        interval = self.service.settings.reload_interval_seconds
        while True:
            await asyncio.sleep(interval)
            if self.service.draining:
                return
            try:
                await self.check()
            except Exception:  # a bug must not end polling for the life of the process
                log.exception("reload: the check failed; trying again in %g s", interval)

    # -- one check --------------------------------------------------------------------------

    async def check(self, settle: bool = True) -> list[ReloadEvent]:
        """Look at the repository once; returns what changed. Checks never overlap.

        ``settle=False`` takes folders whose files have just changed too: the caller (the admin
        route) says the publication is complete.
        """
        async with self._lock:
            self.last_check = now_iso()
            try:
                folders = discover(self.repo)
            except ModelLoadError as exc:
                log.warning("reload: %s", exc)
                return []
            changes: list[ReloadEvent] = []
            for candidates in self._candidates(folders, settle).values():
                for folder, sig in candidates:  # newest first; the first that loads wins
                    self.seen[folder] = sig
                    event = await self._try(folder)
                    changes.append(event)
                    if event.event == "loaded":
                        for older, older_sig in candidates[candidates.index((folder, sig)) + 1 :]:
                            self.seen[older] = older_sig
                        break
            return changes

    def _candidates(
        self, folders: list[Path], settle: bool
    ) -> dict[str, list[tuple[Path, Signature]]]:
        """Per name, the untried folders newer than its served version, newest first."""
        now_ns = time.time_ns()
        found: dict[str, list[tuple[Path, Signature]]] = {}
        for folder in reversed(folders):
            name, version = folder.parent.name, int(folder.name)
            sig = signature(folder)
            if sig is None or self.seen.get(folder) == sig or (settle and settling(sig, now_ns)):
                continue
            serving = self._serving_version(name)
            if serving is not None and version <= serving:
                continue
            found.setdefault(name, []).append((folder, sig))
        return found

    def _serving_version(self, name: str) -> int | None:
        versions = [s.version for s in self.service.registry.available() if s.name == name]
        return max(versions, default=None)

    async def _try(self, folder: Path) -> ReloadEvent:
        service = self.service
        key = f"{folder.parent.name}@{folder.name}"
        log.info("reload: found %s; verifying, gating and warming it", key)
        served = await in_daemon_thread(load_one, folder, service.settings)
        if service.draining:
            return self._record(served.key, "refused", "the service is shutting down")
        if not served.available:
            service.registry.models[served.key] = served
            self._set_model_info(served)
            service.metrics.reloads.labels(served.key, "refused").inc()
            log.warning(
                "reload: refused %s: %s; %s still serves %s",
                served.key,
                served.error,
                served.name,
                self._describe_serving(served.name),
            )
            return self._record(served.key, "refused", served.error or "")
        start_batcher(served, service.settings, service.metrics)
        replaced = service.registry.swap_in(served)
        self._set_model_info(served)
        service.metrics.reloads.labels(served.key, "loaded").inc()
        self._publish_serving_versions()
        old = ", ".join(s.key for s in replaced if s.available) or "nothing"
        log.info("reload: %s now serves %s (was %s)", served.name, served.key, old)
        for previous in replaced:
            self._forget_model_info(previous)
            if previous.batcher is not None:
                self._spawn(self._retire(previous))
        return self._record(served.key, "loaded", f"replaces {old}")

    async def _retire(self, served: ServedModel) -> None:
        """Stop a replaced version's batcher once everything admitted before the swap ran."""
        assert served.batcher is not None
        held = served.batcher.depth
        while not served.batcher.idle:
            await asyncio.sleep(DRAIN_POLL_S)
        # Nothing can reach it any more; should that ever change, a 503 to retry, not a hang.
        served.batcher.abort(f"{served.key} was replaced by a newer version")
        await served.batcher.stop()
        self.service.registry.retiring.remove(served)
        log.info("reload: %s drained (%d item(s) were queued) and unloaded", served.key, held)
        self._record(served.key, "retired", "drained and unloaded")

    # -- what the outside sees --------------------------------------------------------------

    def _record(self, model: str, event: EventKind, detail: str) -> ReloadEvent:
        entry = ReloadEvent(at=now_iso(), model=model, event=event, detail=detail)
        self.events.append(entry)
        return entry

    def _describe_serving(self, name: str) -> str:
        version = self._serving_version(name)
        return f"{name}@{version}" if version is not None else "no version"

    def _publish_serving_versions(self) -> None:
        for name in self.service.registry.names():
            version = self._serving_version(name)
            if version is not None:
                self.service.metrics.serving_version.labels(name).set(version)

    def _set_model_info(self, served: ServedModel) -> None:
        self.service.metrics.model_info.labels(*served.info_labels).set(int(served.available))

    def _forget_model_info(self, served: ServedModel) -> None:
        with contextlib.suppress(KeyError):  # never published
            self.service.metrics.model_info.remove(*served.info_labels)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
