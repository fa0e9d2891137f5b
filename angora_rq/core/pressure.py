"""Backpressure: the two budgets a root message must fit in, and what they look like (pure: store/pressure.py reads).

- **Work**: accepted work not finished yet (messages not dispatched + executions queued, held, delayed or running),
  the `work` counter every script that moves a run's `active` moves too; at most `ANGORA_BACKLOG`.
- **Memory**: Redis' `used_memory` at most the memory budget: `ANGORA_MAX_MEMORY`, else MAXMEMORY_SHARE of
  `maxmemory`, else SYSTEM_SHARE of the Redis host's memory. INFO memory is read at most once a second per process;
  each message on the stream at the reading (not dispatched yet: its execution is not in `used_memory`) and each
  root message accepted since (the `accepted` counter, global, counted by SEND) is charged MESSAGE_BYTES, so every
  process together stops at the budget without reading INFO per message.

SEND checks both with two O(1) reads (`BUDGET work <used> <budget>` or `BUDGET memory <accepted> <cap>` when one
is used up); follow-up messages of finished jobs are never refused but count against both.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from angora_rq.core.errors import Overloaded
from angora_rq.core.redis_setup import eviction_warning

# Charged per accepted message until the next INFO reading: twice the measured cost of a one-job message once
# dispatched and finished (its execution, its run and their index entries: 1,014 bytes in bench/run.py's memory
# section, 1,066 by MEMORY USAGE in tests/e2e/test_footprint.py; it was 6,443 before the compact layout).
MESSAGE_BYTES = 2048
# Of the memory budget: finished history is trimmed, oldest run first, to stay under this share of it, so the rest
# stays free for accepted work (store/history.py); only when unfinished work fills that are messages refused.
HISTORY_SHARE = 0.8
# Of `maxmemory`: the rest is headroom for what accepted work still writes (executions of messages not yet
# dispatched at the last reading, follow-up messages, replays, bookkeeping), which is never refused.
MAXMEMORY_SHARE = 0.9
# Of the Redis host's memory when Redis has no `maxmemory`: a fork for an AOF rewrite or a snapshot may need as
# much again (copy-on-write).
SYSTEM_SHARE = 0.5
WORK_RETRY_AFTER = 5  # seconds: workers drain the work in seconds
MEMORY_RETRY_AFTER = 30  # seconds: memory comes back as retention expires old runs, or when an operator acts


@dataclass(frozen=True)
class Memory:
    """One INFO memory reading, with the `accepted` counter read in the same round trip."""

    used: int  # bytes (used_memory)
    limit: int  # bytes; 0 = no memory budget
    source: str  # where the limit comes from: "ANGORA_MAX_MEMORY", "maxmemory", "system memory" or ""
    accepted: int  # the `accepted` counter at the reading
    waiting: int = 0  # entries on the stream at the reading (the matcher trims what it has dispatched every second)
    policy: str = ""  # Redis' maxmemory-policy ("" when INFO does not say)

    @property
    def accepted_cap(self) -> Optional[int]:
        """The `accepted` counter's value past which the memory budget is used up (None: no memory budget)."""
        if not self.limit:
            return None
        return self.accepted + max(0, (self.limit - self.used) // MESSAGE_BYTES - self.waiting)


def memory_limit(info: Mapping[str, Any], configured: int) -> tuple[int, str]:
    """The memory budget in bytes and where it comes from, given INFO memory's fields (0, "" when none)."""
    if configured > 0:
        return configured, "ANGORA_MAX_MEMORY"
    maxmemory = int(info.get("maxmemory") or 0)
    if maxmemory > 0:
        return int(maxmemory * MAXMEMORY_SHARE), "maxmemory"
    total = int(info.get("total_system_memory") or 0)
    if total > 0:
        return int(total * SYSTEM_SHARE), "system memory"
    return 0, ""


@dataclass(frozen=True)
class Budget:
    """What SEND checks a root message against."""

    work: int = 0  # the most accepted-but-unfinished work; 0 = no limit
    memory: Optional[Memory] = None  # the last reading (None: no memory budget known)

    @property
    def accepted_cap(self) -> str:
        """SEND's `accepted_cap` argument ('' = no memory budget)."""
        cap = self.memory.accepted_cap if self.memory is not None else None
        return "" if cap is None else str(cap)


NO_BUDGET = Budget()


def refusal(reply: str, budget: Budget) -> Optional[Overloaded]:
    """The error a SEND error reply `BUDGET <kind> <used> <limit>` stands for; None for any other reply."""
    words = reply.split()
    at = words.index("BUDGET") if "BUDGET" in words else -1
    if at < 0 or len(words) < at + 4:
        return None
    kind = words[at + 1]
    if kind == "work":
        used, limit = int(float(words[at + 2])), int(float(words[at + 3]))
        return Overloaded(f"too much accepted work is not finished yet ({used} of a budget of {limit}: messages "
                          "waiting for the matcher, executions queued, held, delayed or running); try again later",
                          detail={"budget": "work", "used": used, "limit": limit, "retry_after": WORK_RETRY_AFTER},
                          retry_after=WORK_RETRY_AFTER)
    memory = budget.memory
    used_bytes, limit_bytes = (memory.used, memory.limit) if memory is not None else (0, 0)
    return Overloaded(f"Redis memory budget used up ({mib(used_bytes)} used at the last reading, budget "
                      f"{mib(limit_bytes)} from {memory.source if memory else 'unknown'}); try again later",
                      detail={"budget": "memory", "used": used_bytes, "limit": limit_bytes,
                              "retry_after": MEMORY_RETRY_AFTER},
                      retry_after=MEMORY_RETRY_AFTER)


def mib(n: int) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / 1048576:.1f} MiB"


def usage(work_used: int, work_limit: int, accepted: int, memory: Optional[Memory]) -> dict[str, Any]:
    """How much of each budget is used, for the API and the dashboard (`ratio` None when there is no limit)."""
    used = max(0, work_used)  # below zero only for work accepted before the counter existed (an upgrade)
    mem_used = memory.used if memory is not None else None
    mem_limit = memory.limit if memory is not None and memory.limit else None
    return {
        "work": {"used": used, "limit": work_limit or None, "ratio": _ratio(used, work_limit),
                 "full": bool(work_limit) and used >= work_limit},
        "memory": {"used": mem_used, "limit": mem_limit, "source": (memory.source or None) if memory else None,
                   "ratio": _ratio(mem_used or 0, mem_limit or 0),
                   "full": bool(mem_limit) and memory is not None and accepted >= (memory.accepted_cap or 0),
                   "policy": (memory.policy or None) if memory else None,
                   "warning": eviction_warning(memory.policy) if memory else None},
        "accepted": accepted,
    }


def history_view(since: Optional[float], runs: int, retention: float, memory: Optional[Memory]) -> dict[str, Any]:
    """How far back history reaches (the oldest run kept started at `since`), how many runs are kept, and what
    bounds it: finished runs older than `retention` go, and the oldest go first while Redis holds more than
    `trim_at` bytes (HISTORY_SHARE of the memory budget)."""
    limit = memory.limit if memory is not None else 0
    return {"since": since, "runs": runs, "retention": retention,
            "trim_at": int(limit * HISTORY_SHARE) if limit else None}


def _ratio(used: int, limit: int) -> Optional[float]:
    return round(used / limit, 4) if limit else None


class Burst:
    """Whether sends come in a burst: more than `count` within `window` seconds (in one process), and for `hold`
    seconds after the last send that was.

    A root message that /send dispatches itself costs ~16 Redis commands; the stream path costs ~24 alone but
    ~12 per message in a matcher batch of 50 (measured with INFO commandstats). At a trickle the direct call
    saves the matcher's hop (0.4-0.6 ms of /send -> start); in a burst the matcher's batches are cheaper. The hold
    keeps a steady load near the threshold on the stream: without it, a web process at ~500 sends/s went in and
    out of bursts with its load's jitter, and the slower its phase the more it dispatched itself (3 runs of 3,000
    jobs through /send: 22.6 % of the messages at 1,065 jobs/s, 13-16 % at 1,186-1,257; bench/README.md, fifteenth
    round), which made it slower still.
    """

    def __init__(self, count: int = 4, window: float = 0.01, hold: float = 0.05) -> None:
        self.window = window
        self.hold = hold
        self._times: deque[float] = deque(maxlen=count)
        self._until = float("-inf")  # in a burst until then

    def note(self, now: float) -> bool:
        """Count a send at `now`; True when it belongs to a burst (the last `count` sends fit in `window`, or one
        that did came less than `hold` ago)."""
        full = len(self._times) == self._times.maxlen
        burst = full and now - self._times[0] < self.window
        self._times.append(now)
        if burst:
            self._until = now + self.hold
        return burst or now < self._until
