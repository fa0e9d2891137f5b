"""Housekeeping any worker or matcher runs: due replays, dead workers' executions, bounded indices."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from angora_rq.store.connection import Pipeline, Redis
from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core import keys as K
from angora_rq.core.execution import Claimed
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Exec, Status
from angora_rq.store import history
from angora_rq.core.pressure import HISTORY_SHARE, mib
from angora_rq.store.fence import write_if_running
from angora_rq.store.pressure import Pressure
from angora_rq.core.errors import Conflict, NotFound
from angora_rq.store.clock import redis_now
from angora_rq.store.control import Control
from angora_rq.store.events import OUTBOX_CAP
from angora_rq.store.link import link_for
from angora_rq.store.runindex import RunIndex
from angora_rq.store.scripts import LEAVE_INFLIGHT, PROMOTE, REAP
from angora_rq.core.settings import Settings
from angora_rq.store.state import BELL_CAP, host_of, load_claimed

log = logging.getLogger(__name__)
REAP_EVERY = 1.0
SETTLE_EVERY = 5.0  # readers settle the run indexes themselves; this keeps what they find to do small
# Runs a janitor step reads at most: a pass over what 5 s of load left (6,000 runs took 286 ms of a worker's loop,
# 48 us each, idle) goes on over the next steps instead of stalling the loop that long.
SETTLE_STEP = 1000
# Seconds between two steps of a pass while its worker runs commands. The worker's loop asks at every turn (at least
# once a second), not only at its heartbeats: those come every ANGORA_WORKER_TTL / 5, and a step per heartbeat let a
# 60 s TTL settle 83 runs/s.
SETTLE_STEP_EVERY = 1.0
# While its worker runs nothing, a pass takes up to this share of the loop (which wakes for it): the next step comes
# after the last one's time times (1 - SETTLE_DUTY) / SETTLE_DUTY, not sooner than SETTLE_STEP_SOON. A second apart,
# one worker left 14,790 runs to settle at the end of a load of 1,029 runs/s and took 15 s over them; a busy worker
# keeps the slow pace, which costs its work less (bench/README.md, seventeenth round).
SETTLE_DUTY = 0.2
SETTLE_STEP_SOON = 0.02
# Seconds one janitor holds the settle once it starts a pass: every worker runs a janitor, and those started
# together settled together, each reading the same runs (bench/README.md, fourteenth round).
SETTLE_LEASE = 3.0
# Runs per round trip when the janitor settles. It runs in every worker, whose memory keeps the high-water mark of
# one chunk (each finished run read whole): 500 left an idle worker 1.7 MiB larger after 2,000 jobs (bench/run.py
# --only memory: 40.25 MiB, 38.57 without the settle), 100 leaves it 0.6 MiB larger (39.1 MiB).
SETTLE_CHUNK = 100
BUDGET_EVERY = 5.0  # how often history is checked against the memory budget (one INFO memory)
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
    output: bytes = b""

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

    def __init__(self, r: Redis, keys: Keys, settings: Settings) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.control = Control(r, keys, settings)
        self.state = self.control.state  # publishes the events of what it records
        self._last_reap = 0.0
        self._last_settle = 0.0
        self._settle_at = 0  # where this janitor's settle pass goes on (HSCAN cursor); 0: no pass under way
        self._last_step = 0.0  # when this janitor last read a part of a pass
        self._step_gap = SETTLE_STEP_EVERY  # how long after it the next part is due (`next_gap`)
        self._last_budget = 0.0
        self.pressure = Pressure(r, keys, settings)
        self._last_trim = 0.0
        self.run_index = RunIndex(r, keys, chunk=SETTLE_CHUNK)

    def step(self, now: Optional[float] = None, idle: bool = False) -> None:
        """One pass (cheap when there is nothing to do); `idle`: the worker runs nothing (see `settle`)."""
        now = time.time() if now is None else now
        self.promote()
        if now - self._last_reap >= min(REAP_EVERY, self.settings.heartbeat_every):
            self._last_reap = now
            self.reap_workers()
            if self.replay_orphans(now):
                self.promote()  # a lost worker's executions are replayed without a backoff: queue them now
            self.expire_approvals(redis_now(link_for(self.r)))  # deadlines are by Redis' clock too
        self.settle(now, idle)
        if now - self._last_budget >= BUDGET_EVERY:
            self._last_budget = now
            self.keep_in_budget()
        if now - self._last_trim >= TRIM_EVERY:
            self._last_trim = now
            self.trim(now)

    def settle(self, now: float, idle: bool = False) -> None:
        """Put finished runs into the run indexes: every SETTLE_EVERY a pass, unless another janitor holds the
        settle (it took SETTLE_LEASE at its pass's start); at most SETTLE_STEP runs a step, a pass going on over the
        next steps: SETTLE_STEP_EVERY apart, or as soon as SETTLE_DUTY allows when `idle` (the worker runs nothing).
        Cheap when it has nothing to do: the worker's loop calls it each turn."""
        if self._settle_at:
            if now - self._last_step < self._step_gap:
                return
        else:
            if now - self._last_settle < SETTLE_EVERY:
                return
            self._last_settle = now
            holder = f"{host_of(self.settings)}.{os.getpid()}"  # who took it, for a reader
            if not self.r.set(self.keys.runs_settler(), holder, nx=True, px=int(SETTLE_LEASE * 1000)):
                return
        self._last_step = now
        began = time.monotonic()
        self._settle_at, _ = self.run_index.settle_part(self._settle_at, SETTLE_STEP)
        self._step_gap = next_gap(time.monotonic() - began) if idle else SETTLE_STEP_EVERY

    def next_settle(self) -> Optional[float]:
        """When the next step of the pass under way is due (the clock `settle` is given), None with no pass under
        way: a worker waiting for work wakes for it (an idle loop turns once a second)."""
        return self._last_step + self._step_gap if self._settle_at else None

    def promote(self) -> int:
        """Queue executions whose replay backoff is over (by Redis' clock)."""
        k = self.keys
        return int(PROMOTE.bind(delayed=k.delayed(), rq_queues=K.RQ_QUEUES, limit=500,
                                exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""),
                                rq_queue_prefix=k.rq_queue(""), bell_prefix=k.bell(""), bell_cap=BELL_CAP,
                                events=k.events(), stream=k.stream(), runs=k.runs(), outbox=k.webhook_outbox(),
                                work=k.work(), accepted=k.accepted(), unsettled=k.runs_unsettled(),
                                run_prefix=k.run(""), outbox_cap=OUTBOX_CAP,
                                events_on="1" if self.state.events.any() else "").run(link_for(self.r)))

    def reap_workers(self) -> int:
        """Move the inflight executions of workers whose heartbeat expired to the orphans list (atomic).

        However a worker left (killed, or stopped while Redis was out of reach), its name stays in the workers set
        until this step has taken what its inflight list held.
        """
        return sum(max(0, self.reap_worker(to_str(raw))) for raw in self.r.smembers(self.keys.workers()))

    def reap_worker(self, name: str) -> int:
        """Take one worker's inflight executions if its heartbeat has expired; -1 while it is alive."""
        k = self.keys
        n = int(REAP.bind(alive=k.worker_alive(name), inflight=k.worker_inflight(name), orphans=k.orphans(),
                          workers=k.workers(), control=k.worker_control(name), worker=name).run(link_for(self.r)))
        if n > 0:
            log.warning("worker %s is gone; %d execution(s) will be replayed", name, n)
        if n >= 0:
            self.r.hdel(k.heartbeats(), f"worker:{name}")
        return n

    def replay_orphans(self, now: float) -> int:
        """Record each orphaned execution as failed (`worker lost`) and replay it per its job's policy.

        Fenced like a worker's own record (store/fence.py): an execution whose end its worker (or a worker that
        read the end from disk) recorded first is only taken off the list.
        """
        k = self.keys
        done = 0
        for raw in self.r.lrange(k.orphans(), 0, 99):
            xid = to_str(raw)

            def lost(pipe: Pipeline, fields: dict[str, str], xid: str = xid) -> None:
                started = float(fields.get(Exec.started) or now)
                ex = load_claimed(self.r, k, xid, fields)  # its spec: read now, on another connection
                self.state.finalize(pipe, ex, Lost(started=started, ended=now), now)
                pipe.lrem(k.orphans(), 1, ex.id)

            written = write_if_running(self.r, k.execution(xid), None, lost)
            if written:
                done += 1
            elif written is False:
                self.r.lrem(k.orphans(), 1, xid)
        return done

    def keep_in_budget(self) -> history.Dropped:
        """Drop finished history, oldest run first, while Redis holds more than HISTORY_SHARE of the memory budget
        (core/pressure.py), so new work keeps finding room; unfinished work is never dropped."""
        memory = self.pressure.memory(fresh=True)
        if memory is None or not memory.limit or memory.used <= memory.limit * HISTORY_SHARE:
            return history.Dropped()
        dropped = history.keep_under(self.r, self.keys, int(memory.limit * HISTORY_SHARE))
        if dropped.runs:
            log.info("history over %d%% of the memory budget (%s): dropped the %d oldest finished run(s), %d "
                     "execution(s)", HISTORY_SHARE * 100, mib(memory.limit), dropped.runs, dropped.executions)
        return dropped

    def expire_approvals(self, now: float) -> int:
        """Decide the executions whose approval_timeout has passed, as their job's on_approval_timeout says."""
        k, done = self.keys, 0
        for raw in self.r.zrangebyscore(k.approvals(), "-inf", now, start=0, num=100):
            xid = to_str(raw)
            fields = to_str_dict(self.r.hgetall(k.execution(xid)))
            try:
                if not fields:
                    raise NotFound(xid)
                approve = load_claimed(self.r, k, xid, fields).spec.on_approval_timeout == "approve"
                self.control.decide(xid, approve, "timeout", now)
                done += 1
            except NotFound:  # expired with its run: nothing left to decide
                self.r.zrem(k.approvals(), xid)
            except Conflict:  # decided meanwhile (by someone, or another janitor)
                continue
        return done

    def trim(self, now: float) -> None:
        """Bound what would otherwise grow: finished history (by age and count), definitions versions nothing
        refers to, the run indexes, RQ's finished/failed/canceled registries, stale heartbeats."""
        k, r = self.keys, self.r
        history.drop_oldest(r, k, until=now - self.settings.retention)
        if self.settings.max_runs:
            over = int(r.zcard(k.runs())) - self.settings.max_runs
            if over > 0:
                history.drop_oldest(r, k, count=over)
        history.drop_unused_versions(r, k, now)
        queues = [q for m in r.smembers(K.RQ_QUEUES) if (q := k.own_queue(to_str(m))) is not None]
        beats = {to_str(a): float(b) for a, b in r.hgetall(k.heartbeats()).items()}
        stale = [name for name, t in beats.items() if now - t > STALE_HEARTBEAT]
        with r.pipeline(transaction=False) as p:
            for q in queues:
                # Registry scores are expiry times (RQ's convention); RQ cleans them only when its workers run.
                p.zremrangebyscore(k.rq_finished(q), 0, now)
                p.zremrangebyscore(k.rq_failed(q), 0, now)
                p.zremrangebyscore(k.rq_canceled(q), 0, now)
            if stale:
                p.hdel(k.heartbeats(), *stale)
            p.execute()
        # The run indexes keep no run older than the oldest kept (DROP_RUNS takes a dropped run out of them too).
        self.run_index.trim(history.oldest_run(r, k) or now - self.settings.retention)


def next_gap(took: float) -> float:
    """Seconds from a settle step that took `took` seconds to the next one of the same pass: a pass takes at most
    SETTLE_DUTY of its worker's loop, and waits no longer than SETTLE_STEP_EVERY."""
    return min(SETTLE_STEP_EVERY, max(SETTLE_STEP_SOON, took * (1 - SETTLE_DUTY) / SETTLE_DUTY))


def lost_claims(r: Redis, keys: Keys, worker: str, known: set[str]) -> list[Claimed]:
    """What a worker's inflight list holds that the worker does not know of: a CLAIM whose reply was lost.

    Entries whose execution is no longer running under the worker are stale and removed.
    """
    inflight, found, stale = keys.worker_inflight(worker), [], []
    for xid in [to_str(x) for x in r.lrange(inflight, 0, -1)]:
        if xid in known:
            continue
        fields = to_str_dict(r.hgetall(keys.execution(xid)))
        if fields.get(Exec.status) == Status.running and fields.get(Exec.worker) == worker:
            found.append(load_claimed(r, keys, xid, fields))
        else:
            stale.append(xid)
    if stale:
        LEAVE_INFLIGHT.bind(inflight=inflight, all_or_nothing="", ids=stale).run(link_for(r))
    return found
