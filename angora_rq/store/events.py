"""Events in Redis: who listens (the events hash the matcher writes), and publishing from Python's pipelines.

Lua scripts that change states themselves (SEND, DISPATCH, CLAIM) publish through publish.lua and run_end.lua,
included; the steps Python writes (finishing, creating, deciding, canceling, skipping) queue PUBLISH and RUN_END
on their own pipelines here. Either way nothing is published unless the events hash names the topic, and a
process looks at its cached copy first (read again at most once a second), so with no listener an event costs
no round trip and no command.
"""
from __future__ import annotations

import time
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
    """What one process knows of the events hash, and the publishing it queues on pipelines."""

    def __init__(self, r: Optional[Redis], keys: Keys) -> None:
        self.r = r  # None: a process that publishes nothing from Python (tests of the store alone)
        self.keys = keys
        self._wanted: dict[str, str] = {}
        self._read_at = float("-inf")

    def wanted(self) -> dict[str, str]:
        """Event topic -> who listens, as read at most REFRESH seconds ago."""
        now = time.monotonic()
        if self.r is not None and now - self._read_at >= REFRESH:
            try:
                raw = self.r.hgetall(self.keys.events())
                self._wanted = {to_str(k): to_str(v) for k, v in raw.items() if not to_str(k).startswith("#")}
                self._read_at = now
            except RedisError:
                pass  # keep the last copy: the step that asked will meet the outage itself
        return self._wanted

    def any(self) -> bool:
        """Whether some event has a listener (then the hot scripts look for theirs)."""
        return bool(self.wanted())

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
