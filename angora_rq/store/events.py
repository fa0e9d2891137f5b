"""Events in Redis: who listens (the events hash the matcher writes), and publishing from Python's pipelines.

Lua scripts that change states themselves (SEND, DISPATCH, CLAIM) publish through publish.lua and run_end.lua,
included; the steps Python writes (finishing, creating, deciding, canceling, skipping) queue PUBLISH and RUN_END
on their own pipelines here. Either way nothing is published unless the events hash names the topic, and a
process looks at its cached copy first (read again at most once a second), so with no listener an event costs
no round trip and no command.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Optional

from redis.client import Pipeline

from angora_rq.core.codec import to_str
from angora_rq.core.events import RUN_ENDS
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Event
from angora_rq.store.connection import Redis, RedisError
from angora_rq.store.scripts import PUBLISH, RUN_END, field_pairs

OUTBOX_CAP = 10_000  # events waiting for the webhook deliverer; the oldest go beyond (no scheduler running)
REFRESH = 1.0
STALE = 5 * REFRESH  # a background copy older than this is not trusted (Redis unreachable, the thread held up)
FIRST_WAIT = 0.2  # seconds a process's first caller waits for the first background read


def write_wanted(r: Redis, keys: Keys, wanted: dict[str, str]) -> None:
    """Replace who listens to which event (the matcher does, for the definitions it loaded); the run counter stays."""
    with r.pipeline() as p:
        old = [to_str(f) for f in r.hkeys(keys.events()) if not to_str(f).startswith("#")]
        stale = [f for f in old if f not in wanted]
        if stale:
            p.hdel(keys.events(), *stale)
        if wanted:
            p.hset(keys.events(), mapping=wanted)
            p.set(keys.events_on(), 1)
        else:
            p.delete(keys.events_on())
        p.execute()


class Events:
    """What one process knows of the events hash, and the publishing it queues on pipelines.

    `background`: a thread of this process reads the hash every REFRESH seconds and callers never wait for a
    read (the web: its request threads each hold a connection of a pool of 16 for the request, and 64 of them at
    once, each reading here on the pool in turn, left none free: /send answered 503 after the pool's 10 s timeout).
    Until its first read, and when its last one is more than STALE seconds old, `known()` says it does not know.
    """

    def __init__(self, r: Optional[Redis], keys: Keys, background: bool = False) -> None:
        self.r = r  # None: a process that publishes nothing from Python (tests of the store alone)
        self.keys = keys
        self.background = background
        self._wanted: dict[str, str] = {}
        self._read_at = float("-inf")
        self._reader: Optional[tuple[int, threading.Thread]] = None  # (pid, thread): a fork has none of its own
        self._starting = threading.Lock()
        self._first = threading.Event()  # set by the first read that succeeded

    def wanted(self) -> dict[str, str]:
        """Event topic -> who listens, as read at most REFRESH seconds ago (in the background: as last read)."""
        if self.background:
            self._ensure_reader()
            return self._wanted
        if self.r is not None and time.monotonic() - self._read_at >= REFRESH:
            self._read()
        return self._wanted

    def any(self) -> bool:
        """Whether some event has a listener (then the hot scripts look for theirs)."""
        return bool(self.wanted())

    def known(self) -> Optional[bool]:
        """any(), or None when this process does not know (no read yet, or none lately): ask Redis instead. The
        first call waits up to FIRST_WAIT for the first read (on an event, not on the pool: a bounded wait)."""
        wanted = self.wanted()
        if self.background and not self._first.is_set():
            self._first.wait(FIRST_WAIT)
            wanted = self._wanted
        return None if time.monotonic() - self._read_at > STALE else bool(wanted)

    def _read(self) -> None:
        if self.r is None:
            return
        now = time.monotonic()
        try:
            raw = self.r.hgetall(self.keys.events())
            self._wanted = {to_str(k): to_str(v) for k, v in raw.items() if not to_str(k).startswith("#")}
            self._read_at = now
            self._first.set()
        except RedisError:
            pass  # keep the last copy: the step that asked will meet the outage itself

    def _ensure_reader(self) -> None:
        reader = self._reader
        if self.r is None or (reader is not None and reader[0] == os.getpid() and reader[1].is_alive()):
            return
        with self._starting:
            reader = self._reader
            if reader is None or reader[0] != os.getpid() or not reader[1].is_alive():
                thread = threading.Thread(target=_read_forever, args=(weakref.ref(self),), name="angora-events",
                                          daemon=True)
                self._reader = (os.getpid(), thread)
                thread.start()

    def execution(self, pipe: Pipeline, status: str, run: str, job: str, xid: str, now: float) -> None:
        """Publish angora.execution.<status> for an execution, when listened to."""
        self.publish(pipe, Event.execution + status, run, now, {"status": status, "job": job, "execution_id": xid})

    def publish(self, pipe: Pipeline, topic: str, run: str, now: float, fields: dict[str, str]) -> None:
        """Publish event `topic` of run `run` (fields say more), when listened to."""
        if topic in self.wanted():
            k = self.keys
            PUBLISH.bind(events=k.events(), stream=k.stream(), runs=k.runs(), outbox=k.webhook_outbox(), work=k.work(),
                         accepted=k.accepted(), unsettled=k.runs_unsettled(), topic=topic,
                         now=repr(now), run_prefix=k.run(""), outbox_cap=OUTBOX_CAP, source_run=run,
                         fields=field_pairs(fields)).queue(pipe)

    def run_end(self, pipe: Pipeline, run: str, now: float) -> None:
        """After a step took something out of a run's count: publish how the run ended, if it has, when listened to."""
        wanted = self.wanted()
        if any(t in wanted for t in RUN_ENDS):
            k = self.keys
            RUN_END.bind(run=k.run(run), events=k.events(), stream=k.stream(), runs=k.runs(),
                         outbox=k.webhook_outbox(), work=k.work(), accepted=k.accepted(), unsettled=k.runs_unsettled(),
                         run_id=run, now=repr(now), run_prefix=k.run(""), outbox_cap=OUTBOX_CAP).queue(pipe)


def _read_forever(ref: "weakref.ref[Events]") -> None:
    """A background Events' reader: every REFRESH seconds until its Events is gone (its app was dropped: tests make
    many) or the process forked (the child starts its own)."""
    pid = os.getpid()
    while True:
        events = ref()
        if events is None or events._reader is None or events._reader[0] != pid:
            return
        events._read()
        del events  # no strong reference while asleep
        time.sleep(REFRESH)
