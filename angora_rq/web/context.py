"""What every request of the web app reaches through `angora()`: settings, Redis, reads, actions, definitions.

Blueprint modules import from here (and from web/errors.py), never from the package's __init__, which imports
them: so the web package has no import cycle.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from flask import Response, current_app, request

from angora_rq.core.errors import DefinitionError, Unavailable
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.definitions.reload import Reloader
from angora_rq.definitions.source import ConfigSource
from angora_rq.store.connection import Redis, RedisError, connect
from angora_rq.store.control import Control
from angora_rq.store.dispatch import Dispatcher
from angora_rq.store.events import Events
from angora_rq.store.link import Link
from angora_rq.store.pressure import Pressure
from angora_rq.store.replication import wait_command
from angora_rq.store.sendbatch import SendBatcher
from angora_rq.store.queries import Queries
from angora_rq.store.reloads import reload_requests
from angora_rq.store.versions import running_version

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
RUNNING_EVERY = 1.0  # seconds: how often /send reads again the version the matchers run (matched_snapshot)
REDIS_CONNECTIONS = 16  # per server process, whatever its thread count


class Definitions:
    """The web app's view of the job definitions: the last good snapshot, and the files' current errors.

    Kept current the way the matchers and schedulers are: a ConfigSource switched by a Reloader (a reload request
    in Redis, or changed files), so every process serves the same version. Until the files have been valid once,
    they are read again every `recheck` seconds.
    """

    def __init__(self, path: Path, requests: Callable[[], Any], recheck: float = RECHECK_SECONDS) -> None:
        self.path = Path(path)
        self.requests = requests  # reads the reload-request counter (store.reloads.reload_requests)
        self.recheck = recheck
        self.reloader: Optional[Reloader] = None  # once the files have been valid at least once
        self.errors: list[Any] = []
        self.checked = float("-inf")
        self._lock = threading.Lock()

    @property
    def source(self) -> Optional[ConfigSource]:
        """The ConfigSource (None when the definitions have never been valid)."""
        return None if self.reloader is None else self.reloader.source

    def refresh(self, force: bool = False) -> None:
        """Catch up with the files (`force`: read them now); a broken change keeps the last good version."""
        if not self._lock.acquire(blocking=force):
            return  # another thread is checking or reading the files right now
        try:
            if self.reloader is None:
                self._first_load(force)
            else:
                if force:
                    self.reloader.request()
                self.reloader.check()
                self.errors = list(self.reloader.source.last_errors)
        except Exception as e:  # noqa: BLE001 - unreadable files must not stop the app; show them instead
            log.exception("cannot read the definitions in %s", self.path)
            self.errors = [f"{self.path}: {e}"]
        finally:
            self._lock.release()

    def _first_load(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.checked < self.recheck:
            return
        self.checked = now
        try:
            source = ConfigSource(self.path)
        except DefinitionError as e:
            self.errors = list(e.problems)
            return
        self.reloader = Reloader(self.requests, source)
        self.errors = []

    def snapshot(self) -> Snapshot:
        """The definitions in force; Unavailable when no valid version was ever loaded."""
        self.refresh()
        source = self.source
        if source is None:
            raise Unavailable("no valid job definitions are loaded; see /api/v1/config",
                              detail=[problem_json(p) for p in self.errors])
        return source.current()

    def status(self) -> dict[str, Any]:
        """What is loaded and what is wrong with the files as they are now."""
        self.refresh()
        source = self.source
        snap = source.current() if source is not None else None
        config = snap.config if snap is not None else None
        return {
            "path": str(self.path),
            "loaded": snap is not None,
            "valid": not self.errors,
            "version": config.version if config else None,
            "files": list(config.files) if config else [],
            "jobs": len(config.jobs) if config else 0,
            "schedules": len(config.schedules) if config else 0,
            "warnings": [problem_json(p) for p in config.warnings] if config else [],
            "errors": [problem_json(p) for p in self.errors],
        }


def problem_json(p: Any) -> dict[str, Any]:
    """A definitions problem as JSON (model.Problem, or plain text)."""
    if hasattr(p, "to_json"):
        return dict(p.to_json())
    text = str(p)
    return {"severity": "error", "path": None, "line": None, "col": None, "job": None, "message": text, "text": text}


@dataclass
class Angora:
    """What every request needs, on `app.extensions["angora"]`: settings, Redis, keys, reads, actions, definitions,
    the budgets."""

    settings: Settings
    r: Redis
    keys: Keys
    queries: Queries
    control: Control
    definitions: Definitions
    pressure: Pressure
    dispatcher: Dispatcher  # for the root messages /send dispatches itself (web/send.py)
    sends: SendBatcher  # for those it puts on the stream: concurrent ones in one round trip
    _followed: Optional[str] = None  # the matchers' version last seen (and reloaded for)
    _running: Optional[str] = None  # the matchers' version as matched_snapshot last read it...
    _running_at: float = float("-inf")  # ...then (time.monotonic)

    @classmethod
    def create(cls, settings: Settings) -> "Angora":
        """Build the resources; nothing connects until the first command."""
        r = connect(settings, pool_size=REDIS_CONNECTIONS, socket_timeout=10)
        keys = Keys(settings.prefix)
        definitions = Definitions(settings.config_path, reload_requests(r, keys))
        events = Events(r, keys, background=True)  # read by a thread of its own: a request never waits for it
        pressure = Pressure(r, keys, settings)
        return cls(settings, r, keys, Queries(r, keys, settings.history), Control(r, keys, settings), definitions,
                   pressure, Dispatcher(Link(r), keys, settings, "web", events),
                   SendBatcher(r, keys, pressure.budget, settings.idempotency_ttl, wait_command(settings)))

    @property
    def source(self) -> Optional[ConfigSource]:
        """The ConfigSource (None when the definitions have never been valid)."""
        return self.definitions.source

    def snapshot(self) -> Snapshot:
        """The definitions in force: read again first when the matchers run another version than ours."""
        self.follow_matchers()
        return self.definitions.snapshot()

    def matched_snapshot(self) -> Optional[Snapshot]:
        """The definitions in force when they are the version the matchers run, else None (none runs, another
        version, none loaded). Their version is read at most once a RUNNING_EVERY (not a round trip per request),
        and followed as `follow_matchers` does."""
        now = time.monotonic()
        if now - self._running_at >= RUNNING_EVERY:
            self._running, self._running_at = self.follow_matchers(), now
        if not self._running:
            return None
        try:
            snap = self.definitions.snapshot()
        except Unavailable:
            return None
        return snap if snap.version == self._running else None

    def config_status(self) -> dict[str, Any]:
        """Definitions.status(), and the version the matchers run (they and this app read the same files)."""
        running = self.follow_matchers()
        return dict(self.definitions.status(), matchers_version=running)

    def follow_matchers(self) -> Optional[str]:
        """The version the matchers run (published in Redis; None when none runs or Redis is down); reload the
        files once for each new one, so that a job a matcher runs is never unknown here."""
        try:
            running = running_version(self.r, self.keys)
        except RedisError:
            return None
        source = self.definitions.source
        if running and running != self._followed and (source is None or source.current().version != running):
            self._followed = running
            self.definitions.refresh(force=True)
        return running


def angora() -> Angora:
    """The resources of the current app."""
    return current_app.extensions["angora"]


def revalidate(resp: Response) -> Response:
    """ETag a successful GET answer and answer 304 to a matching If-None-Match (live pages poll with it)."""
    if request.method == "GET" and resp.status_code == 200 and not resp.direct_passthrough:
        resp.add_etag()
        resp.make_conditional(request)
    return resp
