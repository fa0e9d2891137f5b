"""Hot reload: a process picks up changed definition files without a restart.

A process reloads its ConfigSource (which swaps a whole Snapshot, and keeps the old one when the files are broken)
when any of these happens, noticed by `Reloader.check()`, which the loop calls once per iteration:
- SIGHUP (`Reloader.request`, safe in a signal handler: it only sets a flag);
- a reload request published by `angora reload` or the API from any host: a counter (store/reloads.py) read
  through the callable the Reloader is given, at most once a second (one HGET);
- the files changed: their names, sizes and mtimes, looked at every 2 seconds (a few stat calls).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from angora_rq.core.errors import AngoraError

log = logging.getLogger(__name__)
CHECK_EVERY = 1.0
WATCH_EVERY = 2.0
_UNSET = object()


def fingerprint(path: Path) -> tuple:
    """What changes when a definition file is added, removed, renamed or written (no file is read)."""
    try:
        if path.is_file():
            st = path.stat()
            return ((str(path), st.st_mtime_ns, st.st_size),)
        out = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # as definitions: .git, editors' folders
            out.append((root, os.stat(root).st_mtime_ns, 0))
            for name in sorted(f for f in files if not f.startswith(".")):
                st = os.stat(os.path.join(root, name))
                out.append((os.path.join(root, name), st.st_mtime_ns, st.st_size))
        return tuple(out)
    except OSError as e:
        return (("unreadable", str(e)),)


class Reloader:
    """Decides when this process reloads `source` (a ConfigSource); `current()` checks, then returns the snapshot.

    `requests` reads the reload-request counter (store.reloads.reload_requests): any value, compared with the
    last one seen; an AngoraError (Redis unavailable) only skips that look. Building a Reloader reads no counter
    (the web app builds one before it may connect): the first check only remembers it, so requests made before
    then count as loaded; the files' fingerprint is taken at once, so a change made since is still noticed.
    """

    def __init__(self, requests: Callable[[], Any], source: Any, check_every: float = CHECK_EVERY,
                 watch_every: float = WATCH_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = requests
        self.source = source
        self.check_every = check_every
        self.watch_every = watch_every
        self.clock = clock
        self._wanted = False
        self._seen: Any = _UNSET
        self._files = fingerprint(source.path)
        self._last_check = float("-inf")  # the first check looks at the counter at once
        self._last_watch = clock()

    def request(self, *_: Any) -> None:
        """Reload at the next check (what SIGHUP does; safe inside a signal handler)."""
        self._wanted = True

    def current(self) -> Any:
        """The snapshot in force, after a check."""
        self.check()
        return self.source.current()

    def check(self) -> bool:
        """Reload if asked (signal, Redis request) or if the files changed; True when new definitions took over."""
        now = self.clock()
        wanted, self._wanted = self._wanted, False
        if now - self._last_check >= self.check_every:
            self._last_check = now
            wanted = self._requested() or wanted
        if now - self._last_watch >= self.watch_every:
            self._last_watch = now
            files = fingerprint(self.source.path)
            if files != self._files:
                self._files = files
                wanted = True
        if not wanted:
            return False
        old = self.source.current().version
        switched, errors = self.source.reload()
        if switched:
            log.info("definitions: version %s -> %s", old, self.source.current().version)
        elif errors:
            log.error("definitions: the files have %d error(s); version %s stays in force:\n%s", len(errors), old,
                      "\n".join(str(p) for p in errors))
        return switched

    def _requested(self) -> bool:
        """True when the request counter moved since the last look (the first look only remembers it)."""
        try:
            seen = self.requests()
        except AngoraError as e:
            log.warning("could not read reload requests: %s", e)
            return False
        changed = self._seen is not _UNSET and seen != self._seen
        self._seen = seen
        return changed
