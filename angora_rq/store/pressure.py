"""The budgets as one process sees them (core/pressure.py): the work budget, and Redis' memory read at most once a
second, never per message."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Metrics
from angora_rq.core.pressure import Budget, Memory, history_view, memory_limit, usage
from angora_rq.core.settings import Settings

log = logging.getLogger(__name__)
READ_EVERY = 1.0


class Pressure:
    """`budget()` for SEND (no round trip, except one INFO reading a second); `usage()` for the API and the UI.

    Safe to share between threads: one thread reads INFO while the others use the last reading. Redis errors are
    raised as redis-py's (callers map them: connection.redis_errors).
    """

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings, every: float = READ_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.every = every
        self.clock = clock
        self._memory: Optional[Memory] = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._info_refused = False

    def budget(self) -> Budget:
        """The budget a root message is checked against now."""
        return Budget(self.settings.backlog, self.memory())

    def memory(self, fresh: bool = False) -> Optional[Memory]:
        """The last memory reading, read again when older than `every` seconds (or `fresh`)."""
        due = fresh or self.clock() - self._read_at >= self.every
        if due and self._lock.acquire(blocking=fresh):
            try:
                self._read_at = self.clock()
                self._memory = self._read()
            finally:
                self._lock.release()
        return self._memory

    def _read(self) -> Optional[Memory]:
        """INFO memory, the `accepted` counter and the stream's length, in one round trip (None when Redis refuses
        INFO)."""
        with self.r.pipeline(transaction=False) as p:
            p.info("memory")
            p.get(self.keys.accepted())
            p.xlen(self.keys.stream())
            replies: list[Any] = p.execute(raise_on_error=False)
        info, accepted, waiting = replies
        for reply in (accepted, waiting):
            if isinstance(reply, Exception):
                raise reply
        if isinstance(info, Exception):  # INFO disabled or renamed (some managed Redis): no memory budget
            if not self._info_refused:
                log.warning("Redis refuses INFO (%s): no memory budget, only the work budget applies", info)
                self._info_refused = True
            return None
        limit, source = memory_limit(info, self.settings.max_memory)
        return Memory(int(info.get("used_memory") or 0), limit, source, int(to_str(accepted) or 0), int(waiting),
                      to_str(info.get("maxmemory_policy") or ""))

    def usage(self) -> dict[str, Any]:
        """How much of each budget is used (core.pressure.usage), and how far back history reaches: one round trip,
        plus the memory reading when due."""
        memory = self.memory()
        with self.r.pipeline(transaction=False) as p:
            p.get(self.keys.work())
            p.get(self.keys.accepted())
            p.zrange(self.keys.runs(), 0, 0, withscores=True)
            p.zcard(self.keys.runs())
            p.hmget(self.keys.metrics(), Metrics.data_lost, Metrics.data_lost_at)
            work, accepted, first, runs, (lost, lost_at) = p.execute()
        out = usage(int(to_str(work) or 0), self.settings.backlog, int(to_str(accepted) or 0), memory)
        out["history"] = history_view(float(first[0][1]) if first else None, int(runs), self.settings.retention,
                                      memory)
        out["data_lost"] = {"times": int(to_str(lost) or 0), "last": float(to_str(lost_at)) if lost_at else None}
        return out
