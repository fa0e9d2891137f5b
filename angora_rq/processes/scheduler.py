"""The scheduler: sends each schedule's message on its ticks, exactly once, however many schedulers run.

"Schedule the message, not the job": a tick is a root message on the bus, like `angora send`.

- Leadership: a lease `keys.scheduler_lease()` = "<holder> <token>", taken with SET NX PX (TTL 3 s) and renewed
  every second; the token comes from INCR `keys.scheduler_fence()` at acquisition, so each term has its own.
- Time is Redis' (TIME, store/clock.py), read at each step: a host whose clock is off neither sends a tick early
  nor late (tick.lua also refuses a tick later than Redis' clock).
- Sending a tick is ONE Lua call (store/lua/tick.lua) that checks the lease still holds this holder's token and that
  the tick is newer than the schedule's last one (`keys.schedule(name)` field `last`), then runs bus's SEND (tick.lua
  includes send.lua: same fields, counters and budgets) and records the tick. A stale leader (paused,
  partitioned, lease expired) cannot send; a tick cannot be sent twice. A tick refused by a budget is skipped and
  recorded with the reason (`angora schedules`, the API, the Schedules page). Which ticks are due is decided by the pure
  `ticks` module.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional, Sequence

from angora_rq.store.connection import UNREACHABLE, Redis, RedisError
from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, fingerprint, new_run_id
from angora_rq.core.model import Config, ScheduleDef
from angora_rq.store.clock import redis_now
from angora_rq.store.events import OUTBOX_CAP
from angora_rq.store.link import link_for
from angora_rq.store.pressure import Pressure
from angora_rq.store.scripts import ACQUIRE, RENEW, RESIGN, TICK, field_pairs
from angora_rq.core.settings import Settings
from angora_rq.store.state import host_of
from angora_rq.core.ticks import GRACE, baseline, due_ticks, from_ms, from_ts, missed_count, next_fire, prev_fire, to_ms

__all__ = ["Scheduler", "next_fire", "prev_fire", "due_ticks"]

log = logging.getLogger(__name__)
LEASE_TTL = 3.0
RENEW_EVERY = 1.0

@dataclass
class Lease:
    """This process's term as leader."""

    token: int
    value: str  # "<holder> <token>", what the lease key holds while the term lasts
    renewed: float  # time.monotonic() of the last successful acquire/renew


class Scheduler:
    """One scheduler process: `step()` keeps the lease and sends what is due; `run()` loops until stopped."""

    def __init__(self, r: Redis, keys: Keys, settings: Settings, config: Callable[[], Config],
                 name: Optional[str] = None, ttl: float = LEASE_TTL, renew_every: float = RENEW_EVERY,
                 grace: float = GRACE) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.config = config
        self.name = name or f"{host_of(settings)}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        self.ttl = ttl
        self.renew_every = renew_every
        self.grace = grace
        self.lease: Optional[Lease] = None
        self.pressure = Pressure(r, keys, settings)
        self.sent = 0
        self._last_lease_check = float("-inf")
        self._offset = 0.0  # Redis' clock minus ours, as last read
        self._stop = threading.Event()

    @property
    def is_leader(self) -> bool:
        """True while this process holds an unexpired lease (as far as it can tell locally)."""
        return self.lease is not None and time.monotonic() - self.lease.renewed < self.ttl

    # -- loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Loop over step() until stop(); give the lease up on the way out."""
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except UNREACHABLE as e:
                    log.warning("scheduler %s: Redis connection lost (%s); retrying", self.name, e)
                    self.lease = None
                    self._stop.wait(1.0)
                    continue
                except Exception:
                    log.exception("scheduler %s: step failed; trying again", self.name)
                    self._stop.wait(1.0)
                    continue
                self._stop.wait(self._sleep_for(time.time() + self._offset))
        finally:
            self.resign()
            try:
                self.r.hdel(self.keys.heartbeats(), f"scheduler:{self.name}")
            except RedisError:
                pass

    def stop(self, *_: Any) -> None:
        """Ask run() to return."""
        self._stop.set()

    def step(self, now: Optional[float] = None) -> int:
        """Keep (or try to take) the lease; as leader, send every due tick. Returns messages sent."""
        if now is None:
            local = time.time()
            now = redis_now(link_for(self.r))
            self._offset = now - local
        self._keep_lease(now)
        if not self.is_leader:
            return 0
        schedules = self.config().schedules
        if not schedules:
            return 0
        lasts = self._lasts(schedules)
        sent = 0
        for s in schedules:
            sent += self._fire(s, lasts.get(s.name), now)
            if not self.is_leader:
                break
        self.sent += sent
        return sent

    def resign(self) -> None:
        """Give the lease up now (clean stop), so another scheduler takes over at once."""
        if self.lease is not None:
            try:
                RESIGN.bind(lease=self.keys.scheduler_lease(), value=self.lease.value).run(link_for(self.r))
            except RedisError:
                pass
            self.lease = None

    # -- the lease --------------------------------------------------------------------------------
    def _keep_lease(self, now: float) -> None:
        mono = time.monotonic()
        if self.lease is not None and mono - self.lease.renewed < self.renew_every:
            return
        if self.lease is None and mono - self._last_lease_check < self.renew_every / 2:
            return
        self._last_lease_check = mono
        ttl_ms = int(self.ttl * 1000)
        self.r.hset(self.keys.heartbeats(), f"scheduler:{self.name}", repr(now))
        if self.lease is not None:
            renew = RENEW.bind(lease=self.keys.scheduler_lease(), value=self.lease.value, ttl_ms=ttl_ms)
            if renew.run(link_for(self.r)):
                self.lease.renewed = mono
                return
            log.warning("scheduler %s: lost the lease (token %d)", self.name, self.lease.token)
            self.lease = None
        token = int(ACQUIRE.bind(lease=self.keys.scheduler_lease(), fence=self.keys.scheduler_fence(), holder=self.name,
                                 ttl_ms=ttl_ms).run(link_for(self.r)))
        if token:
            self.lease = Lease(token, f"{self.name} {token}", mono)
            log.info("scheduler %s: leader now (fencing token %d)", self.name, token)

    def _fenced_out(self) -> None:
        log.warning("scheduler %s: fenced out (another scheduler leads); stepping down", self.name)
        self.lease = None

    # -- ticks ------------------------------------------------------------------------------------
    def _lasts(self, schedules: Sequence[ScheduleDef]) -> dict[str, Optional[datetime]]:
        with self.r.pipeline(transaction=False) as p:
            for s in schedules:
                p.hget(self.keys.schedule(s.name), "last")
            replies = p.execute()
        return {s.name: (from_ms(int(v)) if v else None) for s, v in zip(schedules, replies)}

    def _fire(self, s: ScheduleDef, last: Optional[datetime], now: float) -> int:
        """Send the ticks of one schedule that are due; a schedule seen for the first time starts from now."""
        at = from_ts(now)
        if last is None:
            self.send_tick(s, baseline(s, at), now, mode="mark")
            return 0
        sent = 0
        for tick in due_ticks(s, last, at, self.grace):
            covers = missed_count(s, last, tick) if (at - tick).total_seconds() > self.grace else 1
            outcome, detail = self.send_tick(s, tick, now, covers=covers)
            if outcome in ("fenced", "early"):
                return sent
            if outcome == "sent":
                sent += 1
            elif outcome == "overlap":
                log.info("schedule %s: tick %s skipped, run %s still active", s.name, tick.isoformat(), detail)
            elif outcome == "budget":
                log.warning("schedule %s: tick %s skipped, a budget is used up: %s", s.name, tick.isoformat(), detail)
        return sent

    def send_tick(self, s: ScheduleDef, tick: datetime, now: float, mode: str = "send",
                  covers: int = 1) -> tuple[str, str]:
        """One fenced Lua call: send the schedule's message for `tick` (or, mode 'mark', only record it)."""
        if not self.is_leader:
            return "fenced", ""
        assert self.lease is not None
        msg = Message.create(s.message, s.params, new_run_id(), origin=f"schedule:{s.name}", now=now)
        k, budget, tick_ms = self.keys, self.pressure.budget(), to_ms(tick)
        reply = TICK.bind(
            stream=k.stream(), run=k.run(msg.run_id), runs=k.runs(), work=k.work(), accepted=k.accepted(),
            idem=k.tick_idempotency(s.name, tick_ms), unsettled=k.runs_unsettled(), lease=k.scheduler_lease(),
            schedule=k.schedule(s.name), events=k.events(), outbox=k.webhook_outbox(), events_on=k.events_on(),
            outbox_cap=OUTBOX_CAP,
            budget=budget.work, accepted_cap=budget.accepted_cap, now=repr(now), run_id=msg.run_id, topic=msg.topic,
            origin=msg.origin, idem_ttl=int(self.settings.idempotency_ttl), fingerprint=fingerprint(msg),
            fresh="1" if msg.new_run else "0",
            lease_value=self.lease.value, tick_ms=tick_ms, token=self.lease.token, run_prefix=k.run(""),
            overlap=s.overlap, mode=mode, schedule_name=s.name, covers=covers, fields=field_pairs(msg.to_fields()),
        ).run(link_for(self.r))
        outcome, detail = (to_str(x) for x in reply)
        if outcome == "fenced":
            self._fenced_out()
        elif outcome == "sent":
            log.info("schedule %s: sent %s for tick %s (run %s)", s.name, s.message, tick.isoformat(), msg.run_id)
        elif outcome == "replayed":
            log.warning("schedule %s: tick %s was sent before (entry %s); not sent again", s.name, tick.isoformat(),
                        detail)
        return outcome, detail

    def _sleep_for(self, now: float) -> float:
        """Until the next tick or lease renewal, whichever is first (at most renew_every)."""
        wait = self.renew_every if self.is_leader else self.renew_every / 2
        if self.is_leader:
            try:
                soonest = min((next_fire(s, from_ts(now)).timestamp() for s in self.config().schedules),
                              default=now + wait)
            except ValueError:
                soonest = now + wait
            wait = min(wait, soonest - now)
        return max(0.005, wait)
