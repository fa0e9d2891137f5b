"""Housekeeping any worker or matcher runs: due replays, dead workers' executions, bounded indices."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import redis

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.model import JobDef
from angora_rq.store.runindex import RunIndex
from angora_rq.store.scripts import Scripts
from angora_rq.core.settings import Settings
from angora_rq.store.state import Claimed, State

log = logging.getLogger(__name__)
REAP_EVERY = 1.0
SETTLE_EVERY = 5.0  # readers settle the run indexes themselves; this keeps what they find to do small
TRIM_EVERY = 30.0
STALE_HEARTBEAT = 86400.0


@dataclass(frozen=True)
class Lost:
    """The outcome recorded for an execution whose worker died while running it."""

    started: float
    ended: float
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    reason: str = "worker lost"
    tail: str = ""

    @property
    def duration(self) -> float:
        """Seconds from start to the moment the loss was noticed."""
        return max(0.0, self.ended - self.started)

    @property
    def ok(self) -> bool:
        """A lost execution never succeeded."""
        return False


class Janitor:
    """`step(now)` promotes due replays, reaps dead workers (replaying their executions) and trims indices."""

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings, scripts: Optional[Scripts] = None) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.scripts = scripts or Scripts(r)
        self.state = State(keys, settings)
        self._last_reap = 0.0
        self._last_settle = 0.0
        self._last_trim = 0.0
        self.run_index = RunIndex(r, keys)

    def step(self, now: Optional[float] = None) -> None:
        """One pass (cheap when there is nothing to do)."""
        now = time.time() if now is None else now
        self.promote(now)
        if now - self._last_reap >= REAP_EVERY:
            self._last_reap = now
            self.reap_workers()
            self.replay_orphans(now)
        if now - self._last_settle >= SETTLE_EVERY:
            self._last_settle = now
            self.run_index.settle()
        if now - self._last_trim >= TRIM_EVERY:
            self._last_trim = now
            self.trim(now)

    def promote(self, now: float) -> int:
        """Queue executions whose replay backoff is over."""
        k = self.keys
        return int(self.scripts.promote(
            keys=[k.delayed(), K.RQ_QUEUES],
            args=[repr(now), 500, k.execution(""), K.rq_job(""), K.rq_queue("")],
        ))

    def reap_workers(self) -> int:
        """Move the inflight executions of workers whose heartbeat expired to the orphans list (atomic)."""
        k = self.keys
        moved = 0
        for raw in self.r.smembers(k.workers()):
            name = _s(raw)
            n = int(self.scripts.reap(
                keys=[k.worker_alive(name), k.worker_inflight(name), k.orphans(), k.workers()], args=[name]))
            if n >= 0:
                log.warning("worker %s is gone; %d execution(s) will be replayed", name, n)
                self.r.hdel(k.heartbeats(), f"worker:{name}")
                moved += n
        return moved

    def replay_orphans(self, now: float) -> int:
        """Record each orphaned execution as failed (`worker lost`) and replay it per its job's policy."""
        k = self.keys
        done = 0
        for raw in self.r.lrange(k.orphans(), 0, 99):
            xid = _s(raw)
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(k.execution(xid))
                    fields = {_s(a): _s(b) for a, b in pipe.hgetall(k.execution(xid)).items()}
                    pipe.multi()
                    if fields.get("status") == "running":
                        ex = claimed_from_hash(fields)
                        started = float(fields.get("started") or now)
                        self.state.finalize(pipe, ex, Lost(started=started, ended=now), now)
                        done += 1
                    pipe.lrem(k.orphans(), 1, xid)
                    pipe.execute()
                except redis.exceptions.WatchError:
                    continue  # someone else handled it; the next pass sees the new status
        return done

    def trim(self, now: float) -> None:
        """Bound what would otherwise grow: the runs indexes, RQ's finished/failed/canceled registries, heartbeats."""
        k = self.keys
        queues = [_s(q).split(":", 2)[-1] for q in self.r.smembers(K.RQ_QUEUES)]
        beats = {_s(a): float(b) for a, b in self.r.hgetall(k.heartbeats()).items()}
        stale = [name for name, t in beats.items() if now - t > STALE_HEARTBEAT]
        with self.r.pipeline(transaction=False) as p:
            p.zremrangebyrank(k.runs(), 0, -(self.settings.max_runs + 1))
            p.zremrangebyscore(k.runs(), "-inf", now - self.settings.retention)
            for q in queues:
                # Registry scores are expiry times (RQ's convention); RQ cleans them only when its workers run.
                p.zremrangebyscore(K.rq_finished(q), 0, now)
                p.zremrangebyscore(K.rq_failed(q), 0, now)
                p.zremrangebyscore(K.rq_canceled(q), 0, now)
            if stale:
                p.hdel(k.heartbeats(), *stale)
            p.zrange(k.runs(), 0, 0, withscores=True)
            oldest = p.execute()[-1]
        # The run indexes keep what the runs index keeps.
        self.run_index.trim(oldest[0][1] if oldest else now - self.settings.retention)


def claimed_from_hash(fields: dict[str, str]) -> Claimed:
    """Rebuild what a worker held about an execution from its hash."""
    return Claimed(
        id=fields["id"],
        spec=JobDef.from_json(json.loads(fields["spec"])),
        run=fields.get("run", ""),
        attempt=int(fields.get("attempt") or 1),
        topic=fields.get("topic", ""),
        params=json.loads(fields["params"]) if fields.get("params") else {},
        queue=fields.get("queue") or "default",
        created=float(fields.get("created") or 0),
    )


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
