"""Self-fencing: a worker that cannot renew its lease ends its own commands before the lease can expire.

A worker's lease is its heartbeat key (TTL `worker_ttl`, set with each beat). Once it expires, a janitor on
another host replays the worker's executions: from then on a command still running here would run twice at the
same time. The key expires no earlier than `worker_ttl` after the last beat that Redis acknowledged was *sent*
(Redis set it after that), so a thread of its own, independent of a main loop that may be stuck in a call to an
unreachable Redis, watches that time: at TERM_AT of the TTL without an acknowledged beat it sends SIGTERM to every
command's process group, at KILL_AT SIGKILL. Beats go out every fifth of the TTL, so a stall must last most of
the TTL (over 3 s of the default 5 s) before anything is killed; a 2 s stall is not.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Iterable, Protocol

log = logging.getLogger(__name__)
TERM_AT, KILL_AT = 0.8, 0.9  # of the TTL since the last acknowledged beat was sent
CHECK_EVERY = 0.1


class Fenceable(Protocol):
    """A running command as the fence sees it (worker.Active)."""

    fenced: bool

    @property
    def pgid(self) -> int: ...


class SelfFence:
    """`renewed(sent)` after each acknowledged beat; the thread ends the commands when renewals stop."""

    def __init__(self, ttl: float, running: Callable[[], Iterable[Fenceable]], who: str) -> None:
        self.ttl = ttl
        self.running = running
        self.who = who
        self._acked_sent = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="angora-self-fence", daemon=True)

    def start(self) -> "SelfFence":
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def renewed(self, sent: float) -> None:
        """A beat sent at `sent` (time.monotonic()) was acknowledged: the lease lasts until at least sent + TTL."""
        self._acked_sent = max(self._acked_sent, sent)

    def expires_after(self) -> float:
        """Seconds until the lease may expire (negative once it may have)."""
        return self._acked_sent + self.ttl - time.monotonic()

    def step(self) -> int:
        """Signal the commands if the lease is near its end; returns how many process groups were signalled."""
        age = time.monotonic() - self._acked_sent
        if age < TERM_AT * self.ttl:
            return 0
        sig = signal.SIGKILL if age >= KILL_AT * self.ttl else signal.SIGTERM
        n = 0
        for a in self.running():
            if a.pgid and (not a.fenced or sig == signal.SIGKILL):
                if not a.fenced:
                    a.fenced = True
                    log.warning("%s: no heartbeat acknowledged for %.1f s (lease %.0f s): ending command group %d "
                                "before another host replays it", self.who, age, self.ttl, a.pgid)
                try:
                    os.killpg(a.pgid, sig)
                    n += 1
                except (ProcessLookupError, PermissionError):
                    pass
        return n

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY):
            try:
                self.step()
            except RuntimeError:  # the running set changed while read: look again next time
                continue
