"""A worker's lease and membership: its `alive` key (TTL `worker_ttl`), its place in the workers set, and RQ's
record of it (rq-dashboard, `rq info`), from registration to the last beat.

The loop beats every `heartbeat_every` (`beat`); a thread of its own beats whenever the loop is late with it (a pass
slowed by a big janitor chore, a starved CPU), so a live worker is not taken for lost and its executions run twice,
but not for a loop stuck LOOP_STUCK TTLs: its lease then lapses, as a dead worker's does.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Sequence

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.rqcompat import utc_iso
from angora_rq.core.schema import RqWorker
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import Janitor
from angora_rq.processes.selffence import SelfFence
from angora_rq.store import rqworker
from angora_rq.store.connection import Pipeline, Redis, RedisError

log = logging.getLogger(__name__)
# Of the heartbeat's TTL, what is not counted on when deciding that no janitor can have taken this worker's
# executions (the beat's transit, a clock that drifts): past it, records are written only after a check.
ALIVE_MARGIN = 0.4  # of the TTL: 2 s of the default 5 s
# The heartbeat thread stands in for a loop that is late with its beat (a slow pass, a starved CPU), but not for
# one stuck this many TTLs (30 s of the default 5 s): then the lease lapses and a janitor replays what it holds.
LOOP_STUCK = 6


class Lease:
    """Worker `name`'s lease. `busy()`: whether it runs a command (an idle one shows `idle` to RQ with its beat);
    `taken()`: called when a beat finds that a janitor took the worker for dead meanwhile (it replayed what the
    worker held: each of those ends must be written only if its execution is still the worker's)."""

    def __init__(self, r: Redis, keys: Keys, settings: Settings, name: str, queues: Sequence[str], fence: SelfFence,
                 janitor: Janitor, busy: Callable[[], bool], taken: Callable[[], None]) -> None:
        self.r, self.keys, self.settings, self.name = r, keys, settings, name
        self.tally = rqworker.Tally()  # RQ's counters of the worker, written with each beat
        self.rq_queues = [keys.rq_name(q) for q in queues]  # the names RQ knows the worker's queues by
        self.fence, self.janitor, self.busy, self.taken = fence, janitor, busy, taken
        self.needs_register = True
        self.loop_at = time.monotonic()  # when the worker's loop last began a step (the thread's stuck check)
        self._lock = threading.Lock()  # one beat at a time; no beat lands after unregister
        self._sent = 0.0  # when the last beat that Redis acknowledged was sent, by anyone (time.monotonic())
        self._until = 0.0  # monotonic time until which the alive key surely exists
        self._beaten = False  # a beat has been acknowledged since start
        self._rq_registered = False  # RQ's record of this worker was written (store/rqworker.py)
        self._rq_state = ""  # the state last written to RQ's worker hash
        self._quit = threading.Event()

    # -- membership -------------------------------------------------------------------------------
    def register(self) -> None:
        """Hand anything an earlier process of this name left claimed to the janitor, then register with RQ."""
        self.r.delete(self.keys.worker_alive(self.name))
        self.janitor.reap_worker(self.name)
        self.needs_register = False
        try:
            address = rqworker.client_address(self.r, self.name)
            with self.r.pipeline() as p:
                rqworker.birth(p, self.name, self.rq_queues, self.settings.worker_ttl, address, time.time())
                self._rq_state = ""  # birth writes a fresh hash: the state goes with it
                self.show(busy=False, pipe=p)
                p.execute()
            self._rq_registered = True
        except Exception as e:  # rq-dashboard visibility only; never fatal
            log.warning("worker %s: could not register with RQ: %s", self.name, e)
            self._rq_registered = False
            self._rq_state = ""

    def unregister(self) -> None:
        """Leave: the alive key goes, and the janitor step for this worker replays whatever its inflight list
        still holds (nothing, normally) and removes its name."""
        try:
            with self._lock, self.r.pipeline() as p:  # no beat of the thread lands after this
                p.delete(self.keys.worker_alive(self.name))
                p.hdel(self.keys.heartbeats(), f"worker:{self.name}")
                p.execute()
            self.janitor.reap_worker(self.name)
            if self._rq_registered:
                with self.r.pipeline() as p:
                    self.tally.write(p, self.name)  # what it finished since its last beat
                    rqworker.death(p, self.name, self.rq_queues, time.time())
                    p.execute()
        except RedisError as e:
            log.warning("worker %s: could not unregister (the janitor will once the heartbeat expires): %s",
                        self.name, e)

    def show(self, busy: bool, pipe: Optional[Pipeline] = None) -> None:
        """RQ's worker state: `busy` as soon as a command starts, `idle` (written by a beat) once none runs.
        Written only when it changes: a worker that stays busy pays nothing."""
        state = "busy" if busy else "idle"
        if state != self._rq_state:
            self._rq_state = state
            (pipe if pipe is not None else self.r).hset(K.rq_worker(self.name), RqWorker.state, state)

    # -- beats ------------------------------------------------------------------------------------
    def sure(self) -> bool:
        """True while the alive key surely exists, so no janitor can have taken the worker's executions."""
        return time.monotonic() < self._until

    def beat(self, now: float) -> None:
        """Renew the lease; notice when a janitor took the worker for dead meanwhile."""
        with self._lock:
            self._beat(now)

    def start(self) -> None:
        threading.Thread(target=self._run, name="angora-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._quit.set()

    def _beat(self, now: float) -> None:
        sent = time.monotonic()
        with self.r.pipeline() as p:
            p.set(self.keys.worker_alive(self.name), 1, px=int(self.settings.worker_ttl * 1000))
            p.sadd(self.keys.workers(), self.name)
            p.hset(self.keys.heartbeats(), f"worker:{self.name}", repr(now))
            p.expire(K.rq_worker(self.name), int(self.settings.worker_ttl) + 60)
            p.hset(K.rq_worker(self.name), "last_heartbeat", utc_iso(now))
            counted = self.tally.write(p, self.name)
            if not self.busy():
                self.show(busy=False, pipe=p)
            try:
                added = p.execute()[1]
            except BaseException:
                self.tally.add(*counted)  # written with the next beat
                raise
        self._sent = max(self._sent, sent)
        if added and self._beaten:
            # Only a janitor removes a live worker's name: it has replayed what this worker held.
            log.warning("worker %s: taken for dead while Redis was out of reach; its executions were replayed",
                        self.name)
            self.taken()
        self._until = max(self._until, sent + self.settings.worker_ttl * (1 - ALIVE_MARGIN))
        self.fence.renewed(sent)
        self._beaten = True

    def _run(self) -> None:
        """The thread: beat whenever the loop is late with it, unless the loop is stuck."""
        every, stuck = self.settings.heartbeat_every, self.settings.worker_ttl * LOOP_STUCK
        while not self._quit.wait(every / 4):
            late = time.monotonic() - self._sent >= every
            if not late or not self._beaten or time.monotonic() - self.loop_at > stuck:
                continue
            try:
                with self._lock:
                    if not self._quit.is_set():
                        self._beat(time.time())
            except Exception as e:  # never let the thread die; the loop notices an outage itself
                log.debug("worker %s: heartbeat thread: %s", self.name, e)
