"""Waiting out Redis (store.connection.UNREACHABLE errors): when a loop should try again, and saying so once."""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)
RETRY_FIRST, RETRY_MAX = 0.05, 0.25  # seconds between attempts, doubling: a restart is noticed within 0.25 s


class Outage:
    """Whether one process's loop can reach Redis: `failed()` on an UNREACHABLE error, `reached()` on success."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.down = False
        self._since = 0.0
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST

    def failed(self, e: Exception) -> None:
        """Redis could not be reached: log it once, and back off."""
        now = time.monotonic()
        if not self.down:
            log.warning("%s: Redis unreachable (%s); retrying", self.who, e)
            self.down, self._since, self._backoff = True, now, RETRY_FIRST
        else:
            self._backoff = min(RETRY_MAX, self._backoff * 2)
        self._retry_at = now + self._backoff

    def reached(self) -> bool:
        """Redis answered; True when that ends an outage."""
        if not self.down:
            return False
        self.down = False
        log.warning("%s: Redis is back after %.1f s", self.who, time.monotonic() - self._since)
        return True

    def due(self) -> bool:
        """True unless Redis is down and the next attempt is not due yet."""
        return not self.down or time.monotonic() >= self._retry_at

    def wait(self) -> float:
        """Seconds until the next attempt is due (0 when Redis is up)."""
        return max(0.0, self._retry_at - time.monotonic()) if self.down else 0.0
